"""Edit distance backends against a plain-Python dynamic programme; normalisation properties."""

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import speakerlm_hf.metrics.levenshtein as levenshtein
from speakerlm_hf.metrics import (
    ErrorCounts,
    edit_counts,
    normalize_text,
    pairwise_counts,
    pairwise_distances,
    scoring_characters,
    tcp_cer,
)

SHORT_TEXT = st.text(alphabet="ab你好c", max_size=9)
FAST = settings(max_examples=300, deadline=None, database=None)


def reference_counts(reference: str, hypothesis: str) -> ErrorCounts:
    """Textbook DP over (errors, insertions + deletions, S, D, I) tuples, compared lexicographically."""
    n, m = len(reference), len(hypothesis)
    table = [[(0, 0, 0, 0, 0)] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        for j in range(m + 1):
            options = []
            if i:
                e, x, s, d, k = table[i - 1][j]
                options.append((e + 1, x + 1, s, d + 1, k))
            if j:
                e, x, s, d, k = table[i][j - 1]
                options.append((e + 1, x + 1, s, d, k + 1))
            if i and j:
                e, x, s, d, k = table[i - 1][j - 1]
                miss = int(reference[i - 1] != hypothesis[j - 1])
                options.append((e + miss, x, s + miss, d, k))
            if options:
                table[i][j] = min(options)
    _, _, s, d, k = table[n][m]
    return ErrorCounts(s, d, k, n)


@FAST
@given(reference=SHORT_TEXT, hypothesis=SHORT_TEXT)
def test_backends_equal_textbook_dp(reference, hypothesis):
    expected = reference_counts(reference, hypothesis)
    assert edit_counts(reference, hypothesis, backend="rapidfuzz") == expected
    assert edit_counts(reference, hypothesis, backend="numpy") == expected


@settings(max_examples=60, deadline=None, database=None)
@given(references=st.lists(SHORT_TEXT, max_size=4), hypotheses=st.lists(SHORT_TEXT, max_size=4))
def test_pairwise_matrices(references, hypotheses):
    counts = pairwise_counts(references, hypotheses)
    expected = [[reference_counts(r, h) for h in hypotheses] for r in references]
    assert counts == expected
    errors = np.array([[c.errors for c in row] for row in expected], dtype=np.int64).reshape(
        len(references), len(hypotheses)
    )
    np.testing.assert_array_equal(pairwise_distances(references, hypotheses, backend="rapidfuzz"), errors)
    np.testing.assert_array_equal(pairwise_distances(references, hypotheses, backend="numpy"), errors)


@settings(max_examples=60, deadline=None, database=None)
@given(reference=SHORT_TEXT.filter(bool), hypothesis=SHORT_TEXT.filter(bool))
def test_forbidding_every_substitution_leaves_only_insertions_and_deletions(reference, hypothesis):
    ((counts,),) = pairwise_counts(
        [reference],
        [hypothesis],
        substitution_allowed=lambda first, last: np.zeros((1, last - first, 1, len(hypothesis)), bool),
    )
    assert counts == ErrorCounts(0, len(reference), len(hypothesis), len(reference))


def test_long_strings_agree_between_backends():
    rng = np.random.default_rng(0)
    alphabet = np.array(list("的一是在不了有和人这中大为上个国我以要他"))
    reference = "".join(rng.choice(alphabet, 700))
    hypothesis = "".join(rng.choice(alphabet, 650))
    assert edit_counts(reference, hypothesis, backend="numpy") == edit_counts(
        reference, hypothesis, backend="rapidfuzz"
    )


@FAST
@given(text=st.text(max_size=30))
def test_normalisation_is_idempotent(text):
    normalized = normalize_text(text)
    assert normalize_text(normalized) == normalized
    assert scoring_characters(normalized) == scoring_characters(text)
    assert scoring_characters(text) == normalized.replace(" ", "")


def test_row_blocks_give_the_same_counts(monkeypatch):
    rng = np.random.default_rng(1)
    references = ["".join(rng.choice(list("abcd"), size)) for size in (0, 5, 17, 30)]
    hypotheses = ["".join(rng.choice(list("abcd"), size)) for size in (3, 0, 25)]
    expected = [[reference_counts(r, h) for h in hypotheses] for r in references]
    reference = [
        {"speaker": f"R{k}", "text": text, "start": 2.0 * k, "end": 2.0 * k + 3}
        for k, text in enumerate(references)
    ]
    hypothesis = [
        {"speaker": f"H{k}", "text": text, "start": 1.5 * k, "end": 1.5 * k + 4}
        for k, text in enumerate(hypotheses)
    ]
    whole = tcp_cer(reference, hypothesis, collar=0.5)
    monkeypatch.setattr(levenshtein, "_BLOCK_ELEMENTS", 50)  # a few rows per block
    assert pairwise_counts(references, hypotheses) == expected
    assert tcp_cer(reference, hypothesis, collar=0.5) == whole


def test_works_without_rapidfuzz():
    code = (
        "import sys; sys.modules['rapidfuzz'] = None\n"
        "from speakerlm_hf.metrics import cp_cer, edit_counts\n"
        "from speakerlm_hf.metrics.levenshtein import resolve_backend\n"
        "counts = cp_cer([{'speaker': 'A', 'text': 'kitten'}], [{'speaker': 'x', 'text': 'sitting'}])\n"
        "print(resolve_backend(), counts.substitutions, counts.deletions, counts.insertions)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["numpy", "2", "0", "1"]
