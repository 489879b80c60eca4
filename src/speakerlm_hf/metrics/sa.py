"""saCER: speaker-attributed character error rate, speakers matched by registered name."""

from __future__ import annotations

from collections.abc import Iterable

from .cp import SpeakerErrorCounts
from .levenshtein import ErrorCounts, edit_counts
from .turns import TurnLike, speaker_texts

__all__ = ["sa_cer"]


def sa_cer(
    reference: Iterable[TurnLike],
    hypothesis: Iterable[TurnLike],
    backend: str = "auto",
) -> SpeakerErrorCounts:
    """saCER counts of one session: each reference speaker is scored against the hypothesis
    speaker of the same name (no permutation search); a name only in the hypothesis counts as
    insertions, one only in the reference as deletions."""
    ref, hyp = speaker_texts(reference), speaker_texts(hypothesis)
    total = ErrorCounts()
    pairs = []
    for name, text in ref.items():
        total += edit_counts(text, hyp.get(name, ""), backend=backend)
        pairs.append((name, name if name in hyp else None))
    for name, text in hyp.items():
        if name not in ref:
            total += ErrorCounts(0, 0, len(text), 0)
            pairs.append((None, name))
    return SpeakerErrorCounts.from_assignment(total, len(ref), len(hyp), tuple(pairs))
