"""A model's voice thresholds (`config.voice_thresholds`): checked, saved with the model, used by the
pipeline and the evaluation, and written by `training.tiny.tune_voices`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
from speakerlm_hf.linking_speakerlm import (
    DEFAULT_VOICE_THRESHOLDS,
    MIN_REGISTERED_SIMILARITY,
    RELABEL_THRESHOLD,
    VoiceThresholds,
)
from speakerlm_hf.pipeline_speakerlm import aligned_turns
from speakerlm_hf.transcribe import DEFAULT_MODEL
from training.tiny.tune_voices import best_value, memoized, write_thresholds

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "speakerlm_hf" / "examples"


@pytest.mark.parametrize(
    "settings",
    [{"relabel": 1.5}, {"cluster": -2}, {"registered": True}, {"relabel": "0.7"}, {"threshold": 0.5}, [0.5]],
)
def test_bad_voice_thresholds_are_refused_by_name(settings):
    with pytest.raises(ValueError, match="voice"):
        SpeakerLMConfig(voice_thresholds=settings)
    with pytest.raises(ValueError, match="voice"):
        VoiceThresholds.from_dict(settings)


def test_voice_thresholds_travel_with_the_config(tmp_path):
    assert VoiceThresholds.from_config(SpeakerLMConfig()) == DEFAULT_VOICE_THRESHOLDS
    config = SpeakerLMConfig(voice_thresholds={"relabel": 0.6, "cluster": 0})
    config.save_pretrained(tmp_path)
    loaded = SpeakerLMConfig.from_pretrained(tmp_path)
    thresholds = VoiceThresholds.from_config(loaded)
    assert (thresholds.relabel, thresholds.cluster) == (0.6, 0.0)
    # the keys the config leaves out keep their defaults
    assert thresholds.registered == MIN_REGISTERED_SIMILARITY
    assert DEFAULT_VOICE_THRESHOLDS.relabel == RELABEL_THRESHOLD


def stretches(levels: list[tuple[float, float]], voices: dict) -> tuple[np.ndarray, object]:
    """A waveform of constant (level, seconds) stretches at 16 kHz, and an embedder that gives a
    clip the voice of its (rounded) mean level."""
    waveform = np.concatenate(
        [np.full(int(seconds * 16000), level, dtype=np.float32) for level, seconds in levels]
    )

    def embed(clips):
        return np.stack([voices[round(float(clip.mean()))] for clip in clips])

    return waveform, embed


def relabelled(
    turns, lines, token_seconds, waveform, embed, voices=None, **thresholds
) -> list[tuple[str, str]]:
    """(speaker, text) of the turns placed by `lines` and relabelled by voice with `thresholds`."""
    placed, ok = aligned_turns(
        [dict(t) for t in turns],
        lines,
        token_seconds,
        waveform,
        None,
        embed,
        voices,
        thresholds=VoiceThresholds(**thresholds),
    )
    assert ok
    return [(t["speaker"], t["text"]) for t in placed]


def test_relabelling_uses_the_thresholds_it_is_given():
    """Two anonymous turns whose voices are 0.6 alike: one speaker under a relabel threshold of 0.5,
    two under 0.75; a named turn 0.25 like its enrollment keeps the name only under a `registered`
    threshold below that."""
    # three stretches of 3 s, told apart by their level
    voices = {1: [1.0, 0.0, 0.0], 2: [0.6, 0.8, 0.0], 3: [0.0, 0.25, np.sqrt(1 - 0.25**2)]}
    waveform, embed = stretches([(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)], voices)
    turns = [
        {"speaker": "spk0", "text": "one"},
        {"speaker": "spk1", "text": "two"},
        {"speaker": "Ann", "text": "three"},
    ]
    lines = [(b"spk0:", 5, 40), (b"spk1:", 55, 90), (b"Ann:", 105, 140)]  # audio tokens of 60 ms

    def relabel(**thresholds):
        enrolled = {"Ann": np.array([0.0, 1.0, 0.0])}
        return [
            speaker for speaker, _ in relabelled(turns, lines, 0.06, waveform, embed, enrolled, **thresholds)
        ]

    assert relabel(relabel=0.5, registered=0.2) == ["spk0", "spk0", "Ann"]
    assert relabel(relabel=0.75, registered=0.2) == ["spk0", "spk1", "Ann"]
    assert relabel(relabel=0.75, registered=0.3) == ["spk0", "spk1", "spk2"]


def test_a_short_turn_unlike_the_others_is_a_speaker_of_its_own_under_the_short_threshold():
    """Turns of 3 s, 0.7 s and 3 s: the short one's voice is 0.2 like the others' (which are one
    speaker). It joins them by default, and is someone else under a `short` threshold above 0.2."""
    voices = {1: [1.0, 0.0], 2: [0.2, np.sqrt(1 - 0.2**2)]}
    waveform, embed = stretches([(1.0, 3.0), (2.0, 0.7), (1.0, 3.0)], voices)
    turns = [{"speaker": "spk0", "text": word} for word in ("one", "two", "three")]
    # audio tokens of 50 ms, each line well inside its stretch (padding 0.1 s)
    lines = [(b"spk0:", 2, 55), (b"spk0:", 63, 70), (b"spk0:", 78, 130)]

    def relabel(**thresholds):
        return relabelled(turns, lines, 0.05, waveform, embed, **thresholds)

    one_speaker = [("spk0", "one"), ("spk0", "two"), ("spk0", "three")]
    assert relabel(relabel=0.75) == one_speaker
    assert relabel(relabel=0.75, short=0.1) == one_speaker
    assert relabel(relabel=0.75, short=0.3) == [("spk0", "one"), ("spk1", "two"), ("spk0", "three")]


def test_memoized_embedder_embeds_each_distinct_clip_once():
    seen = []

    def embed(clips):
        seen.extend(clip.size for clip in clips)
        return np.stack([[float(clip.size), float(clip.sum())] for clip in clips])

    cached = memoized(embed)
    a, b = np.ones(3, dtype=np.float32), np.arange(4, dtype=np.float32)
    first = cached([a, b, a])
    again = cached([b.copy(), np.ones(5, dtype=np.float32)])
    assert first.tolist() == [[3, 3], [4, 6], [3, 3]] and again.tolist() == [[4, 6], [5, 5]]
    assert seen == [3, 4, 5]


@pytest.fixture(scope="module")
def pipe():
    from speakerlm_hf.transcribe import load_pipeline

    return load_pipeline(None)


def test_the_pipeline_reads_the_models_voice_thresholds(pipe):
    """Without registration, a relabel threshold every voice passes makes one speaker of the
    example's three, and one no voice passes keeps them apart: the pipeline takes the model's."""
    meeting = str(EXAMPLES / "meeting.wav")
    config = pipe.model.config
    try:
        config.voice_thresholds = {"relabel": -1.0, "cluster": -1.0}
        merged = {t["speaker"] for t in pipe(meeting)["turns"]}
        config.voice_thresholds = None
        default = {t["speaker"] for t in pipe(meeting)["turns"]}
    finally:
        config.voice_thresholds = None
    assert merged == {"spk0"}
    assert len(default) >= 2


def test_tuning_keeps_the_current_value_on_ties_and_writes_the_config_whole(tmp_path):
    assert best_value({0.5: 0.2, 0.6: 0.1, 0.7: 0.1}, current=0.75) == 0.7
    assert best_value({0.5: 0.1, 0.6: 0.1}, current=0.5) == 0.5
    pairs = {(0.4, 0.6): 0.1, (0.5, 0.65): 0.1, (0.5, 0.75): 0.3}
    assert best_value(pairs, current=(0.5, 0.75)) == (0.5, 0.65)
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(DEFAULT_MODEL / "config.json", folder / "config.json")
    before = json.loads((folder / "config.json").read_text())
    write_thresholds(str(folder), VoiceThresholds(relabel=0.65, registered=0.2))
    after = json.loads((folder / "config.json").read_text())
    assert after.pop("voice_thresholds") == {
        "cluster": 0.5,
        "link": 0.5,
        "relabel": 0.65,
        "registered": 0.2,
        "split": -1.0,
        "short": -1.0,
    }
    before.pop("voice_thresholds", None)
    assert after == before
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    loaded = SpeakerLMConfig.from_pretrained(folder)
    assert VoiceThresholds.from_config(loaded).relabel == 0.65


def test_tuning_scores_the_grid_on_held_out_sessions_and_applies_the_choice(tmp_path, rendered_meetings):
    from training.tiny.tune_voices import main as tune_voices

    meetings = rendered_meetings
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    report_path = tmp_path / "voices.json"
    tune_voices(
        ["--model", str(model), "--data", str(meetings), "--first", "1", "--count", "2"]
        + ["--extra-speakers", "2", "--cluster", "0.5", "--relabel", "-1.0", "0.75"]
        + ["--registered", "0.3", "--split", "-1.0", "0.5", "--short", "-1.0", "0.3"]
        + ["--output", str(report_path), "--apply"]
    )
    report = json.loads(report_path.read_text())
    assert report["sessions"] == [1, 3]
    chosen, current = report["chosen"], report["current"]

    def nearest_best(rates: dict, key: str) -> float:  # best_value's choice: ties go to the current value
        return min(rates, key=lambda value: (round(rates[value], 6), abs(value - current[key])))

    assert [entry["split"] for entry in report["split"]] == [-1.0, 0.5]
    assert chosen["split"] == nearest_best({e["split"]: e["mean_rate"] for e in report["split"]}, "split")
    scores = {
        (e["relabel"], e["short"]): e["cpcer"] for e in report["no_regist"] if e["split"] == chosen["split"]
    }
    assert set(scores) == {(-1.0, -1.0), (-1.0, 0.3), (0.75, -1.0), (0.75, 0.3)}
    assert len(report["no_regist"]) == 8
    # every turn one speaker (relabel -1) cannot beat voices kept apart on meetings of 2+ speakers
    assert scores[(-1.0, -1.0)] >= scores[(0.75, -1.0)]
    assert sorted((e["registered"], e["split"]) for e in report["registered"]) == [(0.3, -1.0), (0.3, 0.5)]
    best = min(
        scores,
        key=lambda k: (round(scores[k], 6), abs(k[0] - current["relabel"]) + abs(k[1] - current["short"])),
    )
    assert (chosen["relabel"], chosen["short"]) == best
    config = json.loads((model / "config.json").read_text())
    assert config["voice_thresholds"] == chosen
