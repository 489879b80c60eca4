"""Character-level edit distance with substitution / deletion / insertion counts.

The edit distance is the plain Levenshtein distance (each substitution, deletion and insertion
costs 1). Several alignments can reach it with different splits into substitutions (S),
deletions (D) and insertions (I); this module always reports the split of the alignment with
the most substitutions (equivalently the fewest insertions + deletions) among all minimum-cost
alignments, so the counts do not depend on the backend or on back-tracking order. It is found
in one pass with lexicographic weights: substitution ``W``, insertion and deletion ``W + 1``
with ``W > n + m``, whose optimum is ``errors * W + (I + D)``.

Two backends compute the same numbers: ``rapidfuzz`` (C++, used when installed) and a numpy
dynamic programme that is vectorised over all reference x hypothesis pairs at once and along
each row (the within-row insertion chain is a running minimum). The numpy one also takes a
mask of allowed substitutions, which the time-constrained metric needs.

A reference of length 0 has no error rate: ``ErrorCounts.rate`` is ``None`` then, as meeteval's
``ErrorRate.error_rate`` is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

try:
    from rapidfuzz import process as _rf_process
    from rapidfuzz.distance import Levenshtein as _rf_levenshtein
except ImportError:  # the numpy backend computes the same numbers
    _rf_levenshtein = None
    _rf_process = None

__all__ = [
    "ErrorCounts",
    "BACKENDS",
    "resolve_backend",
    "edit_distance",
    "edit_counts",
    "pairwise_distances",
    "pairwise_counts",
]

BACKENDS = ("auto", "rapidfuzz", "numpy")

# (R, stop - start, H, M) bool mask for reference rows start..stop-1: may reference character i
# be matched or substituted with hypothesis character j?
SubstitutionMask = Callable[[int, int], np.ndarray]
# Elements of the diagonal-cost block prepared at once (bounds memory on long texts).
_BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operation counts against a reference; add them to pool (errors / reference length)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    # The fields that pool by summation (subclasses add theirs).
    summed_fields: ClassVar[tuple[str, ...]] = (
        "substitutions",
        "deletions",
        "insertions",
        "reference_length",
    )

    def __post_init__(self) -> None:
        for name in self.summed_fields:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.substitutions + self.deletions > self.reference_length:
            raise ValueError(
                f"substitutions + deletions ({self.substitutions} + {self.deletions}) exceed "
                f"the reference length {self.reference_length}"
            )

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def hypothesis_length(self) -> int:
        return self.reference_length - self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        """errors / reference length; ``None`` for an empty reference (meeteval's convention)."""
        if self.reference_length == 0:
            return None
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        """Pooled counts; of the same subclass when both are, else plain ``ErrorCounts``."""
        if not isinstance(other, ErrorCounts):
            return NotImplemented
        pooled = type(self) if type(other) is type(self) else ErrorCounts
        return pooled(**{name: getattr(self, name) + getattr(other, name) for name in pooled.summed_fields})

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "errors": self.errors,
            **{name: getattr(self, name) for name in self.summed_fields},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorCounts:
        """Inverse of ``to_dict`` (the rate, errors and assignment are not read back)."""
        return cls(**{name: int(data[name]) for name in cls.summed_fields})


def resolve_backend(backend: str = "auto") -> str:
    """``"rapidfuzz"`` or ``"numpy"``; ``"auto"`` picks rapidfuzz when it is installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "numpy" if _rf_levenshtein is None else "rapidfuzz"
    if backend == "rapidfuzz" and _rf_levenshtein is None:
        raise ImportError("backend='rapidfuzz' needs the rapidfuzz package (pip install rapidfuzz)")
    return backend


def _counts_from_cost(cost: int, weight: int, n: int, m: int) -> ErrorCounts:
    errors, indels = divmod(int(cost), weight)
    insertions = (indels + m - n) // 2
    deletions = indels - insertions
    return ErrorCounts(errors - insertions - deletions, deletions, insertions, n)


def _trivial_counts(reference: str, hypothesis: str) -> ErrorCounts | None:
    if not reference or not hypothesis:
        return ErrorCounts(0, len(reference), len(hypothesis), len(reference))
    if reference == hypothesis:
        return ErrorCounts(0, 0, 0, len(reference))
    return None


def _code_matrix(texts: Sequence[str], width: int, pad: int) -> np.ndarray:
    codes = np.full((len(texts), width), pad, dtype=np.int64)
    for row, text in enumerate(texts):
        if text:
            codes[row, : len(text)] = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    return codes


def _lexicographic_costs(
    references: Sequence[str],
    hypotheses: Sequence[str],
    substitution_allowed: SubstitutionMask | None = None,
) -> tuple[np.ndarray, int]:
    """Lexicographic edit costs for every pair (R, H) and the weight ``W`` they use.

    Rows of the DP run over reference characters; each row is computed for all pairs and all
    hypothesis columns at once. Columns beyond a hypothesis' length and rows beyond a
    reference's length are padding: no cell that is read back depends on them. The diagonal
    costs of a block of rows are prepared in one go, which keeps the per-row work to a few
    in-place numpy calls.
    """
    ref_lengths = [len(text) for text in references]
    hyp_lengths = [len(text) for text in hypotheses]
    max_ref, max_hyp = max(ref_lengths, default=0), max(hyp_lengths, default=0)
    weight = max_ref + max_hyp + 1
    indel = weight + 1
    # Larger than any path cost, so a forbidden diagonal step is never taken.
    forbidden = indel * (max_ref + max_hyp + 2)
    ref_codes = _code_matrix(references, max_ref, pad=-1)
    hyp_codes = _code_matrix(hypotheses, max_hyp, pad=-2)
    shape = (len(references), len(hypotheses), max_hyp + 1)
    insertion_costs = np.arange(max_hyp + 1, dtype=np.int64) * indel
    row = np.broadcast_to(insertion_costs, shape).copy()
    final = np.empty(shape, dtype=np.int64)
    finishing: dict[int, list[int]] = {}
    for r, length in enumerate(ref_lengths):
        finishing.setdefault(length, []).append(r)
    if 0 in finishing:
        final[finishing[0]] = row[finishing[0]]
    deletion = np.empty(shape, dtype=np.int64)
    diagonal = np.empty(shape[:-1] + (max_hyp,), dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // max(1, len(references) * len(hypotheses) * max_hyp))
    for first in range(0, max_ref, block):
        last = min(max_ref, first + block)
        # (R, rows, H, M): W for a mismatch, 0 for a match, `forbidden` where not allowed.
        steps = (ref_codes[:, first:last, None, None] != hyp_codes[None, None]) * weight
        if substitution_allowed is not None:
            steps[~substitution_allowed(first, last)] = forbidden
        for i in range(first, last):
            np.add(row[..., :-1], steps[:, i - first], out=diagonal)
            np.add(row, indel, out=deletion)
            np.minimum(deletion[..., 1:], diagonal, out=deletion[..., 1:])
            # Insertions chain along the row: D[j] = min_k (C[k] + (j - k) * indel).
            deletion -= insertion_costs
            np.minimum.accumulate(deletion, axis=-1, out=row)
            row += insertion_costs
            if i + 1 in finishing:
                final[finishing[i + 1]] = row[finishing[i + 1]]
    hyp_index = np.asarray(hyp_lengths, dtype=np.int64)
    costs = final[:, np.arange(len(hypotheses)), hyp_index] if len(hypotheses) else final[..., 0]
    return costs, weight


def _numpy_pairwise_counts(
    references: Sequence[str],
    hypotheses: Sequence[str],
    substitution_allowed: SubstitutionMask | None = None,
) -> list[list[ErrorCounts]]:
    costs, weight = _lexicographic_costs(references, hypotheses, substitution_allowed)
    return [
        [_counts_from_cost(costs[r, h], weight, len(ref), len(hyp)) for h, hyp in enumerate(hypotheses)]
        for r, ref in enumerate(references)
    ]


def edit_counts(reference: str, hypothesis: str, backend: str = "auto") -> ErrorCounts:
    """S/D/I counts of the minimum-cost alignment with the most substitutions (see module doc)."""
    trivial = _trivial_counts(reference, hypothesis)
    if trivial is not None:
        return trivial
    if resolve_backend(backend) == "rapidfuzz":
        weight = len(reference) + len(hypothesis) + 1
        cost = _rf_levenshtein.distance(reference, hypothesis, weights=(weight + 1, weight + 1, weight))
        return _counts_from_cost(cost, weight, len(reference), len(hypothesis))
    return _numpy_pairwise_counts([reference], [hypothesis])[0][0]


def edit_distance(reference: str, hypothesis: str, backend: str = "auto") -> int:
    """Levenshtein distance between two character sequences."""
    if resolve_backend(backend) == "rapidfuzz":
        return int(_rf_levenshtein.distance(reference, hypothesis))
    return edit_counts(reference, hypothesis, backend="numpy").errors


def pairwise_distances(
    references: Sequence[str], hypotheses: Sequence[str], backend: str = "auto"
) -> np.ndarray:
    """Levenshtein distance of every reference (rows) against every hypothesis (columns)."""
    if not references or not hypotheses:
        return np.zeros((len(references), len(hypotheses)), dtype=np.int64)
    if resolve_backend(backend) == "rapidfuzz":
        return _rf_process.cdist(references, hypotheses, scorer=_rf_levenshtein.distance, dtype=np.int64)
    counts = _numpy_pairwise_counts(references, hypotheses)
    return np.array([[c.errors for c in row] for row in counts], dtype=np.int64)


def pairwise_counts(
    references: Sequence[str],
    hypotheses: Sequence[str],
    substitution_allowed: SubstitutionMask | None = None,
) -> list[list[ErrorCounts]]:
    """``edit_counts`` of every pair, with the numpy backend.

    ``substitution_allowed(start, stop)`` returns a bool array (R, stop - start, H, max
    hypothesis length): whether reference character ``i`` in ``start..stop-1`` may be matched
    or substituted with each hypothesis character; where it may not, the two can only be a
    deletion plus an insertion.
    """
    return _numpy_pairwise_counts(references, hypotheses, substitution_allowed)
