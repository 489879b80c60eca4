"""Property tests: our cpCER / tcpCER equal meeteval's cpWER / tcpWER on character-split text.

meeteval gets the same turns with each scored character (``scoring_characters``) as a word,
so its word errors are our character errors. Sessions have up to 8 speakers on each side,
Chinese, English or mixed text with punctuation and full-width forms, missing and extra
speakers, dropped turns and empty hypotheses.
"""

import logging
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speakerlm_hf.metrics import cp_cer, sa_cer, score_sessions, scoring_characters, speaker_texts, tcp_cer

meeteval = pytest.importorskip("meeteval")
from meeteval.io import SegLST  # noqa: E402

ALPHABETS = {
    "zh": "你好世界今天开会我们是的谢大家一二三，。！？、　",
    "en": "abcdeABCDE   ,.!?'",
    "mixed": "你好世界开会abcABCＡＢｃ１2 ，,。.",
}
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True)
def _quiet_meeteval():
    # meeteval logs and warns about collars and self-overlap; the numbers are what we test.
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


@st.composite
def sessions(draw, timed: bool):
    """(reference turns, hypothesis turns) of one session."""
    alphabet = ALPHABETS[draw(st.sampled_from(sorted(ALPHABETS)))]
    texts = st.text(alphabet=alphabet, max_size=10)
    n_ref = draw(st.integers(0, 8))
    n_hyp = draw(st.integers(0, 8))
    reference = [
        {"speaker": f"R{speaker}", "text": draw(texts)}
        for speaker in range(n_ref)
        for _ in range(draw(st.integers(1, 3)))
    ]
    hypothesis = []
    if n_hyp:
        for ref_turn in reference:
            if draw(st.booleans()) or draw(st.booleans()):  # keep three turns in four
                text = ref_turn["text"] if draw(st.booleans()) else draw(texts)
                hypothesis.append({"speaker": f"H{draw(st.integers(0, n_hyp - 1))}", "text": text})
        for _ in range(draw(st.integers(0, 3))):
            hypothesis.append({"speaker": f"H{draw(st.integers(0, n_hyp - 1))}", "text": draw(texts)})
    if timed:
        for side in (reference, hypothesis):
            _lay_out(draw, side)
    elif draw(st.booleans()):
        # Start times on every turn: both sides sort by them (ties keep list order).
        for item in reference + hypothesis:
            start = draw(st.integers(0, 20)) / 2
            item.update(start=start, end=start + 1)
    return reference, hypothesis


def _lay_out(draw, turns):
    """Times without self-overlap: each speaker's turns follow one another."""
    clock = {}
    for item in turns:
        start = clock.get(item["speaker"], 0.0) + draw(st.integers(0, 40)) / 4
        end = start + draw(st.integers(1, 40)) / 4
        clock[item["speaker"]] = end
        item.update(start=start, end=end)


def to_seglst(turns, session_id="s"):
    segments = []
    for item in turns:
        segment = {
            "session_id": session_id,
            "speaker": item["speaker"],
            "words": " ".join(scoring_characters(item["text"])),
        }
        if "start" in item:
            segment.update(start_time=item["start"], end_time=item["end"])
        segments.append(segment)
    return SegLST(segments)


def assert_same_counts(ours, theirs, reference, hypothesis):
    assert (ours.errors, ours.reference_length) == (theirs.errors, theirs.length)
    assert ours.insertions - ours.deletions == theirs.insertions - theirs.deletions
    assert (ours.rate is None) == (theirs.error_rate is None)
    if ours.rate is not None:
        assert ours.rate == pytest.approx(theirs.error_rate)
    turns_with_speech = speaker_texts(reference).keys() | speaker_texts(hypothesis).keys()
    labels = {item["speaker"] for item in reference + hypothesis}
    if turns_with_speech == labels:
        # Same cost matrix, same assignment; we report the alignment with the most substitutions.
        assert ours.substitutions >= theirs.substitutions
        assert ours.missed_speakers == theirs.missed_speaker
        assert ours.false_alarm_speakers == theirs.falarm_speaker


@PROPERTY_SETTINGS
@given(session=sessions(timed=False), backend=st.sampled_from(["rapidfuzz", "numpy"]))
def test_cp_cer_equals_meeteval_cpwer(session, backend):
    reference, hypothesis = session
    ours = cp_cer(reference, hypothesis, backend=backend)
    theirs = meeteval.wer.cp_word_error_rate(to_seglst(reference), to_seglst(hypothesis))
    assert_same_counts(ours, theirs, reference, hypothesis)
    # saCER fixes one pairing, so it can only be worse than the best one.
    assert sa_cer(reference, hypothesis, backend=backend).errors >= ours.errors


@PROPERTY_SETTINGS
@given(session=sessions(timed=True), collar=st.sampled_from([0.25, 1.0, 2.0, 5.0]))
def test_tcp_cer_equals_meeteval_tcpwer(session, collar):
    reference, hypothesis = session
    ours = tcp_cer(reference, hypothesis, collar=collar)
    theirs = meeteval.wer.time_constrained_minimum_permutation_word_error_rate(
        to_seglst(reference), to_seglst(hypothesis), collar=collar
    )
    assert_same_counts(ours, theirs, reference, hypothesis)
    assert ours.errors >= cp_cer(reference, hypothesis).errors


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(sessions(timed=False), min_size=1, max_size=5))
def test_pooled_cp_cer_equals_meeteval(batch):
    # A silent turn on each side keeps every session present in meeteval's SegLST.
    reference = {f"s{k}": ref + [{"speaker": "R0", "text": ""}] for k, (ref, _) in enumerate(batch)}
    hypothesis = {f"s{k}": hyp + [{"speaker": "H0", "text": ""}] for k, (_, hyp) in enumerate(batch)}
    theirs = meeteval.wer.combine_error_rates(
        *meeteval.wer.cp_word_error_rate_multifile(
            SegLST([s for k, turns in reference.items() for s in to_seglst(turns, k)]),
            SegLST([s for k, turns in hypothesis.items() for s in to_seglst(turns, k)]),
        ).values()
    )
    report = score_sessions(reference, hypothesis)
    assert (report.attributed.errors, report.attributed.reference_length) == (theirs.errors, theirs.length)
    assert (report.attributed.rate is None) == (theirs.error_rate is None)


def test_empty_hypothesis_and_reference_like_meeteval():
    reference = [{"speaker": "A", "text": "你好世界"}, {"speaker": "B", "text": "hello"}]
    for ref, hyp in ((reference, []), ([], reference), ([], [])):
        ours = cp_cer(ref, hyp)
        theirs = meeteval.wer.cp_word_error_rate(to_seglst(ref), to_seglst(hyp))
        assert (ours.errors, ours.reference_length) == (theirs.errors, theirs.length)
        assert ours.rate == theirs.error_rate
