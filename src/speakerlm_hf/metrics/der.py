"""DER: the diarization error rate, the usual measure of "who spoke when" (text is not looked at).

Computed on 10 ms frames, as NIST md-eval and pyannote.metrics do: at each frame with ``R``
reference speakers and ``H`` hypothesis speakers talking, ``max(0, R - H)`` is missed speech,
``max(0, H - R)`` false alarm and ``min(R, H)`` minus the pairs that the speaker mapping matches
is confusion; overlapping speech counts, each speaker once per frame (a speaker's own turns that
overlap are one stretch). The mapping pairs reference and hypothesis speakers one to one so that
the matched talking time is largest (Hungarian assignment), per session. DER = (missed + false
alarm + confusion) / reference speech time, pooled over sessions as summed times.

``collar`` (seconds) leaves that much on each side of every reference turn boundary unscored
(md-eval's forgiveness for hand-marked boundaries; 0.25 s in the NIST evaluations, 0 by default
as in DIHARD and pyannote).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

import numpy as np
from scipy.optimize import linear_sum_assignment

from .scoring import check_sessions
from .turns import Turn, TurnLike, as_turns, require_times

__all__ = [
    "DiarizationErrors",
    "DiarizationReport",
    "FRAMES_PER_SECOND",
    "diarization_error",
    "diarization_errors",
]

FRAMES_PER_SECOND = 100


@dataclass(frozen=True)
class DiarizationErrors:
    """Seconds of missed speech, false alarm and speaker confusion, and of reference speech."""

    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0
    reference: float = 0.0

    def __add__(self, other: DiarizationErrors) -> DiarizationErrors:
        return DiarizationErrors(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def errors(self) -> float:
        return self.missed + self.false_alarm + self.confusion

    @property
    def rate(self) -> float | None:
        """DER; None without reference speech."""
        return self.errors / self.reference if self.reference > 0 else None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "der": self.rate,
            "missed": self.missed,
            "false_alarm": self.false_alarm,
            "confusion": self.confusion,
            "reference_speech": self.reference,
        }


def _timed_turns(turns: Iterable[TurnLike], side: str) -> list[Turn]:
    turns = as_turns(turns)
    require_times(turns, side, "DER")
    for turn in turns:
        if not (np.isfinite(turn.start) and np.isfinite(turn.end)) or turn.start < 0 or turn.end < turn.start:
            raise ValueError(f"{side} turn has invalid times (negative, reversed or not finite): {turn}")
    return turns


def _activity(turns: list[Turn], frames: int) -> tuple[list[str], np.ndarray]:
    """Speakers in order of first appearance and their (speakers, frames) talking mask."""
    speakers = list(dict.fromkeys(turn.speaker for turn in turns))
    active = np.zeros((len(speakers), frames), dtype=bool)
    for turn in turns:
        first, last = round(turn.start * FRAMES_PER_SECOND), round(turn.end * FRAMES_PER_SECOND)
        active[speakers.index(turn.speaker), first:last] = True
    return speakers, active


def diarization_errors(
    reference: Iterable[TurnLike], hypothesis: Iterable[TurnLike], collar: float = 0.0
) -> DiarizationErrors:
    """DER counts (seconds) of one session; every turn must carry ``start`` and ``end``."""
    if not collar >= 0:
        raise ValueError(f"collar must be >= 0 seconds, got {collar}")
    ref_turns, hyp_turns = _timed_turns(reference, "reference"), _timed_turns(hypothesis, "hypothesis")
    frames = 1 + round(max((t.end for t in ref_turns + hyp_turns), default=0.0) * FRAMES_PER_SECOND)
    _, ref = _activity(ref_turns, frames)
    _, hyp = _activity(hyp_turns, frames)
    scored = np.ones(frames, dtype=bool)
    if collar > 0:
        width = round(collar * FRAMES_PER_SECOND)
        for turn in ref_turns:
            for edge in (round(turn.start * FRAMES_PER_SECOND), round(turn.end * FRAMES_PER_SECOND)):
                scored[max(0, edge - width) : edge + width] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    ref_count, hyp_count = ref.sum(0), hyp.sum(0)
    matched = 0
    if len(ref) and len(hyp):
        overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        matched = int(overlap[rows, cols].sum())
    seconds = 1.0 / FRAMES_PER_SECOND
    return DiarizationErrors(
        missed=float(np.maximum(ref_count - hyp_count, 0).sum()) * seconds,
        false_alarm=float(np.maximum(hyp_count - ref_count, 0).sum()) * seconds,
        confusion=float(np.minimum(ref_count, hyp_count).sum() - matched) * seconds,
        reference=float(ref_count.sum()) * seconds,
    )


@dataclass(frozen=True)
class DiarizationReport:
    """Per-session DER counts and their pooled total."""

    sessions: dict[str, DiarizationErrors]
    collar: float = 0.0

    @property
    def total(self) -> DiarizationErrors:
        return sum(self.sessions.values(), DiarizationErrors())

    def to_dict(self) -> dict:
        return {
            "mode": "der",
            "collar": self.collar,
            "sessions": len(self.sessions),
            "summary": self.total.to_dict(),
            "per_session": {name: counts.to_dict() for name, counts in self.sessions.items()},
        }

    def format_table(self, per_session: bool = False) -> str:
        """A plain-text table: DER and its parts as percentages of the reference speech."""
        total = self.total
        width = max([len("session")] + [len(name) for name in self.sessions])

        def row(name: str, counts: DiarizationErrors) -> str:
            rate = "n/a" if counts.rate is None else f"{100 * counts.rate:.2f}"
            parts = (counts.missed, counts.false_alarm, counts.confusion)
            shares = " ".join(f"{100 * part / (counts.reference or 1.0):>8.2f}" for part in parts)
            return f"{name:<{width}} {counts.reference:>9.1f} {rate:>7} {shares}"

        lines = [
            f"{len(self.sessions)} sessions, {total.reference:.1f} s of reference speech, collar {self.collar:g} s",
            f"{'session':<{width}} {'speech s':>9} {'DER %':>7} {'miss %':>8} {'FA %':>8} {'conf %':>8}",
            row("all", total),
        ]
        if per_session:
            lines += [row(name, counts) for name, counts in self.sessions.items()]
        return "\n".join(lines)


def diarization_error(
    reference: Mapping[str, Iterable[TurnLike]],
    hypothesis: Mapping[str, Iterable[TurnLike]],
    collar: float = 0.0,
    partial: bool = False,
    max_missing_ratio: float = 0.1,
) -> DiarizationReport:
    """DER of every reference session against the hypothesis session of the same id. As in
    `score_sessions`: a session without hypothesis is all missed speech, with a warning, more than
    ``max_missing_ratio`` of them is an error, and a hypothesis session absent from the reference is
    an error unless ``partial``."""
    check_sessions(reference, hypothesis, partial, max_missing_ratio)
    sessions = {}
    for session_id, turns in reference.items():
        try:
            sessions[str(session_id)] = diarization_errors(turns, hypothesis.get(session_id, ()), collar)
        except ValueError as error:
            raise ValueError(f"session {session_id!r}: {error}") from error
    return DiarizationReport(sessions, collar)
