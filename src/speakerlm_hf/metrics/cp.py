"""cpCER: concatenated minimum-permutation character error rate.

Each speaker's text is concatenated in time order on both sides; reference and hypothesis
speakers are paired by the Hungarian assignment that minimises the total character errors.
A hypothesis speaker left without a partner counts as insertions, a reference speaker left
without one as deletions (the padded square cost matrix of meeteval's cpWER, so both find the
same optimum).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from .levenshtein import ErrorCounts, edit_counts, pairwise_distances
from .turns import TurnLike, speaker_texts

__all__ = ["SpeakerErrorCounts", "cp_cer", "minimum_permutation_counts"]

Assignment = tuple[tuple["str | None", "str | None"], ...]


@dataclass(frozen=True)
class SpeakerErrorCounts(ErrorCounts):
    """Error counts of a speaker-attributed metric plus what the speaker pairing did.

    ``assignment`` pairs (reference speaker, hypothesis speaker); ``None`` marks a speaker
    left without a partner. Speakers are counted only when they have scored characters.
    Adding two results pools the counts and drops the assignment.
    """

    reference_speakers: int = 0
    hypothesis_speakers: int = 0
    missed_speakers: int = 0
    false_alarm_speakers: int = 0
    assignment: Assignment = field(default=(), compare=False)

    summed_fields: ClassVar[tuple[str, ...]] = ErrorCounts.summed_fields + (
        "reference_speakers",
        "hypothesis_speakers",
        "missed_speakers",
        "false_alarm_speakers",
    )

    @classmethod
    def from_assignment(
        cls, counts: ErrorCounts, reference_speakers: int, hypothesis_speakers: int, assignment: Assignment
    ) -> SpeakerErrorCounts:
        """Counts plus the pairing; unpaired speakers are the missed and false-alarm ones."""
        return cls(
            counts.substitutions,
            counts.deletions,
            counts.insertions,
            counts.reference_length,
            reference_speakers=reference_speakers,
            hypothesis_speakers=hypothesis_speakers,
            missed_speakers=sum(hyp is None for _, hyp in assignment),
            false_alarm_speakers=sum(ref is None for ref, _ in assignment),
            assignment=tuple(assignment),
        )

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.assignment:
            data["assignment"] = [list(pair) for pair in self.assignment]
        return data


def minimum_permutation_counts(
    reference: dict[str, str],
    hypothesis: dict[str, str],
    distances: np.ndarray,
    pair_counts: Callable[[int, int], ErrorCounts],
) -> SpeakerErrorCounts:
    """Pair speakers by the Hungarian assignment on ``distances`` and total the counts.

    ``distances[r, h]`` is the error count of reference speaker ``r`` against hypothesis
    speaker ``h`` (dict order); ``pair_counts(r, h)`` gives the S/D/I of an assigned pair.
    """
    ref_names, hyp_names = list(reference), list(hypothesis)
    ref_texts, hyp_texts = list(reference.values()), list(hypothesis.values())
    size = max(len(ref_names), len(hyp_names))
    # Padding rows / columns stand for "no partner": the whole text is inserted / deleted.
    cost = np.zeros((size, size), dtype=np.int64)
    cost[: len(ref_names), : len(hyp_names)] = distances
    cost[len(ref_names) :, : len(hyp_names)] = [len(text) for text in hyp_texts]
    cost[: len(ref_names), len(hyp_names) :] = np.array([len(text) for text in ref_texts])[:, None]
    rows, cols = linear_sum_assignment(cost) if size else (np.empty(0, int), np.empty(0, int))

    total = ErrorCounts()
    pairs = []
    for r, h in zip(rows.tolist(), cols.tolist(), strict=True):
        if r < len(ref_names) and h < len(hyp_names):
            total += pair_counts(r, h)
            pairs.append((ref_names[r], hyp_names[h]))
        elif r < len(ref_names):
            total += ErrorCounts(0, len(ref_texts[r]), 0, len(ref_texts[r]))
            pairs.append((ref_names[r], None))
        elif h < len(hyp_names):
            total += ErrorCounts(0, 0, len(hyp_texts[h]), 0)
            pairs.append((None, hyp_names[h]))
    return SpeakerErrorCounts.from_assignment(total, len(ref_names), len(hyp_names), tuple(pairs))


def cp_cer(
    reference: Iterable[TurnLike],
    hypothesis: Iterable[TurnLike],
    backend: str = "auto",
) -> SpeakerErrorCounts:
    """cpCER counts of one session (lists of turns); ``.rate`` is the cpCER."""
    ref, hyp = speaker_texts(reference), speaker_texts(hypothesis)
    ref_texts, hyp_texts = list(ref.values()), list(hyp.values())
    distances = pairwise_distances(ref_texts, hyp_texts, backend=backend)
    return minimum_permutation_counts(
        ref, hyp, distances, lambda r, h: edit_counts(ref_texts[r], hyp_texts[h], backend=backend)
    )
