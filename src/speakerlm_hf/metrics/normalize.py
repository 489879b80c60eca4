"""Text normalisation applied to reference and hypothesis before scoring.

Steps, in order:

1. Punctuation (Unicode categories ``P*``), symbols (``S*``) and control / format characters
   (``Cc``, ``Cf``, e.g. zero-width spaces) are deleted, Chinese and English alike, full-width
   ones included. A letter-like symbol goes as a whole (``℃``, ``™``, ``㎏`` are symbols).
2. Unicode NFKC: full-width forms become half-width (``ＡＢ１２`` -> ``AB12``, the ideographic
   space U+3000 -> a space), compatibility characters are unified; whatever punctuation NFKC
   produces is deleted as in step 1.
3. Case folding (``str.casefold``), then NFKC once more where folding undid it.
4. Whitespace runs collapse to one space (``normalize_text``) or vanish entirely
   (``scoring_characters``).

Deleting punctuation before NFKC also keeps the common case fast: Chinese text whose only
non-NFKC characters are full-width punctuation skips NFKC's slow path.

The scored unit is the character: every non-whitespace character left after normalisation
counts once, for Chinese and English text alike, so ``"Hello, World!"`` is scored as the ten
characters ``helloworld`` and spaces are never errors.
"""

from __future__ import annotations

import unicodedata

__all__ = ["normalize_text", "scoring_characters"]


class _CharacterTable(dict):
    """``str.translate`` table filled on first sight of each code point (C-speed on hits)."""

    def __init__(self, whitespace: str | None) -> None:
        super().__init__()
        self._whitespace = whitespace

    def __missing__(self, code: int) -> str | None:
        char = chr(code)
        category = unicodedata.category(char)
        if char.isspace():
            value = self._whitespace
        elif category[0] in "PS" or category in ("Cc", "Cf"):
            value = None
        else:
            value = char
        self[code] = value
        return value


_KEEP_SPACES = _CharacterTable(" ")
_DROP_SPACES = _CharacterTable(None)


def _nfkc(text: str, table: _CharacterTable) -> str:
    if unicodedata.is_normalized("NFKC", text):
        return text
    return unicodedata.normalize("NFKC", text).translate(table)


def _normalize(text: str, table: _CharacterTable) -> str:
    # Case folding can undo NFKC (e.g. U+01F0 folds to j + combining caron), hence NFKC again.
    return _nfkc(_nfkc(text.translate(table), table).casefold(), table)


def normalize_text(text: str) -> str:
    """Normalise ``text`` for scoring, keeping single spaces between words (for display)."""
    return " ".join(_normalize(text, _KEEP_SPACES).split())


def scoring_characters(text: str) -> str:
    """The characters that are scored: ``normalize_text`` with all whitespace removed."""
    return _normalize(text, _DROP_SPACES)
