"""Constrained decoding of the transcript's speaker labels.

Every line of a transcript by roles starts with a label (`Lucy: text`, `[1.2-3.4] spk0: text`).
A model may invent a label that names nobody: a name it saw in training but that was not
registered, or `spk3` for the second voice of the recording. `SpeakerLabelConstraint` lets
`generate` write, at the start of each line, only

- one of the recording's registered names, or
- an anonymous label `spkK` that is already in use, or the next free one (`spk0`, `spk1`, ... in
  order of first appearance, as the target format numbers them),

A line starts with a `[start-end]` timestamp exactly when the prompt asked for turn times; the
times and the text of the turns are left to the model, except that it never writes a special token
other than its end of turn (an audio placeholder in the answer would break the next step). It
works on the tokens' bytes, so a label may be spelt with any of the tokenizer's ways of cutting it,
and names in any script.

Remote code: shipped to the Hub next to the model, so it imports only torch, transformers and the
standard library.
"""

from __future__ import annotations

import bisect
import re
import weakref
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor
from transformers.convert_slow_tokenizer import bytes_to_unicode

ANONYMOUS_IN_TEXT = re.compile(rb"(?m)^(?:\[[^\]\n]*\][ ]*)?(spk\d+):")
NEWLINE = b"\n"


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id stands for; None for special and added tokens.

    Byte-level BPE tokenizers (Qwen's, SpeakerLM-Tiny's) write bytes as printable characters,
    which are mapped back; other tokenizers' tokens are decoded one by one.
    """
    decoder = {character: byte for byte, character in bytes_to_unicode().items()}
    special = {token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    special |= set(tokenizer.all_special_tokens)
    vocab = tokenizer.get_vocab()
    pieces: list[bytes | None] = [None] * (max(vocab.values()) + 1)
    byte_level = all(ch in decoder for token in vocab if token not in special for ch in token)
    for token, index in vocab.items():
        if token in special:
            continue
        if byte_level:
            pieces[index] = bytes(decoder[ch] for ch in token)
        else:
            pieces[index] = tokenizer.decode([index]).encode("utf-8")
    return pieces


class LabelVocabulary:
    """A tokenizer's tokens as bytes, indexed for the label constraint; built once per tokenizer."""

    def __init__(self, tokenizer):
        self.pieces = token_bytes(tokenizer)
        self.ids_by_bytes: dict[bytes, list[int]] = {}
        for index, piece in enumerate(self.pieces):
            if piece:
                self.ids_by_bytes.setdefault(piece, []).append(index)
        self.sorted_pieces = sorted(self.ids_by_bytes)
        # Tokens that end a line: the part after their last newline starts the next one.
        self.line_breaks = [
            (index, piece.rsplit(NEWLINE, 1)[1])
            for index, piece in enumerate(self.pieces)
            if piece and NEWLINE in piece
        ]
        self.special = [index for index, piece in enumerate(self.pieces) if piece is None]
        # The special tokens that end a transcript: the model may stop between turns, never inside a label.
        vocab = tokenizer.get_vocab()
        stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        stops |= {vocab.get(token) for token in ("<|im_end|>", "<|endoftext|>")}
        self.stops = sorted(i for i in stops if i is not None)

    def starting_with(self, prefix: bytes) -> list[int]:
        """Ids of the tokens whose bytes start with `prefix`."""
        first = bisect.bisect_left(self.sorted_pieces, prefix)
        found = []
        for piece in self.sorted_pieces[first:]:
            if not piece.startswith(prefix):
                break
            found += self.ids_by_bytes[piece]
        return found


_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def label_vocabulary(tokenizer) -> LabelVocabulary:
    """The tokenizer's `LabelVocabulary`, built on first use and kept while the tokenizer lives."""
    try:
        return _VOCABULARIES[tokenizer]
    except KeyError:
        vocabulary = _VOCABULARIES[tokenizer] = LabelVocabulary(tokenizer)
        return vocabulary
    except TypeError:  # not weakly referable
        return LabelVocabulary(tokenizer)


class SpeakerLabelConstraint(LogitsProcessor):
    """A `LogitsProcessor` that keeps every turn's label to the registered names and the anonymous
    labels in order of first appearance (see the module's docstring).

    Args:
        tokenizer_or_vocabulary: the model's tokenizer (its `LabelVocabulary` is built on first
            use and reused) or a `LabelVocabulary`.
        names: the registered names of each recording of the batch (empty for No-Regist), or one
            list for every recording.
        prompt_length: length of the prompt in `input_ids` (generation starts after it).
        batch_size: recordings in the batch when `names` is one list for all.
        anonymous: also allow the `spkK` labels (the pipeline's partial registration); with
            `False` and names registered, only the names are allowed.
        timestamps: the prompt asked for turn times: every line starts with its `[start-end]`
            (left to the model), then the label; without, no line starts with a timestamp.
        eos_token_id: the generation config's end ids, besides the tokenizer's end of turn and
            padding; other special tokens (placeholders, chat markers) are never written.

    One instance serves one `generate` call. With beam search or several returned sequences, the
    rows of one recording follow each other, as `generate` lays them out.
    """

    def __init__(
        self,
        tokenizer_or_vocabulary,
        names: Sequence[Sequence[str]] | Sequence[str],
        prompt_length: int,
        batch_size: int | None = None,
        anonymous: bool = True,
        timestamps: bool = False,
        eos_token_id: int | Sequence[int] | None = None,
    ):
        if names and all(isinstance(name, str) for name in names):
            names = [list(names)] * (batch_size or 1)
        elif not names:
            names = [[]] * (batch_size or 1)
        self.names = [[name.encode("utf-8") for name in row] for row in names]
        self.prompt_length = prompt_length
        self.anonymous = anonymous
        self.timestamps = timestamps
        vocabulary = tokenizer_or_vocabulary
        # Duck-typed: a Hub folder's processor brings its own copy of this module.
        self.vocabulary = vocabulary if hasattr(vocabulary, "line_breaks") else label_vocabulary(vocabulary)
        self._bad_breaks: dict[tuple[tuple[bytes, ...], torch.device], torch.Tensor] = {}
        self._forbidden: dict[tuple[int, torch.device], torch.Tensor] = {}
        extra = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or ())
        self.stops = set(self.vocabulary.stops) | set(extra)

    # -- labels -----------------------------------------------------------------------------
    def targets(self, row: int, generated: bytes) -> tuple[bytes, ...]:
        """The `label:` strings row `row` may start a line with, given its text so far."""
        names = self.names[row]
        labels = [name + b":" for name in names]
        if self.anonymous or not names:
            used = {int(m[3:]) for m in ANONYMOUS_IN_TEXT.findall(generated)}
            labels += [b"spk%d:" % k for k in range(len(used) + 1)]
        return tuple(labels)

    @staticmethod
    def line_state(line: bytes) -> tuple[str, bytes, bool]:
        """The state of a line so far: ("stamp", b"", True) inside its timestamp; ("label", the
        label's bytes so far, whether a timestamp came first); ("text", its `label:`, stamped)."""
        stamped = line.startswith(b"[")
        if stamped:
            close = line.find(b"]")
            if close < 0:
                return "stamp", b"", True
            line = line[close + 1 :].lstrip(b" ")
        colon = line.find(b":")
        if colon >= 0:
            return "text", line[: colon + 1], stamped
        return "label", line, stamped

    def valid_line_start(self, start: bytes, targets: tuple[bytes, ...]) -> bool:
        """Whether a line may begin with `start` (the tail of a token that ends the previous line)."""
        if not start:
            return True
        state, label, stamped = self.line_state(start)
        if stamped != self.timestamps:
            return False
        if state == "label":
            return any(t.startswith(label) for t in targets)
        return state == "stamp" or label in targets

    def bad_breaks(self, targets: tuple[bytes, ...], device) -> torch.Tensor:
        """Ids of the tokens that end a line and begin the next one with a label not allowed."""
        key = (targets, torch.device(device))
        if key not in self._bad_breaks:
            bad = [
                index
                for index, tail in self.vocabulary.line_breaks
                if not self.valid_line_start(tail, targets)
            ]
            self._bad_breaks[key] = torch.tensor(bad, dtype=torch.long, device=device)
        return self._bad_breaks[key]

    def forbidden(self, vocabulary: int, device) -> torch.Tensor:
        """Ids never written in a transcript: placeholders, chat markers (special tokens that do not
        end it) and ids past the tokenizer's vocabulary."""
        key = (vocabulary, torch.device(device))
        if key not in self._forbidden:
            ids = [i for i in self.vocabulary.special if i < vocabulary and i not in self.stops]
            ids += range(len(self.vocabulary.pieces), vocabulary)
            self._forbidden[key] = torch.tensor(ids, dtype=torch.long, device=device)
        return self._forbidden[key]

    def label_candidates(self, typed: bytes, stamped: bool, line_empty: bool, targets) -> set[int]:
        """Ids that keep a line whose label so far is `typed` on the way to one of `targets`."""
        if line_empty and self.timestamps:
            return set(self.vocabulary.starting_with(b"["))
        allowed: set[int] = set()
        remainders = [t[len(typed) :] for t in targets if t.startswith(typed)]
        if stamped and not typed:
            remainders += [b" " + r for r in remainders]
        for rest in remainders:
            for end in range(1, len(rest) + 1):
                allowed.update(self.vocabulary.ids_by_bytes.get(rest[:end], ()))
            allowed.update(self.vocabulary.starting_with(rest))
        return allowed

    # -- LogitsProcessor ----------------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows_per_recording = max(1, input_ids.shape[0] // len(self.names))
        vocabulary = scores.shape[-1]
        known = self.vocabulary.pieces
        forbidden = self.forbidden(vocabulary, scores.device)
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            pieces = [known[i] if i < len(known) else None for i in ids]
            if any(piece is None for piece in pieces):
                continue  # the row has ended (end of turn, padding): nothing to steer
            scores[row, forbidden] = -float("inf")
            generated = b"".join(pieces)
            targets = self.targets(min(row // rows_per_recording, len(self.names) - 1), generated)
            line = generated.rsplit(NEWLINE, 1)[-1]
            state, typed, stamped = self.line_state(line)
            if state == "stamp":
                continue
            bad = self.bad_breaks(targets, scores.device)
            if state == "text":
                scores[row, bad[bad < vocabulary]] = -float("inf")
                continue
            allowed = self.label_candidates(typed, stamped, not line, targets)
            allowed.difference_update(bad.tolist())
            if not allowed:
                continue  # the line left every label already (cannot happen from an empty line)
            if not line:
                allowed.update(self.stops)  # between turns the model may also stop
            keep = torch.full((vocabulary,), -float("inf"), dtype=scores.dtype, device=scores.device)
            index = [i for i in allowed if i < vocabulary]
            keep[torch.tensor(index, dtype=torch.long, device=scores.device)] = 0.0
            scores[row] = scores[row] + keep
        return scores


__all__ = ["LabelVocabulary", "SpeakerLabelConstraint", "label_vocabulary", "token_bytes"]
