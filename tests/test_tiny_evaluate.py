"""The held-out evaluation (`training/tiny/evaluate.py`): its registration draws and what it scores."""

import json
from pathlib import Path

import numpy as np
import pytest

from training.tiny.evaluate import registrations, score


def fake_sessions(count: int) -> list[dict]:
    sessions = []
    for index in range(count):
        speakers = [f"s{index}-{k}" for k in range(2 + index % 2)]
        sessions.append(
            {
                "id": f"meeting{index}",
                "turns": [
                    {"speaker": s, "start": float(k), "end": k + 0.5, "text": "hi"}
                    for k, s in enumerate(speakers)
                ],
                # every speaker's clip is distinct: 10 * session + speaker
                "enrollment": {
                    s: np.full(4, 10 * index + k, dtype=np.float32) for k, s in enumerate(speakers)
                },
            }
        )
    return sessions


def test_over_regist_draws_do_not_depend_on_how_many_sessions_are_scored():
    sessions = fake_sessions(8)
    few = registrations([dict(s) for s in sessions[:3]], extra=4, seed=0, pool=sessions)
    all_ = registrations([dict(s) for s in sessions], extra=4, seed=0, pool=sessions)
    for index in range(3):
        assert list(few["over"][index]) == list(all_["over"][index])
        for name, clip in few["over"][index].items():
            assert np.array_equal(clip, all_["over"][index][name])
    for index, session in enumerate(sessions):
        present = {t["speaker"] for t in session["turns"]}
        match, over = all_["match"][index], all_["over"][index]
        assert all_["no"][index] is None
        assert len(match) == len(present) and set(match) <= set(over)
        assert len(over) == len(present) + 4
        # the extra speakers are other sessions' voices, never this session's
        own = {session["enrollment"][s].tobytes() for s in present}
        extras = [clip for name, clip in over.items() if name not in match]
        assert not any(clip.tobytes() in own for clip in extras)


def test_timed_hypotheses_are_also_scored_by_who_spoke_when():
    sessions = fake_sessions(2)
    for session in sessions:
        session["naming"] = {t["speaker"]: t["speaker"].upper() for t in session["turns"]}
    exact = [[{**t, "speaker": f"spk{k}"} for k, t in enumerate(s["turns"])] for s in sessions]
    scores = score(sessions, exact, "no")
    assert scores["cpcer"] == 0.0 and scores["tcpcer"] == 0.0 and scores["der"] == 0.0
    # the words a second late: the text is right, the times are not
    late = [[{**t, "start": t["start"] + 1.0, "end": t["end"] + 1.0} for t in turns] for turns in exact]
    scores = score(sessions, late, "no")
    assert scores["cpcer"] == 0.0 and scores["der"] > 0.5
    untimed = [[{"speaker": t["speaker"], "text": t["text"]} for t in turns] for turns in exact]
    assert "der" not in score(sessions, untimed, "no")


def test_turns_get_times_whatever_the_ctc_weight():
    """Decoded by the LLM alone (CTC weight 0), the transcript's lines are still placed by forced
    alignment on the audio tokens, as the pipeline places them."""
    import soundfile as sf
    import torch

    from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
    from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor
    from speakerlm_hf.transcribe import DEFAULT_MODEL
    from training.tiny.evaluate import transcribe

    model = SpeakerLMForConditionalGeneration.from_pretrained(DEFAULT_MODEL).eval()
    processor = SpeakerLMProcessor.from_pretrained(DEFAULT_MODEL)
    processor.match_model(model.config)
    examples = Path(__file__).resolve().parents[1] / "src" / "speakerlm_hf" / "examples"
    audio, _ = sf.read(examples / "meeting.wav", dtype="float32")
    tokens = int(
        model.encode_audio(**{k: v for k, v in processor([audio]).items() if "input_features" in k})[1][0]
    )
    for weight in (0.0, None):
        with torch.no_grad():
            texts, placements = transcribe(
                model, processor, [{"audio": audio}], [None], 1, 200, ctc_weight=weight
            )
        lines = [line for line in texts[0].splitlines() if line.strip()]
        assert placements[0] is not None and len(placements[0]) == len(lines), (weight, texts, placements)
        spans = [span for span in placements[0] if span is not None]
        assert spans and all(0 <= first <= last < tokens for _, first, last, _ in spans)
        assert [span[1] for span in spans] == sorted(span[1] for span in spans)
        # each line's words lie within it, in order
        for _, first, last, words in spans:
            assert words[0][0] == first and words[-1][1] == last
            assert all(a <= b for a, b in words) and [a for a, _ in words] == sorted(a for a, _ in words)


def test_the_evaluation_keeps_the_turns_it_scored(tmp_path, rendered_meetings):
    """The output of a whole evaluation holds, per mode and session, the model's transcript and the
    timed, relabelled turns that were scored: scoring those turns again gives its figures."""
    from speakerlm_hf.transcribe import DEFAULT_MODEL
    from training.tiny.evaluate import load_sessions
    from training.tiny.evaluate import main as evaluate_main

    meetings = rendered_meetings
    output = tmp_path / "eval.json"
    evaluate_main(
        ["--model", str(DEFAULT_MODEL), "--data", str(meetings), "--limit", "1"]
        + ["--extra-speakers", "2", "--oracle", "--output", str(output)]
    )
    report = json.loads(output.read_text())
    assert set(report["results"]["oracle"]) == {"no", "over"}
    pool = load_sessions(str(meetings), "test", None)  # the other sessions' voices are Over-Regist's extras
    sessions = pool[:1]
    registrations(sessions, 2, 0, pool)  # the names each mode gave the speakers, as the evaluation drew them
    for mode in ("no", "match", "over"):
        text = report["transcripts"][mode][sessions[0]["id"]]
        turns = report["turns"][mode][sessions[0]["id"]]
        assert text.strip() and turns
        assert all(set(turn) == {"speaker", "start", "end", "text"} for turn in turns)
        assert all(0 <= turn["start"] <= turn["end"] for turn in turns)
        scored = report["results"][mode]["all"]
        assert score(sessions, [turns], mode) == pytest.approx(scored, abs=1e-3)


def test_the_oracles_tell_relabelling_the_speaker_count_and_who_of_the_enrolled_is_present():
    """`--oracle`: No-Regist told the true number of speakers, Over-Regist choosing among the
    enrolled people present only; the same decoded lines, relabelled by the same voices."""
    from training.tiny.evaluate import timed_turns

    rate, seconds = 16000, 2.0
    # three 2 s turns; the fake extractor hears each stretch's level as a voice
    audio = np.concatenate(
        [np.full(int(seconds * rate), level, dtype=np.float32) for level in (0.1, 0.2, 0.3)]
    )
    unit = np.eye(3)
    absent = np.array([0.0, 0.6, 0.8])  # like Bob (cosine 0.6), more like the absent Cyd
    voice_of = {1: unit[0], 2: unit[1], 3: absent}

    def embed(clips):
        return np.stack([voice_of[int(round(float(np.median(clip)) * 10))] for clip in clips])

    session = {
        "id": "meeting0",
        "audio": audio,
        "turns": [
            {"speaker": "r0", "start": 0.2, "end": 1.8, "text": "a b"},
            {"speaker": "r1", "start": 2.2, "end": 3.8, "text": "c d"},
            {"speaker": "r0", "start": 4.2, "end": 5.8, "text": "e f"},
        ],
        "naming": {"r0": "Ann", "r1": "Bob", "r2": "Cyd"},
    }
    token_seconds = 0.1

    def lines(labels):
        return [
            (
                f"{label}:".encode(),
                20 * k + 2,
                20 * k + 17,
                [(20 * k + 2, 20 * k + 9), (20 * k + 10, 20 * k + 17)],
            )
            for k, label in enumerate(labels)
        ]

    def relabelled(labels, enrolled, oracle=None):
        text = "\n".join(
            f"{label}: {turn['text']}" for label, turn in zip(labels, session["turns"], strict=True)
        )
        turns = timed_turns(
            [session], [enrolled], [text], [lines(labels)], token_seconds, embed, masks=[None], oracle=oracle
        )[0]
        assert all("start" in turn for turn in turns), turns  # placed in time, so relabelled
        return [turn["speaker"] for turn in turns]

    # No-Regist: the voices of the first and last turns are alike enough to be one speaker only when
    # told there are two (at the default relabel threshold, 0.6 is two people)
    assert relabelled(["spk0", "spk1", "spk2"], None) == ["spk0", "spk1", "spk2"]
    assert relabelled(["spk0", "spk1", "spk2"], None, "count") == ["spk0", "spk1", "spk1"]
    # Over-Regist: the last turn goes to the absent Cyd, unless only Ann and Bob are to choose from,
    # even where the model wrote Cyd's name (the turn stays named, and takes the voice it is closer to)
    enrolled = {"Ann": unit[0], "Bob": unit[1], "Cyd": np.array([0.0, 0.0, 1.0])}
    assert relabelled(["Ann", "Bob", "Cyd"], enrolled) == ["Ann", "Bob", "Cyd"]
    assert relabelled(["Ann", "Bob", "Cyd"], enrolled, "present") == ["Ann", "Bob", "Bob"]
