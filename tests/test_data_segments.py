"""Cut points, segment turns and enrollment pools on hand-made sessions."""

import numpy as np
import pytest

from speakerlm_hf.data.corpora import Utterance
from speakerlm_hf.data.segments import (
    Segment,
    SegmentConfig,
    cut_segments,
    enrollment_pool,
    exclusive_speech,
    merge_intervals,
    segment_turns,
    silences,
    subtract_intervals,
)


def meeting(duration: float = 300.0, seed: int = 0) -> list[Utterance]:
    """Three speakers taking 2-9 s turns with gaps of -0.8..1.5 s (negative: overlap)."""
    rng = np.random.default_rng(seed)
    utterances, cursor, previous = [], 0.5, None
    while True:
        speaker = rng.choice([s for s in ("A", "B", "C") if s != previous])
        length = rng.uniform(2.0, 9.0)
        if cursor + length > duration:
            return utterances
        utterances.append(
            Utterance(str(speaker), round(cursor, 3), round(cursor + length, 3), f"words {len(utterances)}")
        )
        previous = speaker
        cursor = round(cursor + length + rng.uniform(-0.8, 1.5), 3)


def test_interval_algebra():
    assert merge_intervals([(3, 4), (0, 1), (0.5, 2), (2, 2.5), (5, 5)]) == [(0, 2.5), (3, 4)]
    assert subtract_intervals([(0, 10), (12, 14)], [(1, 2), (3, 4), (9, 13)]) == [
        (0, 1),
        (2, 3),
        (4, 9),
        (13, 14),
    ]
    assert subtract_intervals([(0, 1)], []) == [(0, 1)]
    assert silences([Utterance("A", 1, 2, "x"), Utterance("B", 1.5, 3, "y")], 5) == [(0.0, 1), (3, 5)]


@pytest.mark.parametrize("policy", ["drop", "clip"])
def test_cuts_fall_in_silence_and_lengths_stay_in_range(policy):
    utterances = meeting()
    config = SegmentConfig(mid_utterance_cuts=policy)
    segments = cut_segments(utterances, 300.0, np.random.default_rng(1), config)
    assert len(segments) >= 4
    assert segments[0].start == 0.0
    for segment in segments:
        assert config.min_duration - 1e-6 <= segment.duration <= config.max_duration + 1e-6
        crossed = [u for u in utterances if u.start < segment.start < u.end or u.start < segment.end < u.end]
        assert segment.clean == (not crossed)
    starts_at_ends = [b.start == a.end for a, b in zip(segments, segments[1:], strict=False)]
    if policy == "drop":
        assert all(s.clean for s in segments)
        assert not all(starts_at_ends), "this meeting has a window without silence, skipped"
    else:
        assert all(starts_at_ends)
        assert not all(s.clean for s in segments)
    assert 300.0 - segments[-1].end < config.max_duration + config.min_duration


def test_a_window_without_silence_is_skipped_or_cut():
    # One 200 s utterance: no silence at all.
    utterances = [Utterance("A", 0.0, 200.0, "long")]
    assert cut_segments(utterances, 200.0, np.random.default_rng(0), SegmentConfig()) == []
    segments = cut_segments(
        utterances, 200.0, np.random.default_rng(0), SegmentConfig(mid_utterance_cuts="clip")
    )
    assert len(segments) == 4 and not any(s.clean for s in segments)
    assert all(40.0 <= s.duration <= 50.0 for s in segments)


def test_turns_relative_sorted_and_without_markup():
    utterances = [
        Utterance("B", 12.0, 15.0, "later <sil>"),
        Utterance("A", 10.5, 13.0, "<%>first"),
        Utterance("A", 16.0, 16.5, "<%>"),
        Utterance("C", 19.0, 25.0, "crosses the end"),
    ]
    segment = Segment(10.0, 20.0)
    assert segment_turns(utterances, segment) == [
        {"speaker": "A", "start": 0.5, "end": 3.0, "text": "first"},
        {"speaker": "B", "start": 2.0, "end": 5.0, "text": "later"},
    ]
    # Clipped only where the segment holds most of the utterance.
    assert segment_turns(utterances, Segment(10.0, 23.0), clip_crossing=True)[-1] == {
        "speaker": "C",
        "start": 9.0,
        "end": 13.0,
        "text": "crosses the end",
    }
    assert len(segment_turns(utterances, segment, clip_crossing=True)) == 2


def test_enrollment_pools_hold_only_the_speakers_own_speech_outside_the_segment():
    utterances = meeting()
    config = SegmentConfig(pool_size=4)
    exclusive = exclusive_speech(utterances)
    rng = np.random.default_rng(3)
    segment = cut_segments(utterances, 300.0, rng, config)[2]
    for speaker in ("A", "B", "C"):
        pool = enrollment_pool(exclusive[speaker], segment, rng, config)
        assert 1 <= len(pool) <= 4
        assert pool == sorted(pool)
        for start, end in pool:
            assert config.min_clip - 1e-9 <= end - start <= config.max_clip + 1e-9
            assert end <= segment.start or start >= segment.end
            own = [u for u in utterances if u.speaker == speaker and u.start <= start and end <= u.end]
            assert own, "a clip lies within one of the speaker's utterances"
            others = [u for u in utterances if u.speaker != speaker and u.start < end and start < u.end]
            assert not others, "no one else speaks during a clip"


def test_long_exclusive_stretches_are_split_evenly():
    pool = enrollment_pool(
        [(100.0, 125.0)], Segment(0.0, 45.0), np.random.default_rng(0), SegmentConfig(pool_size=5)
    )
    np.testing.assert_allclose(pool, [(100.0, 108.333333), (108.333333, 116.666667), (116.666667, 125.0)])
    assert (
        enrollment_pool([(100.0, 101.5)], Segment(0.0, 45.0), np.random.default_rng(0), SegmentConfig()) == []
    )


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="min_duration"):
        SegmentConfig(min_duration=50, max_duration=40)
    with pytest.raises(ValueError, match="mid_utterance_cuts"):
        SegmentConfig(mid_utterance_cuts="keep")
