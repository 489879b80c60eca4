"""Turns relabelled by their own voices once they are placed in time (`linking_speakerlm.relabel_turns`)."""

from __future__ import annotations

import numpy as np
import pytest

from speakerlm_hf.linking_speakerlm import (
    MIN_REGISTERED_SIMILARITY,
    registered_assignment,
    relabel_turns,
    turn_embeddings,
)


def unit(*parts: tuple[int, float], size: int = 8) -> np.ndarray:
    vector = np.zeros(size)
    for axis, value in parts:
        vector[axis] += value
    return vector / np.linalg.norm(vector)


A, B, C, D = unit((0, 1)), unit((1, 1)), unit((2, 1)), unit((3, 1))


def timed(*speakers: str, length: float = 2.0, gap: float = 0.5) -> list[dict]:
    return [
        {"speaker": s, "text": f"words {k}", "start": k * (length + gap), "end": k * (length + gap) + length}
        for k, s in enumerate(speakers)
    ]


def test_a_look_alike_of_a_registered_speaker_does_not_take_the_turns_it_resembles():
    look_alike = unit((0, 1), (4, 0.35))  # cosine 0.94 with A
    voices = np.stack([A, look_alike, B])
    leaning = unit((0, 1), (4, 0.2))  # A's voice on a turn that sounds a little like the look-alike
    turns = np.stack([A, A, leaning, A, leaning, A, B, B, B])
    similarity = turns @ voices.T
    # turn by turn, the look-alike wins the leaning turns ...
    assert similarity.argmax(1).tolist() == [0, 0, 1, 0, 1, 0, 2, 2, 2]
    # ... but it hardly speaks, so with the speakers' shares fitted it wins none
    assert registered_assignment(similarity, np.full(9, 3.0)).tolist() == [0, 0, 0, 0, 0, 0, 2, 2, 2]


def test_anonymous_turns_are_clustered_by_voice_and_touching_turns_of_one_speaker_joined():
    turns = timed("spk0", "spk0", "spk0", "spk0", "spk1")
    turns[4]["start"] = turns[3]["end"] - 0.1  # goes on where the previous turn ends
    vectors = np.stack([A, B, A, B, B])
    out = relabel_turns(turns, vectors, [2.0] * 5)
    assert [t["speaker"] for t in out] == ["spk0", "spk1", "spk0", "spk1"]
    assert out[3]["text"] == "words 3 words 4" and out[3]["end"] == turns[4]["end"]
    assert [t["speaker"] for t in turns] == ["spk0", "spk0", "spk0", "spk0", "spk1"]  # input left as it was


def test_named_turns_follow_the_enrolled_voices_and_unknown_voices_stay_anonymous():
    registered = {"Ann": A, "Ben": B}
    turns = timed("Ann", "Ben", "Ben", "spk0", "spk1", "Ann")
    vectors = np.stack([B, A, C, C, D, A])
    assert (C @ np.stack([A, B]).T).max() < MIN_REGISTERED_SIMILARITY
    out = relabel_turns(turns, vectors, [2.0] * 6, registered)
    # a named turn in a voice nobody enrolled joins the anonymous ones, clustered with their voices
    assert [t["speaker"] for t in out] == ["Ben", "Ann", "spk0", "spk0", "spk1", "Ann"]


def test_speaker_count_hints_bound_the_anonymous_clusters():
    turns = timed("spk0", "spk1", "spk2", "spk0")
    vectors = np.stack([A, B, C, A])
    assert len({t["speaker"] for t in relabel_turns(turns, vectors, [2.0] * 4)}) == 3
    assert {t["speaker"] for t in relabel_turns(turns, vectors, [2.0] * 4, max_speakers=2)} == {
        "spk0",
        "spk1",
    }
    # the hints count everyone: a registered speaker found leaves one anonymous cluster of two
    named = timed("Ann", "spk1", "spk2", "spk1")
    out = relabel_turns(named, np.stack([A, B, C, B]), [2.0] * 4, {"Ann": A}, max_speakers=2)
    assert [t["speaker"] for t in out] == ["Ann", "spk0", "spk0", "spk0"]
    out = relabel_turns(named, np.stack([A, B, B, B]), [2.0] * 4, {"Ann": A}, min_speakers=3)
    assert len({t["speaker"] for t in out}) == 3


@pytest.mark.parametrize("mask", [None, np.ones(300, dtype=bool)])
def test_each_turn_is_embedded_from_its_own_audio(mask):
    rate = 16000
    waveform = np.concatenate([np.full(rate, level, dtype=np.float32) for level in (1.0, 2.0, 3.0)])
    turns = [{"speaker": "spk0", "start": 0.0, "end": 2.0}, {"speaker": "spk0", "start": 1.0, "end": 3.0}]
    seen = []

    def embed(clips):
        seen.extend(clips)
        return np.stack([[clip.size / rate, float(clip.mean())] for clip in clips])

    vectors, seconds = turn_embeddings(waveform, turns, embed, mask)
    # the second of overlap (level 2) belongs to neither turn: each keeps its own second
    assert vectors.tolist() == [[1.0, 1.0], [1.0, 3.0]] and seconds.tolist() == [1.0, 1.0]
    assert len(seen) == 2
