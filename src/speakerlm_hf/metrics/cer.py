"""CER: character error rate with speakers ignored."""

from __future__ import annotations

from collections.abc import Iterable

from .levenshtein import ErrorCounts, edit_counts
from .normalize import scoring_characters
from .turns import TurnLike, session_text

__all__ = ["cer"]


def _characters(side: str | Iterable[TurnLike]) -> str:
    if isinstance(side, str):
        return scoring_characters(side)
    return session_text(side)


def cer(
    reference: str | Iterable[TurnLike],
    hypothesis: str | Iterable[TurnLike],
    backend: str = "auto",
) -> ErrorCounts:
    """Character errors of one session, speakers ignored.

    Each side is a text or a list of turns; turns are concatenated in time order (by start
    time when every turn has one, else in list order) after normalisation.
    """
    return edit_counts(_characters(reference), _characters(hypothesis), backend=backend)
