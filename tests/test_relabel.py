"""Turns relabelled by their own voices once they are placed in time (`linking_speakerlm.relabel_turns`)."""

from __future__ import annotations

import numpy as np
import pytest

from speakerlm_hf.linking_speakerlm import (
    MIN_REGISTERED_SIMILARITY,
    registered_assignment,
    relabel_turns,
    split_turns,
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


def two_voices(levels: list[float], rate: int = 16000) -> tuple[np.ndarray, object]:
    """One second of constant `level` per entry, and an embedder whose direction is the mean level's
    (level 1 and level 3 are orthogonal voices, levels between them mixtures)."""
    waveform = np.concatenate([np.full(rate, level, dtype=np.float32) for level in levels])

    def embed(clips):
        share = np.array([(float(clip.mean()) - 1.0) / 2.0 for clip in clips]).clip(0, 1)
        return np.stack([1 - share, share, np.zeros_like(share)], axis=1) + 1e-3

    return waveform, embed


def worded(count: int, start: float = 0.0, speaker: str = "spk0") -> dict:
    """A turn of `count` words, one a second from `start`, each said over its first 0.8 s."""
    times = [(start + k, start + k + 0.8) for k in range(count)]
    text = " ".join(f"w{k}" for k in range(count))
    return {"speaker": speaker, "text": text, "start": start, "end": start + count, "_words": times}


def windows_of(embed, rate: int = 16000):
    """A `WindowEmbedder` from a clip embedder: each window cut from the clip and embedded."""

    def embed_windows(clip, centers, window):
        half = int(window * rate / 2)
        return embed([clip[max(0, int(c * rate) - half) : int(c * rate) + half] for c in centers])

    return embed_windows


@pytest.mark.parametrize("one_pass", [False, True])
def test_a_turn_is_cut_where_its_voice_changes_and_only_there(one_pass):
    waveform, embed = two_voices([1.0] * 4 + [3.0] * 4 + [1.0] * 3)
    turns = [worded(8), worded(3, start=8.0, speaker="spk1")]
    windows = windows_of(embed) if one_pass else None
    out = split_turns(turns, waveform, embed, threshold=0.5, padding=0.1, embed_windows=windows)
    assert [t["text"] for t in out] == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w0 w1 w2"]
    assert [(t["speaker"], t["start"], t["end"]) for t in out] == [
        ("spk0", 0.0, 3.9),
        ("spk0", 3.9, 8.0),
        ("spk1", 8.0, 11.0),
    ]
    assert all("_words" not in t for t in out) and "_words" in turns[0]  # input left as it was
    # three voices in one turn: each change is found
    waveform, embed = two_voices([1.0] * 3 + [3.0] * 3 + [1.0] * 3)
    windows = windows_of(embed) if one_pass else None
    assert [t["text"] for t in split_turns([worded(9)], waveform, embed, 0.5, embed_windows=windows)] == [
        "w0 w1 w2",
        "w3 w4 w5",
        "w6 w7 w8",
    ]


def test_a_turn_is_not_cut_without_a_clear_change_or_its_word_times():
    waveform, embed = two_voices([1.0] * 8)
    assert [t["text"] for t in split_turns([worded(8)], waveform, embed, 0.5)] == ["w0 w1 w2 w3 w4 w5 w6 w7"]
    waveform, embed = two_voices([1.0] * 4 + [3.0] * 4)
    # not below the threshold, words that are not the text's, too short a side, or cutting off
    assert len(split_turns([worded(8)], waveform, embed, threshold=-0.5)) == 1
    mismatched = {**worded(8), "text": "w0 w1 w2"}
    assert [t["text"] for t in split_turns([mismatched], waveform, embed, 0.5)] == ["w0 w1 w2"]
    waveform, embed = two_voices([1.0] * 1 + [3.0] * 3)
    assert len(split_turns([worded(4)], waveform, embed, 0.5)) == 1
    waveform, embed = two_voices([1.0] * 4 + [3.0] * 4)
    out = split_turns([worded(8)], waveform, embed, threshold=-1.0)
    assert out == [{"speaker": "spk0", "text": "w0 w1 w2 w3 w4 w5 w6 w7", "start": 0.0, "end": 8.0}]
    # windows the VAD finds silent are left out: with only the first voice heard, no cut
    silent_second = np.zeros(800, dtype=bool)
    silent_second[:400] = True
    assert len(split_turns([worded(8)], waveform, embed, 0.5, speech_mask=silent_second)) == 1


def test_one_pass_windows_match_the_extractor_on_whole_clips():
    """`model_window_embedder` runs CAM++ once per clip and pools each window: a window spanning the
    whole clip is the clip's own embedding, and windows over different voices differ."""
    import torch

    from speakerlm_hf.configuration_speaker_encoders import CAMPPlusConfig
    from speakerlm_hf.linking_speakerlm import model_embedder, model_window_embedder
    from speakerlm_hf.modeling_campplus import CAMPPlusModel

    torch.manual_seed(0)
    holder = torch.nn.Module()
    holder.speaker_encoder = CAMPPlusModel(
        CAMPPlusConfig(growth_rate=8, bn_size=2, init_channels=32, embedding_size=32)
    ).eval()
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(48000)).astype(np.float32)
    clip[24000:] = 0.3 * np.sin(np.arange(24000) * 2 * np.pi * 300 / 16000)
    windows = model_window_embedder(holder)
    whole = windows(clip, np.array([1.5]), 3.0)
    np.testing.assert_allclose(whole, model_embedder(holder)([clip]), atol=1e-4)
    parts = windows(clip, np.array([0.75, 2.25]), 1.5)
    assert parts.shape == (2, 32)
    cosine = parts[0] @ parts[1] / np.linalg.norm(parts[0]) / np.linalg.norm(parts[1])
    assert cosine < 0.99
