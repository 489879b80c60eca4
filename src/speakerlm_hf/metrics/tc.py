"""tcpCER: time-constrained cpCER (meeteval's tcpWER on characters).

Every scored character gets a pseudo time from its turn, as meeteval's defaults do: a
reference turn's span is cut into equal intervals, one per character; a hypothesis character
is the point at the centre of its equal share of the turn, widened by ``collar`` seconds on
each side. A reference and a hypothesis character may be matched or substituted only when
their intervals overlap (strictly: ``a.start < b.end and a.end > b.start``); otherwise they can
only be a deletion plus an insertion. Speakers are then paired by the Hungarian assignment on
these time-constrained distances, as in cpCER.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .cp import SpeakerErrorCounts, minimum_permutation_counts
from .levenshtein import pairwise_counts
from .normalize import scoring_characters
from .turns import Turn, TurnLike, as_turns, require_times, time_ordered

__all__ = ["tcp_cer", "character_times"]


def _require_times(turns: list[Turn], side: str) -> None:
    require_times(turns, side, "tcpCER")
    for turn in turns:
        if turn.end < turn.start:
            raise ValueError(f"{side} turn ends before it starts: {turn}")


def character_times(turn: Turn, points: bool) -> list[tuple[float, float]]:
    """Pseudo time of each scored character of ``turn`` (intervals, or centre points)."""
    count = len(scoring_characters(turn.text))
    if count == 0:
        return []
    if count == 1:
        intervals = [(turn.start, turn.end)]
    else:
        # Same arithmetic as meeteval's character_based strategy, so boundaries agree exactly.
        step = (turn.end - turn.start) / count
        intervals = [(turn.start + step * k, turn.start + step * (k + 1)) for k in range(count)]
    if points:
        return [((a + b) / 2,) * 2 for a, b in intervals]
    return intervals


def _speaker_tracks(turns: list[Turn], points: bool, collar: float) -> dict[str, tuple[str, np.ndarray]]:
    texts: dict[str, list[str]] = {}
    times: dict[str, list[tuple[float, float]]] = {}
    for turn in time_ordered(turns):
        texts.setdefault(turn.speaker, []).append(scoring_characters(turn.text))
        times.setdefault(turn.speaker, []).extend(character_times(turn, points))
    tracks = {}
    for speaker, parts in texts.items():
        text = "".join(parts)
        if text:
            spans = np.array(times[speaker], dtype=np.float64).reshape(-1, 2)
            tracks[speaker] = (text, spans + np.array([-collar, collar]))
    return tracks


def _padded(spans: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(spans), width, 2))
    for k, span in enumerate(spans):
        out[k, : len(span)] = span
    return out


def tcp_cer(
    reference: Iterable[TurnLike],
    hypothesis: Iterable[TurnLike],
    collar: float = 5.0,
) -> SpeakerErrorCounts:
    """tcpCER counts of one session; every turn must carry ``start`` and ``end``."""
    if collar < 0:
        raise ValueError(f"collar must be >= 0 seconds, got {collar}")
    ref_turns, hyp_turns = as_turns(reference), as_turns(hypothesis)
    _require_times(ref_turns, "reference")
    _require_times(hyp_turns, "hypothesis")
    ref = _speaker_tracks(ref_turns, points=False, collar=0.0)
    hyp = _speaker_tracks(hyp_turns, points=True, collar=collar)
    ref_texts = [text for text, _ in ref.values()]
    hyp_texts = [text for text, _ in hyp.values()]
    ref_spans = _padded([spans for _, spans in ref.values()], max(map(len, ref_texts), default=0))
    hyp_spans = _padded([spans for _, spans in hyp.values()], max(map(len, hyp_texts), default=0))

    def overlaps(first: int, last: int) -> np.ndarray:
        start = ref_spans[:, first:last, 0, None, None]
        end = ref_spans[:, first:last, 1, None, None]
        return (start < hyp_spans[None, None, :, :, 1]) & (end > hyp_spans[None, None, :, :, 0])

    counts = pairwise_counts(ref_texts, hyp_texts, substitution_allowed=overlaps)
    distances = np.array([[c.errors for c in row] for row in counts], dtype=np.int64).reshape(
        len(ref_texts), len(hyp_texts)
    )
    return minimum_permutation_counts(
        {name: text for name, (text, _) in ref.items()},
        {name: text for name, (text, _) in hyp.items()},
        distances,
        lambda r, h: counts[r][h],
    )
