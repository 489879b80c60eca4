"""DER: who spoke when, on 10 ms frames, with the best one-to-one speaker mapping."""

import itertools
import json

import numpy as np
import pytest

from speakerlm_hf.formats import write_transcript
from speakerlm_hf.metrics import diarization_error, diarization_errors, load_sessions, read_rttm
from speakerlm_hf.metrics.cli import main


def turns(*items):
    return [{"speaker": speaker, "text": "", "start": start, "end": end} for speaker, start, end in items]


def seconds(counts):
    return tuple(
        round(value, 6) for value in (counts.missed, counts.false_alarm, counts.confusion, counts.reference)
    )


def test_missed_speech_false_alarm_and_confusion_under_the_best_mapping():
    # labels do not matter, only who is who
    assert diarization_errors(turns(("A", 0, 2), ("B", 2, 4)), turns(("x", 0, 2), ("y", 2, 4))).rate == 0.0
    # 0-1 nobody answers A (missed), 5-6 x speaks for B (confusion: B is y), 6-7 x alone (false alarm)
    counts = diarization_errors(turns(("A", 0, 4), ("B", 4, 6)), turns(("x", 1, 4), ("y", 4, 5), ("x", 5, 7)))
    assert seconds(counts) == (1.0, 1.0, 1.0, 6.0)
    assert counts.rate == pytest.approx(0.5)
    # overlap: two reference speakers against one voice are one missed and one confused second
    assert seconds(diarization_errors(turns(("A", 0, 2), ("B", 1, 3)), turns(("x", 0, 3)))) == (
        1.0,
        0.0,
        1.0,
        4.0,
    )
    # a speaker's own overlapping turns are one stretch of speech
    assert seconds(diarization_errors(turns(("A", 0, 2), ("A", 1, 3)), turns(("x", 0, 3)))) == (
        0.0,
        0.0,
        0.0,
        3.0,
    )


def test_collar_forgives_boundaries_only():
    reference = turns(("A", 0, 2), ("B", 2, 4))
    late = turns(("x", 0, 2.2), ("y", 2.2, 4))
    assert diarization_errors(reference, late).rate == pytest.approx(0.2 / 4)
    assert diarization_errors(reference, late, collar=0.25).rate == 0.0
    # one voice for both: B's 2.25-3.75 (its edges unscored) is confused
    assert diarization_errors(reference, turns(("x", 0, 4)), collar=0.25).confusion == pytest.approx(1.5)
    with pytest.raises(ValueError, match="collar"):
        diarization_errors(reference, late, collar=-1)


def test_mapping_is_the_best_of_all_pairings():
    rng = np.random.default_rng(0)
    for _ in range(20):
        reference = turns(
            *((f"r{rng.integers(3)}", s, s + rng.uniform(0.5, 3)) for s in rng.uniform(0, 20, 8))
        )
        hypothesis = turns(
            *((f"h{rng.integers(4)}", s, s + rng.uniform(0.5, 3)) for s in rng.uniform(0, 20, 9))
        )
        counts = diarization_errors(reference, hypothesis)
        ref_speakers = sorted({t["speaker"] for t in reference})
        hyp_speakers = sorted({t["speaker"] for t in hypothesis})

        def active(items, speaker):
            mask = np.zeros(2400, bool)
            for t in items:
                if t["speaker"] == speaker:
                    mask[round(t["start"] * 100) : round(t["end"] * 100)] = True
            return mask

        ref = {s: active(reference, s) for s in ref_speakers}
        hyp = {s: active(hypothesis, s) for s in hyp_speakers}
        # brute force over injective pairings (a reference speaker may stay unpaired)
        best = 0
        for chosen in itertools.permutations(hyp_speakers + [None] * len(ref_speakers), len(ref_speakers)):
            best = max(
                best,
                sum(int((ref[r] & hyp[h]).sum()) for r, h in zip(ref_speakers, chosen, strict=True) if h),
            )
        ref_count = sum(ref.values()).astype(int)
        hyp_count = sum(hyp.values()).astype(int)
        confusion = (np.minimum(ref_count, hyp_count).sum() - best) / 100
        assert counts.confusion == pytest.approx(confusion)
        assert counts.missed == pytest.approx(np.maximum(ref_count - hyp_count, 0).sum() / 100)


def test_sessions_pool_times_and_bad_times_are_named():
    reference = {"a": turns(("A", 0, 4)), "b": turns(("A", 0, 2), ("B", 2, 4))}
    hypothesis = {"a": turns(("x", 0, 2)), "b": turns(("x", 0, 4))}
    report = diarization_error(reference, hypothesis)
    assert report.total.rate == pytest.approx((2 + 2) / 8)
    assert report.sessions["a"].rate == pytest.approx(0.5)
    assert "DER %" in report.format_table(per_session=True)
    # a missing hypothesis is all missed speech; an unknown one is an error unless partial
    with pytest.warns(UserWarning, match="1 of 2 reference session.*'b'.*empty"):
        partly = diarization_error(reference, {"a": hypothesis["a"]}, max_missing_ratio=0.5)
    assert partly.sessions["b"].missed == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no hypothesis.*more than 10%"):
        diarization_error(reference, {"a": hypothesis["a"]})
    with pytest.raises(ValueError, match="not in the reference"):
        diarization_error(reference, {**hypothesis, "c": []})
    with pytest.raises(ValueError, match="session 'a'.*start and end"):
        diarization_error(reference, {**hypothesis, "a": [{"speaker": "x", "text": "hi"}]})
    with pytest.raises(ValueError, match="invalid times"):
        diarization_errors(turns(("A", 2, 1)), [])


def test_rttm_written_by_the_cli_reads_back_and_scores(tmp_path, capsys):
    hypothesis = turns(("spk0", 0.5, 2.0), ("spk1", 2.1, 4.0))
    rttm = write_transcript(hypothesis, tmp_path / "meeting.rttm", "rttm")
    sessions = read_rttm(rttm)
    assert list(sessions) == ["meeting"]
    assert [(t.speaker, t.start, t.end, t.text) for t in sessions["meeting"]] == [
        ("spk0", 0.5, 2.0, ""),
        ("spk1", 2.1, 4.0, ""),
    ]
    assert load_sessions(rttm)["meeting"] == sessions["meeting"]
    reference = tmp_path / "meeting.json"
    reference.write_text(json.dumps(turns(("Ann", 0.0, 2.0), ("Bo", 2.0, 4.0))))
    output = tmp_path / "der.json"
    assert (
        main(["score", "--mode", "der", "--ref", str(reference), "--hyp", str(rttm), "--output", str(output)])
        == 0
    )
    assert "collar 0 s" in capsys.readouterr().out
    summary = json.loads(output.read_text())["summary"]
    assert summary["der"] == pytest.approx(0.6 / 4.0)
    # with a 0.25 s collar only 0.25-0.5 s of Ann's 3 scored seconds is missed
    arguments = ["--collar", "0.25", "--ref", str(reference), "--hyp", str(rttm), "--output", str(output)]
    assert main(["score", "--mode", "der", *arguments]) == 0
    assert json.loads(output.read_text())["summary"]["der"] == pytest.approx(0.25 / 3.0)
    broken = tmp_path / "broken.rttm"
    broken.write_text("SPEAKER meeting 1 zero 1.0 <NA> <NA> spk0 <NA> <NA>\n")
    with pytest.raises(ValueError, match="broken.rttm:1"):
        read_rttm(broken)
