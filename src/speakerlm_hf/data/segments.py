"""Sessions -> training segments: cut points, each segment's turns, and per-speaker enrollment pools.

- Cut points: a session is cut, from its start, into segments of random length in
  [`min_duration`, `max_duration`] (the paper's 40-50 s). A cut goes where nobody is speaking
  (the silent point nearest the drawn length, `pause_margin` away from speech when the pause is
  long enough). When the whole window is speech, the utterances a cut would cross could not be
  labelled: by default (`mid_utterance_cuts="drop"`) that stretch is skipped and the next segment
  starts at the next silence; with `"clip"` the cut is made at the drawn length anyway, and a
  crossed utterance goes, whole text and clipped times, to the segment holding most of it. The
  tail shorter than `min_duration` is dropped.
- Turns: the utterances inside the segment, times relative to its start, sorted by start time,
  text without the corpus's markup; utterances left empty by that (pure noise tags) are dropped
  from the turns but still count as speech for cut points and overlap.
- Enrollment pool of each speaker with a turn: pieces of that speaker's non-overlapped speech
  (their utterances minus everyone else's) of the same session outside the segment, pieces
  longer than `max_clip` split evenly, pieces shorter than `min_clip` dropped; up to `pool_size`
  drawn at random.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .corpora import ALIMEETING_MARKUP, Utterance, strip_markup

__all__ = [
    "SegmentConfig",
    "Segment",
    "merge_intervals",
    "subtract_intervals",
    "silences",
    "cut_segments",
    "segment_turns",
    "exclusive_speech",
    "enrollment_pool",
]

Span = tuple[float, float]
MID_UTTERANCE_CUTS = ("drop", "clip")


@dataclass(frozen=True)
class SegmentConfig:
    min_duration: float = 40.0
    max_duration: float = 50.0
    pause_margin: float = 0.25
    mid_utterance_cuts: str = "drop"
    min_clip: float = 2.0
    max_clip: float = 10.0
    pool_size: int = 3

    def __post_init__(self):
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError(
                f"segment durations must satisfy 0 < min_duration <= max_duration, got "
                f"{self.min_duration} and {self.max_duration}"
            )
        if self.mid_utterance_cuts not in MID_UTTERANCE_CUTS:
            raise ValueError(
                f"mid_utterance_cuts {self.mid_utterance_cuts!r} is not one of {MID_UTTERANCE_CUTS}"
            )
        if not 0 < self.min_clip <= self.max_clip:
            raise ValueError(
                f"enrollment clips need 0 < min_clip <= max_clip, got {self.min_clip}, {self.max_clip}"
            )
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {self.pool_size}")


@dataclass(frozen=True)
class Segment:
    """A cut of a session; `clean` when neither end falls inside an utterance."""

    start: float
    end: float
    clean: bool = True

    @property
    def duration(self) -> float:
        return self.end - self.start


def merge_intervals(spans: Iterable[Span]) -> list[Span]:
    """The union of intervals as sorted, disjoint intervals (touching ones merged)."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def subtract_intervals(spans: Sequence[Span], removed: Sequence[Span]) -> list[Span]:
    """Parts of the disjoint sorted `spans` outside the disjoint sorted `removed`."""
    result = []
    j = 0
    for start, end in spans:
        while j < len(removed) and removed[j][1] <= start:
            j += 1
        k = j
        cursor = start
        while k < len(removed) and removed[k][0] < end:
            if removed[k][0] > cursor:
                result.append((cursor, removed[k][0]))
            cursor = max(cursor, removed[k][1])
            k += 1
        if cursor < end:
            result.append((cursor, end))
    return result


def silences(utterances: Sequence[Utterance], duration: float) -> list[Span]:
    """Stretches of [0, duration] where nobody is speaking."""
    busy = merge_intervals((u.start, u.end) for u in utterances)
    return subtract_intervals([(0.0, duration)], busy)


def _cut_in_window(
    gaps: Sequence[Span], low: float, high: float, target: float, margin: float
) -> float | None:
    """The silent point of [low, high] nearest `target`, kept `margin` from speech where the pause allows."""
    best = None
    for a, b in gaps:
        a, b = max(a, low), min(b, high)
        if a > b:
            continue
        inset = min(margin, (b - a) / 2)
        point = min(max(target, a + inset), b - inset)
        if best is None or abs(point - target) < abs(best - target):
            best = point
    return best


def cut_segments(
    utterances: Sequence[Utterance], duration: float, rng: np.random.Generator, config: SegmentConfig
) -> list[Segment]:
    """Segments of [min_duration, max_duration] from the session's start (see the module doc)."""
    gaps = silences(utterances, duration)
    segments = []
    start = 0.0
    while start + config.min_duration <= duration + 1e-9:
        target = start + rng.uniform(config.min_duration, config.max_duration)
        low, high = start + config.min_duration, min(start + config.max_duration, duration)
        end = _cut_in_window(gaps, low, high, min(target, high), config.pause_margin)
        if end is None:
            end = round(min(target, high), 3)
            if config.mid_utterance_cuts == "drop":
                # Skip to the next silence: the stretch up to it cannot be labelled at either end.
                resume = _cut_in_window(gaps, end, duration, end, config.pause_margin)
                if resume is None:
                    break
                start = round(resume, 3)
                continue
        end = round(end, 3)
        clean = not _inside_utterance(utterances, start) and not _inside_utterance(utterances, end)
        segments.append(Segment(start, end, clean))
        start = end
    return segments


def _inside_utterance(utterances: Sequence[Utterance], point: float) -> bool:
    return any(u.start < point < u.end for u in utterances)


def segment_turns(
    utterances: Sequence[Utterance],
    segment: Segment,
    markup: Sequence[str] = ALIMEETING_MARKUP,
    clip_crossing: bool = False,
) -> list[dict]:
    """Turns `{speaker, start, end, text}` of the segment, relative times, sorted by start.

    An utterance crossing a segment end is kept only with `clip_crossing`, and only in the
    segment that holds the larger part of it.
    """
    turns = []
    for u in utterances:
        inside = u.start >= segment.start and u.end <= segment.end
        if not inside:
            overlap = min(u.end, segment.end) - max(u.start, segment.start)
            if not clip_crossing or overlap <= (u.end - u.start) / 2:
                continue
        text = strip_markup(u.text, markup)
        if not text:
            continue
        start = max(u.start, segment.start) - segment.start
        end = min(u.end, segment.end) - segment.start
        turns.append({"speaker": u.speaker, "start": round(start, 3), "end": round(end, 3), "text": text})
    turns.sort(key=lambda t: (t["start"], t["end"], t["speaker"]))
    return turns


def exclusive_speech(utterances: Sequence[Utterance]) -> dict[str, list[Span]]:
    """Each speaker's non-overlapped speech: their utterances minus everyone else's."""
    by_speaker: dict[str, list[Span]] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, []).append((u.start, u.end))
    exclusive = {}
    for speaker, spans in by_speaker.items():
        others = merge_intervals((u.start, u.end) for u in utterances if u.speaker != speaker)
        exclusive[speaker] = subtract_intervals(merge_intervals(spans), others)
    return exclusive


def enrollment_pool(
    exclusive: Sequence[Span], segment: Segment, rng: np.random.Generator, config: SegmentConfig
) -> list[Span]:
    """Up to `pool_size` clips of [min_clip, max_clip] s from `exclusive` speech outside the segment, by time."""
    outside = subtract_intervals(exclusive, [(segment.start, segment.end)])
    clips = []
    for start, end in outside:
        length = end - start
        if length < config.min_clip:
            continue
        count = math.ceil(length / config.max_clip - 1e-9)
        edges = np.linspace(start, end, count + 1)
        clips.extend((float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True))
    if len(clips) > config.pool_size:
        chosen = rng.choice(len(clips), size=config.pool_size, replace=False)
        clips = [clips[i] for i in sorted(chosen)]
    return clips
