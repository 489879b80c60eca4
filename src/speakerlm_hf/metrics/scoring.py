"""Scoring many sessions: per-session results, pooled rates, Δ and speaker-count error.

Pooling follows meeteval: error counts and reference lengths are summed over sessions and
divided once (never an average of per-session rates). Δ is the speaker-attributed rate minus
the CER, per session and pooled; it is ``None`` when the reference has no characters.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .cer import cer
from .cp import SpeakerErrorCounts, cp_cer
from .levenshtein import ErrorCounts
from .sa import sa_cer
from .tc import tcp_cer
from .turns import TurnLike

__all__ = [
    "MODES",
    "SessionScore",
    "ScoreReport",
    "check_sessions",
    "score_session",
    "score_sessions",
]

MODES = ("cp", "sa", "tcp")
_METRIC_NAMES = {"cp": "cpCER", "sa": "saCER", "tcp": "tcpCER"}


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


@dataclass(frozen=True)
class SessionScore:
    """One session: the CER, the speaker-attributed counts of the chosen mode, and Δ."""

    session_id: str
    mode: str
    cer: ErrorCounts
    attributed: SpeakerErrorCounts

    @property
    def delta(self) -> float | None:
        """Δ = attributed rate − CER (Δcp, Δsa or Δtcp)."""
        return _difference(self.attributed.rate, self.cer.rate)

    @property
    def speaker_count_error(self) -> int:
        """Hypothesis speakers minus reference speakers (signed)."""
        return self.attributed.hypothesis_speakers - self.attributed.reference_speakers

    def to_dict(self) -> dict[str, Any]:
        return {
            "cer": self.cer.to_dict(),
            _METRIC_NAMES[self.mode]: self.attributed.to_dict(),
            "delta": self.delta,
            "speaker_count_error": self.speaker_count_error,
        }


@dataclass(frozen=True)
class ScoreReport:
    """Per-session scores and their pooled totals for one mode."""

    mode: str
    sessions: tuple[SessionScore, ...]
    collar: float | None = None

    @property
    def metric_name(self) -> str:
        return _METRIC_NAMES[self.mode]

    @property
    def cer(self) -> ErrorCounts:
        return sum((s.cer for s in self.sessions), ErrorCounts())

    @property
    def attributed(self) -> SpeakerErrorCounts:
        return sum((s.attributed for s in self.sessions), SpeakerErrorCounts())

    @property
    def delta(self) -> float | None:
        return _difference(self.attributed.rate, self.cer.rate)

    @property
    def speaker_count_error(self) -> float | None:
        """Mean over sessions of |hypothesis speakers − reference speakers|."""
        if not self.sessions:
            return None
        return sum(abs(s.speaker_count_error) for s in self.sessions) / len(self.sessions)

    @property
    def speaker_count_accuracy(self) -> float | None:
        """Fraction of sessions whose hypothesis has exactly the reference's number of speakers."""
        if not self.sessions:
            return None
        return sum(s.speaker_count_error == 0 for s in self.sessions) / len(self.sessions)

    def to_dict(self) -> dict[str, Any]:
        attributed = self.attributed.to_dict()
        return {
            "mode": self.mode,
            "collar": self.collar,
            "sessions": len(self.sessions),
            "summary": {
                "cer": self.cer.to_dict(),
                self.metric_name: attributed,
                "delta": self.delta,
                "speaker_count_error": self.speaker_count_error,
                "speaker_count_accuracy": self.speaker_count_accuracy,
            },
            "per_session": {s.session_id: s.to_dict() for s in self.sessions},
        }

    def format_table(self, per_session: bool = False) -> str:
        """A plain-text table of the pooled numbers (and one row per session if asked)."""
        name, delta = self.metric_name, "Δ" + self.mode
        cer, attributed = self.cer, self.attributed
        lines = [
            f"{len(self.sessions)} sessions, {cer.reference_length} reference characters"
            + (f", collar {self.collar:g} s" if self.mode == "tcp" else ""),
            f"{'metric':<8} {'rate %':>8} {'errors':>8} {'sub':>8} {'del':>8} {'ins':>8}",
        ]
        for label, counts in (("CER", cer), (name, attributed)):
            lines.append(
                f"{label:<8} {_percent(counts.rate):>8} {counts.errors:>8} {counts.substitutions:>8} "
                f"{counts.deletions:>8} {counts.insertions:>8}"
            )
        lines.append(f"{delta:<8} {_percent(self.delta):>8}")
        count_error = self.speaker_count_error
        lines.append(
            f"speakers: reference {attributed.reference_speakers}, hypothesis {attributed.hypothesis_speakers}, "
            f"missed {attributed.missed_speakers}, false alarm {attributed.false_alarm_speakers}; "
            f"count error {'n/a' if count_error is None else f'{count_error:.3f}'} per session, "
            f"exact count in {_percent(self.speaker_count_accuracy)} % of sessions"
        )
        if per_session:
            width = max([len("session")] + [len(s.session_id) for s in self.sessions])
            lines.append("")
            lines.append(
                f"{'session':<{width}} {'chars':>7} {'CER %':>8} {name + ' %':>10} {delta:>8} {'ref spk':>7} {'hyp spk':>7}"
            )
            for s in self.sessions:
                lines.append(
                    f"{s.session_id:<{width}} {s.cer.reference_length:>7} {_percent(s.cer.rate):>8} "
                    f"{_percent(s.attributed.rate):>10} {_percent(s.delta):>8} "
                    f"{s.attributed.reference_speakers:>7} {s.attributed.hypothesis_speakers:>7}"
                )
        return "\n".join(lines)


def score_session(
    reference: Iterable[TurnLike],
    hypothesis: Iterable[TurnLike],
    mode: str = "cp",
    collar: float = 5.0,
    session_id: str = "",
    backend: str = "auto",
) -> SessionScore:
    """CER and the ``mode`` metric (``cp``, ``sa`` or ``tcp``) of one session."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    reference, hypothesis = list(reference), list(hypothesis)
    try:
        if mode == "cp":
            attributed = cp_cer(reference, hypothesis, backend=backend)
        elif mode == "sa":
            attributed = sa_cer(reference, hypothesis, backend=backend)
        else:
            attributed = tcp_cer(reference, hypothesis, collar=collar)
        return SessionScore(session_id, mode, cer(reference, hypothesis, backend=backend), attributed)
    except (TypeError, ValueError) as error:
        if not session_id:
            raise
        raise type(error)(f"session {session_id!r}: {error}") from error


def check_sessions(
    reference: Mapping, hypothesis: Mapping, partial: bool = False, max_missing_ratio: float = 0.1
) -> None:
    """A hypothesis session absent from the reference is an error unless `partial`; a reference
    session missing from the hypothesis is scored as an empty hypothesis, with a warning, and more
    than `max_missing_ratio` of them is an error (as in meeteval)."""
    extra = sorted(set(hypothesis) - set(reference))
    if extra and not partial:
        raise ValueError(
            f"{len(extra)} hypothesis session(s) are not in the reference, e.g. {extra[:5]}; "
            "pass partial=True to score only the reference's sessions"
        )
    missing = sorted(set(reference) - set(hypothesis))
    if missing:
        message = (
            f"{len(missing)} of {len(reference)} reference session(s) have no hypothesis, e.g. {missing[:5]}"
        )
        if len(missing) / len(reference) > max_missing_ratio:
            raise ValueError(f"{message}; more than {max_missing_ratio:.0%} is treated as a mistake")
        warnings.warn(f"{message}; they are scored as empty hypotheses", stacklevel=3)


def score_sessions(
    reference: Mapping[str, Iterable[TurnLike]],
    hypothesis: Mapping[str, Iterable[TurnLike]],
    mode: str = "cp",
    collar: float = 5.0,
    backend: str = "auto",
    partial: bool = False,
    max_missing_ratio: float = 0.1,
) -> ScoreReport:
    """Score every reference session against the hypothesis session of the same id.

    As in meeteval: a reference session missing from the hypothesis is scored against an
    empty hypothesis (with a warning), but more than ``max_missing_ratio`` of them is an
    error; a hypothesis session absent from the reference is an error unless ``partial``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not reference:
        raise ValueError("the reference holds no session")
    check_sessions(reference, hypothesis, partial, max_missing_ratio)
    sessions = tuple(
        score_session(turns, hypothesis.get(session_id, ()), mode, collar, str(session_id), backend)
        for session_id, turns in reference.items()
    )
    return ScoreReport(mode, sessions, collar if mode == "tcp" else None)
