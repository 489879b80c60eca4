"""The linking diagnostics of `training.tiny.tune_linking` (cosine pairs across segments)."""

import numpy as np
import pytest

from training.tiny.tune_linking import describe, linking_pairs, reference_speaker


def segment(start, end, turns, speakers):
    return {"start": start, "end": end, "turns": turns, "speakers": speakers}


def test_reference_speaker_is_the_longest_overlap():
    reference = [
        {"speaker": "A", "start": 0.0, "end": 4.0},
        {"speaker": "B", "start": 4.0, "end": 10.0},
    ]
    # turn times count from the segment's start (offset 2 s): 3-8 s overlaps A 1 s and B 4 s
    assert reference_speaker([{"start": 1.0, "end": 6.0}], 2.0, 8.0, reference) == "B"
    assert reference_speaker([{"start": 0.0, "end": 1.0}], 0.0, 8.0, reference) == "A"
    assert reference_speaker([{"start": 0.0, "end": 1.0}], 20.0, 8.0, reference) is None


def test_linking_pairs_split_same_and_different_speakers_across_segments():
    reference = [
        {"speaker": "A", "start": 0.0, "end": 20.0},
        {"speaker": "B", "start": 20.0, "end": 40.0},
        {"speaker": "A", "start": 50.0, "end": 70.0},
        {"speaker": "B", "start": 70.0, "end": 90.0},
    ]
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    a2 = np.array([0.8, 0.6, 0.0])  # cosine 0.8 with a, 0.6 with b
    # each segment's turns: (local label, start, end from the segment's start, embedding)
    plans = [
        (0.0, [("spk0", 0.0, 20.0, a), ("spk1", 20.0, 40.0, b)]),
        (45.0, [("spk1", 5.0, 25.0, a2), ("spk0", 25.0, 45.0, b)]),
    ]
    outputs = [
        {
            "results": [
                segment(
                    offset,
                    offset + 45.0,
                    [{"speaker": label, "start": start, "end": end} for label, start, end, _ in plan],
                    {label: {"embedding": vector} for label, _, _, vector in plan},
                )
            ]
        }
        for offset, plan in plans
    ]
    same, different = linking_pairs(reference, outputs)
    # pairs within one segment are never scored; across: (A,A) 0.8, (B,B) 1.0, (A,B) 0.0, (B,A) 0.6
    assert sorted(same) == pytest.approx([0.8, 1.0])
    assert sorted(different) == pytest.approx([0.0, 0.6])
    figures = describe(different)
    assert figures["pairs"] == 2 and figures["max"] == pytest.approx(0.6)
    assert describe([]) == {"pairs": 0}
