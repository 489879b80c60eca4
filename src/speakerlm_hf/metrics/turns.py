"""The turn: one speaker's stretch of text, with optional times, and how turns are grouped."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .normalize import scoring_characters

__all__ = [
    "Turn",
    "TurnLike",
    "as_turns",
    "has_times",
    "require_times",
    "time_ordered",
    "speaker_texts",
    "session_text",
]


@dataclass(frozen=True)
class Turn:
    """One turn of a transcript by roles. Times are in seconds and optional."""

    speaker: str
    text: str
    start: float | None = None
    end: float | None = None
    session_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON turn-list form: ``speaker`` and ``text``, plus times / session when set."""
        item: dict[str, Any] = {"speaker": self.speaker, "text": self.text}
        if self.start is not None:
            item["start"] = self.start
        if self.end is not None:
            item["end"] = self.end
        if self.session_id is not None:
            item["session_id"] = self.session_id
        return item


TurnLike = Turn | Mapping[str, Any]


def _as_turn(item: TurnLike, position: int) -> Turn:
    if isinstance(item, Turn):
        return item
    if not isinstance(item, Mapping):
        raise TypeError(f"turn {position} must be a Turn or a mapping, got {type(item).__name__}")
    missing = [key for key in ("speaker", "text") if key not in item]
    if missing:
        raise ValueError(f"turn {position} ({dict(item)!r}) lacks the key(s) {missing}")
    start, end = item.get("start"), item.get("end")
    session_id = item.get("session_id")
    return Turn(
        speaker=str(item["speaker"]),
        text=str(item["text"]),
        start=None if start is None else float(start),
        end=None if end is None else float(end),
        session_id=None if session_id is None else str(session_id),
    )


def as_turns(items: Iterable[TurnLike]) -> list[Turn]:
    """Turns from ``Turn`` objects or dicts with ``speaker``, ``text`` and optional ``start``/``end``."""
    if isinstance(items, (str, bytes)):
        raise TypeError("expected a list of turns, got a string")
    return [_as_turn(item, position) for position, item in enumerate(items)]


def has_times(turns: list[Turn]) -> bool:
    """True when every turn carries a start and an end time."""
    return all(turn.start is not None and turn.end is not None for turn in turns)


def require_times(turns: list[Turn], side: str, metric: str) -> None:
    """Raise ValueError naming the first of `side`'s turns without a start or an end, which `metric` needs."""
    if not has_times(turns):
        missing = next(turn for turn in turns if turn.start is None or turn.end is None)
        raise ValueError(
            f"{metric} needs start and end times on every {side} turn; this one has none: {missing}"
        )


def time_ordered(turns: list[Turn]) -> list[Turn]:
    """Turns sorted by start time (stable) when every turn has one; otherwise in list order."""
    if turns and all(turn.start is not None for turn in turns):
        return sorted(turns, key=lambda turn: turn.start)
    return list(turns)


def speaker_texts(turns: Iterable[TurnLike]) -> dict[str, str]:
    """Each speaker's scored characters, concatenated in time order.

    Speakers whose turns hold no scored character are left out: they cannot change any
    error count, and leaving them out keeps speaker counts about speakers who said something.
    """
    texts: dict[str, list[str]] = {}
    for turn in time_ordered(as_turns(turns)):
        texts.setdefault(turn.speaker, []).append(scoring_characters(turn.text))
    joined = {speaker: "".join(parts) for speaker, parts in texts.items()}
    return {speaker: text for speaker, text in joined.items() if text}


def session_text(turns: Iterable[TurnLike]) -> str:
    """All scored characters of a session in time order, speakers ignored."""
    return "".join(scoring_characters(turn.text) for turn in time_ordered(as_turns(turns)))
