"""Joint CTC / attention decoding (`CTCPrefixScorer`) and speaker labels chosen by voice."""

import itertools

import numpy as np
import pytest
import torch
from transformers import pipeline

from speakerlm_hf import hub
from speakerlm_hf.generation_speakerlm import (
    DEFAULT_CTC_WEIGHT,
    CTCPrefixScorer,
    SpeakerLabelConstraint,
    aligned_lines,
    ctc_alignment,
    read_transcript,
    resolve_ctc_weight,
    token_bytes,
    transcript_logits_processors,
)
from speakerlm_hf.pipeline_speakerlm import TASK, place_turns
from speakerlm_hf.testing_utils import tiny_speakerlm, tiny_tokenizer, tone_voice

NEG = -30.0


class Letters:
    """A three-letter vocabulary and a blank, all plain text (no labels)."""

    line_breaks: list = []
    stops: list = []
    pieces = [b"a", b"b", b"c", None]


def collapse(path, blank):
    out, previous = [], None
    for token in path:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return tuple(out)


def test_prefix_and_complete_probabilities_are_exact():
    torch.manual_seed(0)
    frames, vocabulary, blank = 5, 4, 3
    log_probs = torch.randn(1, frames, vocabulary).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([frames]), blank, Letters(), 0, roles=False)
    prefix_mass, exact_mass = {}, {}
    for path in itertools.product(range(vocabulary), repeat=frames):
        p = float(sum(log_probs[0, t, s] for t, s in enumerate(path)).exp())
        out = collapse(path, blank)
        exact_mass[out] = exact_mass.get(out, 0.0) + p
        for k in range(len(out) + 1):
            prefix_mass[out[:k]] = prefix_mass.get(out[:k], 0.0) + p
    for prefix in [(), (0,), (0, 0), (0, 1), (1, 2, 1), (2, 2), (0, 1, 2, 0, 1)]:
        state, log_prefix = scorer.state(0, prefix)
        assert float(log_prefix.exp()) == pytest.approx(prefix_mass.get(prefix, 0.0), rel=1e-4, abs=1e-9)
        complete = float(scorer.complete(0, state).exp())
        assert complete == pytest.approx(exact_mass.get(prefix, 0.0), rel=1e-4, abs=1e-9)
        if prefix:  # the same number torch's CTC loss gives
            loss = torch.nn.functional.ctc_loss(
                log_probs.transpose(0, 1),
                torch.tensor([prefix]),
                torch.tensor([frames]),
                torch.tensor([len(prefix)]),
                blank=blank,
                reduction="sum",
            )
            assert complete == pytest.approx(float((-loss).exp()), rel=1e-4)


def test_prefix_scores_of_a_long_recording_match_ctc_loss():
    """Over hundreds of audio tokens (a 50 s meeting has about 420), where the forward variables'
    log-probabilities run into the thousands, the prefix scores still equal torch's CTC loss."""
    torch.manual_seed(1)
    frames, vocabulary, blank = 420, 40, 0
    log_probs = (torch.randn(1, frames, vocabulary) * 3).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([frames]), blank, Letters(), 0, roles=False)
    target = tuple(int(t) for t in torch.randint(1, vocabulary, (150,)))
    state, _ = scorer.state(0, target)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1).double(),
        torch.tensor([target]),
        torch.tensor([frames]),
        torch.tensor([len(target)]),
        blank=blank,
        reduction="sum",
    )
    assert float(scorer.complete(0, state)) == pytest.approx(-float(loss), rel=1e-5)


def emission_spans(path, blank):
    """(first, last) frame of each token a CTC path emits."""
    spans, previous = [], None
    for t, token in enumerate(path):
        if token != blank and token == previous:
            spans[-1][1] = t
        elif token != blank:
            spans.append([t, t])
        previous = token
    return [tuple(span) for span in spans]


def test_forced_alignment_is_the_most_likely_path_that_spells_the_text():
    torch.manual_seed(2)
    frames, vocabulary, blank = 6, 4, 3
    log_probs = (torch.randn(frames, vocabulary) * 2).log_softmax(-1)
    for target in [(0,), (0, 1), (0, 0), (1, 2, 1), (2, 2, 0)]:
        paths = [
            path
            for path in itertools.product(range(vocabulary), repeat=frames)
            if collapse(path, blank) == target
        ]
        best = max(paths, key=lambda path: float(sum(log_probs[t, s] for t, s in enumerate(path))))
        assert ctc_alignment(log_probs, target, blank) == emission_spans(best, blank), target
    assert ctc_alignment(log_probs, (), blank) == []
    # three repeats need a blank between each: five frames, not four
    assert ctc_alignment(log_probs[:4], (1, 1, 1), blank) is None
    assert ctc_alignment(log_probs[:5], (1, 1, 1), blank) == [(0, 0), (2, 2), (4, 4)]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def ids_of(tokenizer, *pieces):
    return [i for piece in pieces for i in tokenizer(piece, add_special_tokens=False)["input_ids"]]


def test_text_tokens_are_what_follows_each_label(tokenizer):
    pieces = token_bytes(tokenizer)
    line = ids_of(tokenizer, "spk0", ":", " the", " c", "\n", "[1.0-2.0]", " Mike", ":")
    transcript = read_transcript(pieces, line)
    assert transcript.text == ids_of(tokenizer, " the", " c")
    assert transcript.state == "unspoken"
    # each labelled line with the number of text tokens before it
    assert transcript.lines == [(b"spk0:", 0), (b"Mike:", 2)]
    assert read_transcript(pieces, line + ids_of(tokenizer, " the")).state == "text"
    writing = read_transcript(pieces, line + ids_of(tokenizer, "\n", "sp"))
    assert writing.state == "label" and writing.label == b"sp"
    assert read_transcript(pieces, line + ids_of(tokenizer, "\n", "[1.0")).label is None  # a timestamp
    plain = read_transcript(pieces, ids_of(tokenizer, " the", " c"), roles=False)
    assert (plain.text, plain.state) == (ids_of(tokenizer, " the", " c"), "text")


def spelled(tokenizer, frames: list[str | None], sharp: float = 8.0) -> torch.Tensor:
    """CTC log-probabilities hearing one token (or the blank, None) per frame."""
    log_probs = torch.full((1, len(frames), len(tokenizer)), NEG)
    for t, piece in enumerate(frames):
        index = tokenizer.pad_token_id if piece is None else ids_of(tokenizer, piece)[0]
        log_probs[0, t, index] = sharp
    return log_probs.log_softmax(-1)


def test_each_turn_is_placed_where_its_words_are_heard(tokenizer):
    transcript = ids_of(tokenizer, "spk0", ":", " the", " c", "\n", "spk1", ":", " ", " the")
    heard = [None, " the", " the", None, None, " c", None, None, " the", None]
    log_probs = spelled(tokenizer, heard)[0]
    lines = aligned_lines(tokenizer, log_probs, transcript, tokenizer.pad_token_id)
    # the lone space of the second line is heard nowhere in particular
    # each word's first and last audio token come with the line's
    assert lines == [(b"spk0:", 1, 5, ((1, 2), (5, 5))), (b"spk1:", 8, 8, ((8, 8),))]
    # a word spelled in several pieces is one word, from its first piece's frame to its last's
    joined = ids_of(tokenizer, "spk0", ":", " the", "c", " the")
    assert aligned_lines(
        tokenizer, spelled(tokenizer, [" the", None, "c", None, " the"])[0], joined, tokenizer.pad_token_id
    )[0][3] == (
        (0, 2),
        (4, 4),
    )
    # a line without words, and a transcript with more words than audio
    wordless = ids_of(tokenizer, "spk0", ":", "\n", "spk1", ":", " the")
    assert aligned_lines(tokenizer, log_probs, wordless, tokenizer.pad_token_id)[0] is None
    assert aligned_lines(tokenizer, log_probs[:2], transcript, tokenizer.pad_token_id) is None
    turns = [{"speaker": "spk0", "text": "the c"}, {"speaker": "spk1", "text": "the"}]
    assert place_turns(turns, lines, token_seconds=0.5, duration=4.4, padding=0.1)
    assert [(t["start"], t["end"]) for t in turns] == [(0.4, 3.1), (3.9, 4.4)]
    # lines that are not the turns one to one leave them as they are
    other = [{"speaker": "spk0", "text": "the c"}, {"speaker": "Mike", "text": "the"}]
    assert not place_turns(other, lines, 0.5, 4.4) and "start" not in other[0]
    assert not place_turns(other[:1], lines, 0.5, 4.4) and not place_turns(other, None, 0.5, 4.4)
    # the same speaker going on without a pause is one turn; after a pause, another
    continuing = [(b"spk0:", 1, 5), (b"spk0:", 6, 6), (b"spk0:", 9, 9)]
    same = [{"speaker": "spk0", "text": t} for t in ("the c", "the", "c")]
    assert place_turns(same, continuing, token_seconds=0.5, duration=6.0, padding=0.25)
    assert same == [
        {"speaker": "spk0", "text": "the c the", "start": 0.25, "end": 3.75},
        {"speaker": "spk0", "text": "c", "start": 4.25, "end": 5.25},
    ]
    wordless = [{"speaker": "spk0", "text": ""}, {"speaker": "spk1", "text": "the"}]
    assert place_turns(wordless, [None, lines[1]], 0.5, 4.4, padding=0.0)
    assert wordless == [{"speaker": "spk1", "text": "the", "start": 4.0, "end": 4.4}]


def step_scores(scorer, prompt, generated, logits):
    ids = torch.tensor([prompt + generated])
    return scorer(ids, logits.clone()[None])[0]


def test_ctc_outvotes_the_llm_on_a_word_it_did_not_hear(tokenizer):
    the, c = ids_of(tokenizer, " the")[0], ids_of(tokenizer, " c")[0]
    log_probs = spelled(tokenizer, [None, " the", None, None, " c", None])
    prompt = [tokenizer.pad_token_id] * 3
    logits = torch.zeros(len(tokenizer))
    logits[c] = 3.0  # the LLM would write " c" first
    scorer = CTCPrefixScorer(
        log_probs, torch.tensor([6]), tokenizer.pad_token_id, tokenizer, len(prompt), weight=0.7
    )
    label = ids_of(tokenizer, "spk0", ":")
    scores = step_scores(scorer, prompt, label, logits)
    assert int(scores.argmax()) == the
    # nothing but the CTC candidates and the LLM's best survive among text tokens
    assert torch.isfinite(scores).sum() < 40
    # a turn says something: no line break and no end right after its label
    newline = ids_of(tokenizer, "\n")[0]
    assert scores[newline] == -float("inf") and scores[tokenizer.eos_token_id] == -float("inf")
    # once everything heard is written, ending beats any further word
    done = step_scores(scorer, prompt, label + [the, c], torch.zeros(len(tokenizer)))
    assert int(done.argmax()) in scorer.stops and tokenizer.eos_token_id in scorer.stops
    # a plain transcript (the ASR task) is one line of text
    plain_text = CTCPrefixScorer(
        log_probs, torch.tensor([6]), tokenizer.pad_token_id, tokenizer, 3, weight=0.7, roles=False
    )
    words = step_scores(plain_text, prompt, [the], torch.zeros(len(tokenizer)))
    assert words[newline] == -float("inf") and int(words.argmax()) == c
    # weight 0 leaves the LLM's choice
    plain = CTCPrefixScorer(log_probs, torch.tensor([6]), tokenizer.pad_token_id, tokenizer, 3, weight=0.0)
    assert int(step_scores(plain, prompt, label, logits).argmax()) == c


def test_beam_rows_are_scored_against_their_own_recording_and_prefix(tokenizer):
    # beam search lays out the rows of one recording after each other: 2 recordings x 2 beams
    the, c = ids_of(tokenizer, " the")[0], ids_of(tokenizer, " c")[0]
    heard = [spelled(tokenizer, [None, " the", None, " c"]), spelled(tokenizer, [None, " c", None, None])]
    prompt = [tokenizer.pad_token_id] * 3
    label = ids_of(tokenizer, "spk0", ":")
    rows = [label + [the], label + [c], label + [c], label + [the]]  # recording 0, 0, 1, 1
    logits = torch.randn(4, len(tokenizer), generator=torch.Generator().manual_seed(0))

    def scorer(log_probs):
        lengths = torch.tensor([4] * len(log_probs))
        return CTCPrefixScorer(log_probs, lengths, tokenizer.pad_token_id, tokenizer, 3, weight=0.7)

    beams = scorer(torch.cat(heard))(torch.tensor([prompt + row for row in rows]), logits.clone())
    for row, recording in enumerate((0, 0, 1, 1)):
        alone = step_scores(scorer(heard[recording]), prompt, rows[row], logits[row])
        assert torch.equal(beams[row], alone), row
    # each row's next token follows its own recording: " c" after " the" in recording 0, the end in 1
    both = scorer(torch.cat(heard))
    flat = both(torch.tensor([prompt + row for row in rows]), torch.zeros(4, len(tokenizer)))
    assert flat[0, c] == flat[0].max() > flat[0, the]  # (a line break ties with the best word)
    assert int(flat[2].argmax()) in both.stops


def test_a_model_decodes_with_its_own_tuned_ctc_weight(tmp_path):
    model, processor = tiny_speakerlm(speaker_model="campplus", audio_speaker_window=1.0, audio_ctc=True)
    processor.match_model(model.config)
    inputs = processor([tone_voice(2.0, 140.0, 0)])
    model.config.decoding_ctc_weight = 0.55
    model.save_pretrained(tmp_path)
    loaded = type(model.config).from_pretrained(tmp_path)
    assert loaded.decoding_ctc_weight == 0.55
    assert resolve_ctc_weight(loaded, None) == 0.55
    assert resolve_ctc_weight(loaded, 0.3) == 0.3  # a call's own weight wins
    processors = transcript_logits_processors(model, processor.tokenizer, inputs, [[]])
    assert processors[1].weight == pytest.approx(0.55)
    model.config.decoding_ctc_weight = None
    assert (
        transcript_logits_processors(model, processor.tokenizer, inputs, [[]])[1].weight == DEFAULT_CTC_WEIGHT
    )
    config = loaded.to_dict()
    with pytest.raises(ValueError, match="decoding_ctc_weight"):
        type(loaded).from_dict({**config, "decoding_ctc_weight": 1.0})
    with pytest.raises(ValueError, match="audio_ctc"):
        type(loaded).from_dict({**config, "audio_ctc": False})


def voices(frames: int, split: int, size: int = 8) -> torch.Tensor:
    a, b = torch.zeros(size), torch.zeros(size)
    a[0], b[1] = 1.0, 1.0
    return torch.stack([a if t < split else b for t in range(frames)])[None], a, b


# Two turns: " the" in voice a (tokens 1-4), a pause, " c" in voice b (tokens 8-11).
TWO_TURNS = [None] + [" the"] * 4 + [None] * 3 + [" c"] * 4 + [None] * 2
VOICE_A, VOICE_B = torch.eye(8)[0], torch.eye(8)[1]
PROMPT = [0, 0]


def two_turn_scorer(tokenizer, enrolled: list, names: list[str], **options) -> CTCPrefixScorer:
    windows, _, _ = voices(len(TWO_TURNS), 8)
    return CTCPrefixScorer(
        spelled(tokenizer, TWO_TURNS),
        torch.tensor([len(TWO_TURNS)]),
        tokenizer.pad_token_id,
        tokenizer,
        len(PROMPT),
        windows=windows,
        speakers=[torch.stack(enrolled)],
        names=[names],
        window=4,
        **options,
    )


def test_registered_label_follows_the_voice_where_the_next_turn_starts(tokenizer):
    a, b = VOICE_A, VOICE_B
    mike, lucy = ids_of(tokenizer, "Mike")[0], ids_of(tokenizer, "Lucy")[0]
    first_line = ids_of(tokenizer, "Mike", ":", " the", "\n")
    flat = torch.zeros(len(tokenizer))

    def scores(enrolled, generated, weight=1.0):
        scorer = two_turn_scorer(tokenizer, enrolled, ["Mike", "Lucy"], speaker_weight=weight)
        return step_scores(scorer, PROMPT, generated, flat)

    after = scores([a, b], first_line)
    assert after[lucy] > after[mike] + 1.0
    swapped = scores([b, a], first_line)
    assert swapped[mike] > swapped[lucy] + 1.0
    # the first turn is heard in voice a
    start = scores([a, b], [])
    assert start[mike] > start[lucy] + 1.0
    off = scores([a, b], first_line, weight=0.0)
    assert off[lucy] == pytest.approx(float(off[mike]))


def unregistered_scorer(tokenizer, frames: list[str | None], windows: torch.Tensor, **options):
    return CTCPrefixScorer(
        spelled(tokenizer, frames),
        torch.tensor([len(frames)]),
        tokenizer.pad_token_id,
        tokenizer,
        len(PROMPT),
        windows=windows,
        speakers=[torch.zeros(0, windows.shape[-1])],
        names=[[]],
        **options,
    )


def assert_second_label(tokenizer, scorer: CTCPrefixScorer, expected: str):
    """After `spk0: the`, the next line's label is `spk<expected>` by more than 1 nat."""
    flat = torch.zeros(len(tokenizer))
    step_scores(scorer, PROMPT, [], flat)  # the first line begins: its start is recorded
    scores = step_scores(scorer, PROMPT, ids_of(tokenizer, "spk0", ":", " the", "\n", "spk"), flat)
    zero, one = ids_of(tokenizer, "0")[0], ids_of(tokenizer, "1")[0]
    winner, loser = (one, zero) if expected == "1" else (zero, one)
    assert scores[winner] > scores[loser] + 1.0


@pytest.mark.parametrize("next_voice, expected", [("b", "1"), ("a", "0")])
def test_anonymous_label_follows_the_voice_of_earlier_turns(tokenizer, next_voice, expected):
    windows, _, _ = voices(10, 6 if next_voice == "b" else 10)
    frames = [None, " the", " the", None, None, None, " c", " c", None, None]
    assert_second_label(tokenizer, unregistered_scorer(tokenizer, frames, windows), expected)


@pytest.mark.parametrize("cluster_threshold, expected", [(0.5, "1"), (None, "0")])
def test_anonymous_labels_follow_the_recordings_voice_clusters(tokenizer, cluster_threshold, expected):
    """A short first turn whose windows also hear the next speaker (1.5 s windows straddle the turn
    change): by its own voice the next turn, in voice b, sounds like it (cosine 0.70 > 0.5) and
    keeps spk0. Clustering the whole recording finds voices a (with that turn) and b, spk0 takes
    a, and b, which no label has yet, is a new speaker."""
    a, b = VOICE_A, VOICE_B
    blend = torch.nn.functional.normalize(a + 0.98 * b, dim=0)
    frames = [None, " the", " the", None] + [" c"] * 4 + [None] + [" the"] * 4 + [None, None]
    windows = torch.stack([blend] * 4 + [b] * 5 + [a] * 6)[None]
    scorer = unregistered_scorer(tokenizer, frames, windows, window=4, cluster_threshold=cluster_threshold)
    if cluster_threshold is not None:
        centroids = scorer.clusters[0]
        assert centroids.shape == (2, 8) and float(centroids[0] @ a) > 0.9 and float(centroids[1] @ b) > 0.99
    assert_second_label(tokenizer, scorer, expected)


def test_decoding_guides_and_pipeline_with_joint_decoding():
    model, processor = tiny_speakerlm(speaker_model="campplus", audio_speaker_window=1.0, audio_ctc=True)
    processor.match_model(model.config)
    audio = tone_voice(3.0, 140.0, 0)
    inputs = processor([audio], speakers={"Mike": tone_voice(2.0, 120.0, 1)})
    guides = model.decoding_guides(**inputs)
    assert guides["log_probs"].shape[:2] == guides["windows"].shape[:2]
    assert torch.allclose(guides["log_probs"].exp().sum(-1), torch.ones(1, guides["log_probs"].shape[1]))
    assert [s.shape for s in guides["speakers"]] == [(1, 16)]
    processors = transcript_logits_processors(model, processor.tokenizer, inputs, [["Mike"]])
    assert [type(p) for p in processors] == [SpeakerLabelConstraint, CTCPrefixScorer]
    assert processors[1].weight == pytest.approx(DEFAULT_CTC_WEIGHT)
    hub.register_auto_classes()
    sdr = pipeline(TASK, model=model, processor=processor)
    for kwargs in ({}, {"ctc_weight": 0.0}, {"speaker_weight": 0.0}):
        out = sdr(audio, speakers={"Mike": tone_voice(2.0, 120.0, 1)}, max_new_tokens=12, **kwargs)
        assert {turn["speaker"] for turn in out["turns"]} <= {"Mike"} | {f"spk{k}" for k in range(4)}
    assert isinstance(sdr(audio, task="asr", max_new_tokens=8)["text"], str)
    with pytest.raises(ValueError, match="ctc_weight"):
        sdr(audio, ctc_weight=1.5)
    # turn times come from aligning the transcript: the prompt does not ask the model for them
    for source, prompted in (("ctc", False), ("model", True)):
        batch = next(sdr.preprocess(audio, timestamps=True, timestamps_from=source))
        assert (batch["timestamps"], batch["align"]) == (prompted, not prompted)
    for kwargs in ({}, {"ctc_weight": 0.0}):
        timed = sdr(audio, max_new_tokens=12, return_timestamps=True, **kwargs)
        assert all(0.0 <= t["start"] < t["end"] <= 3.0 for t in timed["turns"]), timed
    with pytest.raises(ValueError, match="timestamps_from"):
        sdr(audio, timestamps_from="vad")


def test_models_not_trained_with_ctc_decode_without_it():
    model, processor = tiny_speakerlm()
    audio = np.zeros(16000, dtype=np.float32) + tone_voice(1.0, 150.0, 3)
    inputs = processor([audio])
    processors = transcript_logits_processors(model, processor.tokenizer, inputs, [])
    assert [type(p) for p in processors] == [SpeakerLabelConstraint]
    with pytest.raises(ValueError, match="audio_ctc"):
        transcript_logits_processors(model, processor.tokenizer, inputs, [], ctc_weight=0.5)
    hub.register_auto_classes()
    with pytest.raises(ValueError, match="audio_ctc"):
        pipeline(TASK, model=model, processor=processor)(audio, timestamps_from="ctc")


def test_a_voice_change_invites_a_line_break(tokenizer):
    newline = ids_of(tokenizer, "\n")[0]
    turn = ids_of(tokenizer, "Mike", ":", " the")
    flat = torch.zeros(len(tokenizer))

    def newline_score(enrolled, break_weight):
        scorer = two_turn_scorer(tokenizer, enrolled, ["Mike", "Lucy"], break_weight=break_weight)
        step_scores(scorer, PROMPT, [], flat)  # the turn's start is recorded
        return float(step_scores(scorer, PROMPT, turn, flat)[newline])

    # the line is Mike's and the next words are in voice b: another speaker when Mike enrolled
    # voice a, Mike going on when he enrolled voice b
    a, b = VOICE_A, VOICE_B
    neutral = newline_score([a, b], 0.0)
    assert newline_score([a, b], 1.0) > neutral + 1.0
    assert newline_score([b, a], 1.0) < neutral - 1.0


def test_registered_speakers_who_never_speak_rarely_get_a_turn(tokenizer):
    a, b = VOICE_A, VOICE_B
    ghost = torch.nn.functional.normalize(a + 0.6 * torch.eye(8)[2], dim=0)  # sounds like Mike
    mike, ghost_id = ids_of(tokenizer, "Mike")[0], ids_of(tokenizer, "Jack")[0]
    assert len(ids_of(tokenizer, "Jack")) == 1

    def first_label_scores(presence_prior):
        scorer = two_turn_scorer(
            tokenizer, [a, b, ghost], ["Mike", "Lucy", "Jack"], presence_prior=presence_prior
        )
        return step_scores(scorer, PROMPT, [], torch.zeros(len(tokenizer)))

    plain, prior = first_label_scores(False), first_label_scores(True)
    # both prefer Mike, whose enrollment matches exactly; the prior, having found that the recording
    # is all Mike's and Lucy's voices, sets the look-alike who never speaks much further back
    assert plain[mike] > plain[ghost_id]
    assert prior[mike] - prior[ghost_id] > plain[mike] - plain[ghost_id] + 1.0
