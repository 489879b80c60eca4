"""Constrained decoding of the transcript's speaker labels.

Every line of a transcript by roles starts with a label (`Lucy: text`, `[1.2-3.4] spk0: text`).
A model may invent a label that names nobody: a name it saw in training but that was not
registered, or `spk3` for the second voice of the recording. `SpeakerLabelConstraint` lets
`generate` write, at the start of each line, only

- one of the recording's registered names, or
- an anonymous label `spkK` that is already in use, or the next free one (`spk0`, `spk1`, ... in
  order of first appearance, as the target format numbers them),

and after the label's colon a token that starts a word (a space, then the first word: every
target line is `label: text`), so a line never begins inside a word cut by the line before it.

A line starts with a `[start-end]` timestamp exactly when the prompt asked for turn times; the
times and the text of the turns are left to the model, except that it never writes a special token
other than its end of turn (an audio placeholder in the answer would break the next step). It
works on the tokens' bytes, so a label may be spelt with any of the tokenizer's ways of cutting it,
and names in any script.

After decoding, `aligned_lines` places each turn of a transcript in time: the CTC forced alignment
(`ctc_alignment`) of its words on the audio tokens of a model trained with CTC.

Remote code: shipped to the Hub next to the model, so it imports only torch, numpy, transformers,
the standard library and the other remote-code modules (the speaker clustering of
`linking_speakerlm`).
"""

from __future__ import annotations

import bisect
import math
import re
import weakref
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from transformers import LogitsProcessor
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .linking_speakerlm import DEFAULT_THRESHOLD, VoiceThresholds, cluster_embeddings

ANONYMOUS_IN_TEXT = re.compile(rb"(?m)^(?:\[[^\]\n]*\][ ]*)?(spk\d+):")
# The bytes of an anonymous label so far: "", "s", "sp", "spk", "spk1", "spk1:".
ANONYMOUS_START = re.compile(rb"(?:s|sp|spk(?:\d+:?)?)?")
NEWLINE = b"\n"
# byte-level BPE: the printable character that stands for each byte -> the byte
_BYTE_DECODER = {character: byte for byte, character in bytes_to_unicode().items()}
# The share of a recording's speech from which a registered speaker counts as present.
PRESENT_SHARE = 0.15

# Joint decoding defaults, chosen on 50 held-out synthetic meetings (not those the project reports)
# with SpeakerLM-Tiny; line breaks follow voice changes at a fraction of the label weight.
DEFAULT_CTC_WEIGHT = 0.8
DEFAULT_SPEAKER_WEIGHT = 1.0
BREAK_FRACTION = 0.3
# Without registration, the recording's voices are clustered down to this cosine similarity (the
# cascade's and the segment linking's threshold) and anonymous labels follow the clusters.
DEFAULT_CLUSTER_THRESHOLD = DEFAULT_THRESHOLD
# Speech windows clustered per recording at most (evenly spread over a longer one).
MAX_CLUSTERED_WINDOWS = 400


def _special_tokens(tokenizer) -> set[str]:
    special = {token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    return special | set(tokenizer.all_special_tokens)


def is_byte_level(tokenizer) -> bool:
    """Whether the tokenizer is a byte-level BPE (Qwen's, SpeakerLM-Tiny's): every token but the
    special ones is spelt with the printable characters that stand for bytes, and a word's leading
    space is part of its first token."""
    special = _special_tokens(tokenizer)
    return all(ch in _BYTE_DECODER for token in tokenizer.get_vocab() if token not in special for ch in token)


def token_bytes(tokenizer, byte_level: bool | None = None) -> list[bytes | None]:
    """The bytes each token id stands for; None for special and added tokens.

    Byte-level BPE tokenizers (`is_byte_level`, unless `byte_level` says it) write bytes as
    printable characters, which are mapped back; other tokenizers' tokens are decoded one by one.
    """
    special = _special_tokens(tokenizer)
    vocab = tokenizer.get_vocab()
    pieces: list[bytes | None] = [None] * (max(vocab.values()) + 1)
    if byte_level is None:
        byte_level = is_byte_level(tokenizer)
    for token, index in vocab.items():
        if token in special:
            continue
        if byte_level:
            pieces[index] = bytes(_BYTE_DECODER[ch] for ch in token)
        else:
            pieces[index] = tokenizer.decode([index]).encode("utf-8")
    return pieces


class LabelVocabulary:
    """A tokenizer's tokens as bytes, indexed for the label constraint; built once per tokenizer."""

    def __init__(self, tokenizer):
        byte_level = is_byte_level(tokenizer)
        self.pieces = token_bytes(tokenizer, byte_level)
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
        # Tokens that may follow a label's colon: a space and the start of the turn's first word.
        # Byte-level BPE writes a word's leading space into its first token; other tokenizers'
        # tokens decode without it, and their lines may start with any token.
        self.word_starts = [
            index
            for index, piece in enumerate(self.pieces)
            if byte_level and piece and piece.startswith(b" ") and NEWLINE not in piece
        ]
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
        self._no_word_start: dict[tuple[int, torch.device], torch.Tensor] = {}
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

    def no_word_start(self, vocabulary: int, device) -> torch.Tensor:
        """Ids that cannot follow a label's colon: all but the tokens that start a word."""
        key = (vocabulary, torch.device(device))
        if key not in self._no_word_start:
            allowed = torch.zeros(vocabulary, dtype=torch.bool)
            allowed[[i for i in self.vocabulary.word_starts if i < vocabulary]] = True
            self._no_word_start[key] = (~allowed).nonzero().flatten().to(device)
        return self._no_word_start[key]

    def label_candidates(self, typed: bytes, stamped: bool, line_empty: bool, targets) -> set[int]:
        """Ids that keep a line whose label so far is `typed` on the way to one of `targets`."""
        if line_empty and self.timestamps:
            return set(self.vocabulary.starting_with(b"["))
        allowed: set[int] = set()
        remainders = [t[len(typed) :] for t in targets if t.startswith(typed)]
        if stamped and not typed:
            remainders += [b" " + r for r in remainders]
        pieces, word_starts = self.vocabulary.pieces, bool(self.vocabulary.word_starts)
        for rest in remainders:
            for end in range(1, len(rest) + 1):
                allowed.update(self.vocabulary.ids_by_bytes.get(rest[:end], ()))
            # a token that completes the label and goes on goes on with the first word
            for index in self.vocabulary.starting_with(rest):
                after = pieces[index][len(rest) :]
                if not after or not word_starts or (after.startswith(b" ") and NEWLINE not in after):
                    allowed.add(index)
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
                words = (line.split(b"]", 1)[-1] if stamped else line).partition(b":")[2]
                if not words and self.vocabulary.word_starts:
                    # the label is complete: a space and the first word follow
                    scores[row, self.no_word_start(vocabulary, scores.device)] = -float("inf")
                else:
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


class TranscriptSoFar(NamedTuple):
    """A transcript being generated, read once per step (`read_transcript`).

    - `text`: its spoken-text token ids, in order;
    - `state` of its last line: "label" while the timestamp or label is written, "unspoken" after
      the label and before any word, else "text";
    - `label`: the label bytes typed so far while the last line's label (not its timestamp) is
      written, else None;
    - `lines`: for each line whose label is complete, (its `label:`, the number of text tokens
      before the line).
    """

    text: list[int]
    state: str
    label: bytes | None
    lines: list[tuple[bytes, int]]


def read_transcript(
    pieces: Sequence[bytes | None], ids: Sequence[int], roles: bool = True
) -> TranscriptSoFar:
    """Read a transcript by roles (`[start-end] label: text` lines) from its token ids: the text
    tokens are those after each line's `label:` (a token that also holds a line break is
    structure, not speech). A plain transcript (`roles=False`) is all text, on one line."""
    if not roles:
        known = [i for i in ids if i < len(pieces) and pieces[i] is not None]
        return TranscriptSoFar([i for i in known if NEWLINE not in pieces[i]], "text", None, [])
    text: list[int] = []
    lines: list[tuple[bytes, int]] = []
    line, line_start, spoken = b"", 0, False
    for index in ids:
        piece = pieces[index] if index < len(pieces) else None
        if piece is None:
            continue
        if NEWLINE in piece:
            line, line_start, spoken = piece.rsplit(NEWLINE, 1)[1], len(text), False
            continue
        kind = SpeakerLabelConstraint.line_state(line)[0]
        if kind == "text":
            text.append(index)
            spoken = spoken or bool(piece.strip())
        line += piece
        if kind != "text":
            after, label, _ = SpeakerLabelConstraint.line_state(line)
            if after == "text":
                lines.append((label, line_start))
    kind, typed, _ = SpeakerLabelConstraint.line_state(line)
    if kind != "text":
        return TranscriptSoFar(text, "label", typed if kind == "label" else None, lines)
    return TranscriptSoFar(text, "text" if spoken else "unspoken", None, lines)


def linear_recurrence(first: torch.Tensor, inflow: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """`y` (rows, frames, K) with y[0] = first and y[t] = logaddexp(y[t-1], inflow[t-1]) + gain[t]:
    in probabilities y[t] = (y[t-1] + inflow[t-1]) * gain[t], whose solution is
    y[t] = C[t] + log(exp(first) + sum_{s<t} exp(inflow[s] - C[s])), C the cumulative gain."""
    cumulative = torch.cat([torch.zeros_like(gain[:, :1]), gain[:, 1:].cumsum(1)], dim=1)
    gathered = torch.logcumsumexp(inflow[:, :-1] - cumulative[:, :-1], dim=1)
    rest = cumulative[:, 1:] + torch.logaddexp(first[:, None].expand_as(gathered), gathered)
    return torch.cat([first[:, None], rest], dim=1)


def ctc_alignment(
    log_probs: torch.Tensor, targets: Sequence[int], blank_id: int
) -> list[tuple[int, int]] | None:
    """CTC forced alignment (Viterbi): the most likely path of `log_probs` (frames, vocabulary)
    that spells exactly `targets`, as the (first, last) frame each target token is emitted on.
    None when no path spells them (more tokens, counting the blanks between repeats, than frames)."""
    frames = log_probs.shape[0]
    if not len(targets):
        return []
    # blank, y1, blank, y2, ..., yL, blank: a path stays on a state, moves to the next, or skips a
    # blank between two different tokens. In numpy: a few hundred steps of small vectors.
    states = [blank_id]
    for token in targets:
        states += [int(token), blank_id]
    emit = log_probs[:, states].double().cpu().numpy()
    skip = np.array([k % 2 == 1 and k >= 2 and states[k] != states[k - 2] for k in range(len(states))])
    score = np.full(len(states), -np.inf)
    score[:2] = emit[0, :2]
    moves = np.zeros((frames, len(states)), dtype=np.int8)
    options = np.full((3, len(states)), -np.inf)
    for t in range(1, frames):
        options[0] = score
        options[1, 1:] = score[:-1]
        options[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        moves[t] = options.argmax(0)
        score = options[moves[t], np.arange(len(states))] + emit[t]
    last = len(states) - 1
    state = last if score[last] >= score[last - 1] else last - 1
    if not np.isfinite(score[state]):
        return None
    # back from the end: a token's first frame is the last one met, its last frame the first
    first, last = [0] * len(targets), [-1] * len(targets)
    for t in range(frames - 1, -1, -1):
        if state % 2:
            token = state // 2
            first[token] = t
            if last[token] < 0:
                last[token] = t
        state -= int(moves[t, state])
    return list(zip(first, last, strict=True))


def aligned_lines(
    tokenizer_or_vocabulary,
    log_probs: torch.Tensor,
    ids: Sequence[int],
    blank_id: int,
    roles: bool = True,
) -> list[tuple[bytes, int, int, tuple[tuple[int, int], ...]] | None] | None:
    """Where each turn of a finished transcript was said, by CTC forced alignment of its text on the
    audio tokens' CTC `log_probs` (frames, vocabulary): for each line with a label (one line for a
    plain transcript, `roles=False`), its `label:`, the first and the last audio token its words
    are emitted on, and each word's (first, last) audio token (words: the line's
    whitespace-separated pieces, in order); None for a line without words. None for all when the
    text cannot be aligned.
    `ids` are the generated tokens (the special ones are skipped)."""
    vocabulary = tokenizer_or_vocabulary
    vocabulary = vocabulary if hasattr(vocabulary, "line_breaks") else label_vocabulary(vocabulary)
    transcript = read_transcript(vocabulary.pieces, ids, roles)
    emitted = ctc_alignment(log_probs, transcript.text, blank_id)
    if emitted is None:
        return None
    lines = transcript.lines if roles else [(b"", 0)]
    bounds = [before for _, before in lines[1:]] + [len(transcript.text)]
    found: list[tuple[bytes, int, int, tuple[tuple[int, int], ...]] | None] = []
    for (label, first), stop in zip(lines, bounds, strict=True):
        # words are the text's whitespace-separated pieces (a lone space is not heard anywhere)
        words: list[list[int]] = []
        fresh = True
        for k in range(first, stop):
            piece = vocabulary.pieces[transcript.text[k]]
            fresh = fresh or piece[:1].isspace()
            for number, _ in enumerate(piece.split()):
                if fresh or number or not words:
                    words.append(list(emitted[k]))
                else:
                    words[-1][1] = emitted[k][1]
                fresh = False
            fresh = fresh or piece[-1:].isspace()
        found.append((label, words[0][0], words[-1][1], tuple(map(tuple, words))) if words else None)
    return found


def transcripts_aligned_lines(
    model, tokenizer, inputs, processors: Sequence[LogitsProcessor], generated: torch.Tensor
) -> list:
    """`aligned_lines` of each generated transcript of a batch (`generated`: the new tokens only):
    by the joint decoding's `CTCPrefixScorer` among `processors`, or, when it was off (CTC weight
    0), by forced alignment on CTC log-probabilities computed here (the audio tokens only: the
    speaker windows are not needed). Needs a model trained with CTC (`config.audio_ctc`)."""
    scorer = next((p for p in processors if hasattr(p, "line_frames")), None)
    if scorer is not None:
        return [scorer.line_frames(k, ids) for k, ids in enumerate(generated.tolist())]
    guides = model.decoding_guides(
        inputs["input_ids"], inputs["input_features"], inputs.get("input_features_mask")
    )
    log_probs, lengths = guides["log_probs"].float().cpu(), guides["lengths"].cpu()
    return [
        aligned_lines(tokenizer, log_probs[k, : int(lengths[k])], ids, tokenizer.pad_token_id)
        for k, ids in enumerate(generated.tolist())
    ]


class CTCPrefixScorer(LogitsProcessor):
    """Joint CTC / attention decoding, and speaker labels chosen by the voice the text is heard in:
    a `LogitsProcessor` that adds the audio tokens' CTC prefix score to the LLM's next-token scores
    (Watanabe et al., 2017, "Hybrid CTC/attention") and, with registered speakers, steers each
    turn's label towards the enrolled voice of the audio that follows it.

    A model whose audio tokens were trained to spell the transcript by CTC against the LLM's input
    embeddings (`SpeakerLMConfig.audio_ctc`; `model.decoding_guides`) carries an alignment the
    LLM's attention can drift from on long recordings: it repeats a sentence, skips one, or writes
    what its language model expects rather than what was said. At every step the `candidates` best
    text tokens by the LLM (after the other processors), and the tokens the CTC hears right after
    the text so far, get
    `(1 - weight) * log p_llm + weight * (log P_ctc(prefix + token) - log P_ctc(prefix))`,
    where `P_ctc(prefix)` is the probability that the audio's CTC output starts with the text so
    far; the other text tokens are pruned. Speaker labels, timestamps and line breaks are not
    spoken, so CTC does not score them: a line break gets the score of the best text token (it
    neither helps nor spares the words still to come), a label nothing, the end of the transcript
    the probability that the text is complete. A turn says something: no line break or end right
    after a label.

    The CTC alignment also tells where in the audio the next turn starts. With `windows` (the
    extractor's embedding around each audio token) and the registered speakers' embeddings, a
    label's tokens get `speaker_weight * log q(name)`, q being a softmax over `speaker_sharpness *`
    the cosine similarity between each enrolled speaker and the speech of the `window` audio tokens
    after the text so far (anonymous `spkK` labels count as one more speaker at similarity
    `unregistered_similarity`). Without registration the anonymous labels in use are compared by
    the voice of their earlier turns, the next free one at `new_speaker_similarity`; with
    `cluster_threshold`, the recording's voices are first clustered as a whole (the windows of the
    audio tokens that carry speech, average-linkage cosine AHC as in the cascade), each label in use
    takes the cluster its earlier turns sound like and is compared by that cluster's centroid, and
    the next free label by the best cluster no label has taken: who is who is decided once for the
    whole recording rather than turn by turn.

    Args:
        log_probs: (batch, frames, vocabulary) CTC log-probabilities of each recording's audio tokens.
        lengths: (batch,) valid frames of each recording.
        blank_id: the CTC blank (SpeakerLM's pad token).
        tokenizer_or_vocabulary: the tokenizer (or its `LabelVocabulary`), to tell text from labels.
        prompt_length: length of the prompt in `input_ids`.
        weight: CTC weight in [0, 1).
        candidates: text tokens taken from the LLM (and at most as many from the CTC) per step.
        eos_token_id: the ids that end the transcript.
        windows: (batch, frames, embedding) speaker embeddings of the audio tokens' windows.
        speakers: each recording's registered speakers' embeddings (names[i] order), (n_i, embedding).
        names: each recording's registered names.
        speaker_weight / speaker_sharpness / unregistered_similarity: see above; 0 turns it off.
        new_speaker_similarity: the cosine at which a voice counts as a new anonymous speaker.
        cluster_threshold: without registration, cluster the recording's voices down to this cosine
            similarity (`linking_speakerlm.cluster_embeddings`) and compare labels by their
            clusters; None compares them by their earlier turns only.
        presence_prior: with registered speakers, weigh each by whether it seems to speak in the
            recording at all (`presence`): enrolled speakers with little of the speech are set back.
        break_weight: inside a turn, a line break also gets `break_weight * speaker_sharpness *
            (new_speaker_similarity - cos)`, cos comparing the next audio tokens' voice with the
            turn's speaker (its enrollment, or the turn's voice so far): a voice change invites a
            new turn. 0 (the default) turns it off.
        window: audio tokens after the text so far where the next words (and their voice) are sought.
        roles: the transcript is by roles (`label: text` lines); False for a plain transcript,
            which is one line of text.

    One instance serves one `generate` call; with beam search, the rows of one recording follow
    each other, as `generate` lays them out. Place it after `SpeakerLabelConstraint`.
    """

    def __init__(
        self,
        log_probs: torch.Tensor,
        lengths: torch.Tensor,
        blank_id: int,
        tokenizer_or_vocabulary,
        prompt_length: int,
        weight: float = DEFAULT_CTC_WEIGHT,
        candidates: int = 8,
        eos_token_id: int | Sequence[int] | None = None,
        windows: torch.Tensor | None = None,
        speakers: Sequence[torch.Tensor] | None = None,
        names: Sequence[Sequence[str]] | None = None,
        speaker_weight: float = DEFAULT_SPEAKER_WEIGHT,
        speaker_sharpness: float = 10.0,
        unregistered_similarity: float = 0.3,
        new_speaker_similarity: float = 0.5,
        cluster_threshold: float | None = DEFAULT_CLUSTER_THRESHOLD,
        break_weight: float = 0.0,
        presence_prior: bool = True,
        window: int = 12,
        roles: bool = True,
    ):
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"the CTC weight must be in [0, 1), got {weight}")
        if candidates < 1 or window < 1:
            raise ValueError(f"candidates and window must be >= 1, got {candidates} and {window}")
        if log_probs.dim() != 3 or lengths.shape != log_probs.shape[:1]:
            raise ValueError("log_probs must be (batch, frames, vocabulary) with one length per recording")
        if speaker_weight < 0:
            raise ValueError(f"speaker_weight must be >= 0, got {speaker_weight}")
        self.log_probs = log_probs.float()
        self.lengths = lengths.long().clamp(min=1, max=log_probs.shape[1])
        self.blank_id = blank_id
        vocabulary = tokenizer_or_vocabulary
        self.vocabulary = vocabulary if hasattr(vocabulary, "line_breaks") else label_vocabulary(vocabulary)
        self.prompt_length = prompt_length
        self.weight = weight
        self.candidates = candidates
        self.window = window
        self.roles = roles
        stops = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or ())
        self.stops = sorted(set(self.vocabulary.stops) | set(stops))
        pieces = self.vocabulary.pieces
        self.text_ids = torch.tensor(
            [p is not None and NEWLINE not in p and i != blank_id for i, p in enumerate(pieces)]
        )
        # Speech presence of each audio token: where to look for the next turn's voice.
        self.speech = 1.0 - self.log_probs[..., blank_id].exp()
        self.directions = None
        self.enrolled: list[torch.Tensor | None] = [None] * log_probs.shape[0]
        self.log_prior: list[torch.Tensor | None] = [None] * log_probs.shape[0]
        self.labels: list[list[bytes]] = [[] for _ in range(log_probs.shape[0])]
        if speaker_weight and windows is not None:
            self.directions = torch.nn.functional.normalize(windows.float(), dim=-1)
            for i, row_names in enumerate(names or [[]] * log_probs.shape[0]):
                embeddings = speakers[i] if speakers is not None else ()
                if len(row_names) != len(embeddings):
                    raise ValueError(f"recording {i}: {len(row_names)} names for {len(embeddings)} speakers")
                if len(row_names):
                    self.enrolled[i] = torch.nn.functional.normalize(embeddings.float(), dim=-1)
                    self.labels[i] = [name.encode("utf-8") + b":" for name in row_names]
                    if presence_prior:
                        self.log_prior[i] = self.presence(i, speaker_sharpness)
        # unit centroids (clusters, embedding) of each unregistered recording's voices
        self.clusters: list[torch.Tensor | None] = [None] * log_probs.shape[0]
        if self.directions is not None and cluster_threshold is not None:
            for i, enrolled in enumerate(self.enrolled):
                if enrolled is None:
                    self.clusters[i] = self.voice_clusters(i, cluster_threshold)
        # (recording, text prefix at a line's start) -> audio token after which that line's speech starts
        self._line_starts: dict[tuple[int, tuple[int, ...]], int] = {}
        self.speaker_weight = speaker_weight
        self.speaker_sharpness = speaker_sharpness
        self.unregistered_similarity = unregistered_similarity
        self.new_speaker_similarity = new_speaker_similarity
        self.break_weight = break_weight
        # (recording, text prefix) -> (forward variables (frames, 2) ending in a token / a blank, log P(prefix))
        self._states: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}

    # -- CTC prefix scores --------------------------------------------------------------------
    def initial_state(self, recording: int) -> tuple[torch.Tensor, torch.Tensor]:
        blank = self.log_probs[recording, :, self.blank_id]
        state = torch.stack([torch.full_like(blank, -float("inf")), blank.cumsum(0)], dim=-1)
        return state, torch.zeros(())

    def extend(self, recordings: list[int], states: torch.Tensor, last: list[int], tokens: torch.Tensor):
        """Forward variables and log prefix probabilities of each row's prefix extended by each of
        its candidate `tokens` (rows, K), from the prefix's `states` (rows, frames, 2); `last` is
        each prefix's last token (-1 for the empty prefix)."""
        frames = states.shape[1]
        index = torch.tensor(recordings)
        x = self.log_probs[index[:, None], :, tokens].transpose(1, 2)  # (rows, frames, K)
        blank = self.log_probs[index, :, self.blank_id][..., None]  # (rows, frames, 1)
        total = torch.logaddexp(states[..., 0], states[..., 1])[..., None].expand_as(x)
        # A repeated token needs a blank between the two: only the prefix's blank-ending paths go on.
        repeat = tokens == torch.tensor(last)[:, None]
        phi = torch.where(repeat[:, None, :], states[..., 1:2].expand_as(x), total)
        empty = torch.tensor(last) < 0
        start = torch.where(empty[:, None], x[:, 0], torch.full_like(x[:, 0], -float("inf")))
        # The recursions n[t] = (n[t-1] + phi[t-1]) x[t] and b[t] = (b[t-1] + n[t-1]) blank[t]
        # (probabilities) are first-order linear: solved for all frames at once by cumulative
        # log-sum-exps, in float64 because the cumulative log-probabilities grow with the length.
        new_n = linear_recurrence(start.double(), phi.double(), x.double()).to(x.dtype)
        no_path = torch.full_like(start, -float("inf"), dtype=torch.float64)
        new_b = linear_recurrence(no_path, new_n.double(), blank.double().expand_as(x)).to(x.dtype)
        valid = torch.arange(frames)[None, :] < self.lengths[index][:, None]  # (rows, frames)
        entering = torch.cat([start[:, None], phi[:, :-1] + x[:, 1:]], dim=1)
        entering = entering.masked_fill(~valid[..., None], -float("inf"))
        return torch.stack([new_n, new_b], dim=-1), torch.logsumexp(entering, dim=1)

    def state(self, recording: int, prefix: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward variables and log probability of a text prefix, from the cache or computed."""
        key = (recording, prefix)
        if key not in self._states:
            if prefix:
                before, _ = self.state(recording, prefix[:-1])
                last = prefix[-2] if len(prefix) > 1 else -1
                states, scores = self.extend([recording], before[None], [last], torch.tensor([[prefix[-1]]]))
                self._states[key] = (states[0, :, 0], scores[0, 0])
            else:
                self._states[key] = self.initial_state(recording)
        return self._states[key]

    def complete(self, recording: int, state: torch.Tensor) -> torch.Tensor:
        """log P(the CTC output is exactly the prefix)."""
        end = self.lengths[recording] - 1
        return torch.logaddexp(state[end, 0], state[end, 1])

    def position(self, recording: int, state: torch.Tensor) -> int:
        """The audio token after which the prefix is most likely complete with nothing more heard
        yet: the next words start after it. Of frames tied within rounding (a word spread over
        several frames of certain audio), the last."""
        length = int(self.lengths[recording])
        total = torch.logaddexp(state[:length, 0], state[:length, 1])
        tied = torch.isclose(total, total.max(), rtol=1e-6, atol=1e-6)
        return int(tied.nonzero()[-1])

    def heard_next(self, recording: int, end: int, allowed: torch.Tensor) -> torch.Tensor:
        """Text tokens the audio proposes next: the most likely token of each of the `window`
        frames after `end` where it beats the blank, in order, at most `candidates` of them."""
        frames = self.log_probs[recording, end + 1 : min(end + 1 + self.window, int(self.lengths[recording]))]
        if not len(frames):
            return torch.zeros(0, dtype=torch.long)
        best = frames[:, : len(allowed)].masked_fill(~allowed[None], -float("inf")).max(-1)
        heard = best.indices[best.values > frames[:, self.blank_id]]
        return torch.tensor(list(dict.fromkeys(heard.tolist()))[: self.candidates], dtype=torch.long)

    def line_frames(self, recording: int, ids: Sequence[int]) -> list[tuple | None] | None:
        """`aligned_lines` of one recording's finished transcript (`ids`, the generated tokens)."""
        length = int(self.lengths[recording])
        return aligned_lines(
            self.vocabulary, self.log_probs[recording, :length], ids, self.blank_id, self.roles
        )

    # -- speaker labels ------------------------------------------------------------------------
    def voice(self, recording: int, first: int, stop: int) -> torch.Tensor:
        """Speech-weighted mean window direction of the audio tokens [first, stop)."""
        stop = min(stop, int(self.lengths[recording]))
        first = min(first, stop - 1)
        weights = self.speech[recording, first:stop]
        weights = weights / weights.sum().clamp_min(1e-6)
        return weights @ self.directions[recording, first:stop]

    def presence(self, recording: int, sharpness: float, rounds: int = 5) -> torch.Tensor:
        """Log prior of each registered speaker: the share of the recording's speech a mixture of
        the enrolled voices fitted to the audio tokens' windows gives it (EM on the mixture
        weights), relative to `PRESENT_SHARE` and capped at 0, so that speakers who speak enough
        are equally likely and enrolled speakers who hardly speak (Over-Regist) rarely get a turn."""
        length = int(self.lengths[recording])
        similarity = self.directions[recording, :length] @ self.enrolled[recording].T
        speech = self.speech[recording, :length, None]
        log_prior = torch.full((similarity.shape[1],), -math.log(similarity.shape[1]))
        for _ in range(rounds):
            shares = torch.softmax(sharpness * similarity + log_prior, dim=-1)
            prior = (speech * shares).sum(0) / speech.sum().clamp_min(1e-6)
            log_prior = prior.clamp_min(1e-3).log() - prior.clamp_min(1e-3).sum().log()
        # Present is present: every speaker with at least `PRESENT_SHARE` of the speech is as
        # likely as any other; below it, a speaker is likelier absent.
        return (log_prior - math.log(PRESENT_SHARE)).clamp(max=0.0)

    def voice_clusters(self, recording: int, threshold: float) -> torch.Tensor | None:
        """Unit centroids (clusters, embedding), in order of first appearance, of the voices of a
        recording: the windows of its audio tokens that carry speech (at most
        `MAX_CLUSTERED_WINDOWS`, evenly spread), clustered by average-linkage cosine AHC down to
        `threshold`. None with fewer than two such windows."""
        length = int(self.lengths[recording])
        picked = (self.speech[recording, :length] > 0.5).nonzero().flatten()
        if len(picked) < 2:
            return None
        picked = picked[:: math.ceil(len(picked) / MAX_CLUSTERED_WINDOWS)]
        vectors = self.directions[recording, picked]
        labels = torch.from_numpy(
            cluster_embeddings(vectors.double().numpy(), range(len(picked)), threshold=threshold)
        )
        centroids = torch.stack([vectors[labels == k].mean(0) for k in range(int(labels.max()) + 1)])
        return torch.nn.functional.normalize(centroids, dim=-1)

    def anonymous_voices(
        self, recording: int, lines: list[tuple[bytes, int]], end: int
    ) -> tuple[dict[bytes, torch.Tensor], torch.Tensor | None]:
        """The voice each anonymous label in `lines` is compared by (labels whose turns so far are
        too short to hear have none), and the centroids of the clusters no label has taken (None
        without clusters). A label takes, greedily by similarity, the cluster its earlier turns sound
        like (at least `new_speaker_similarity`), one cluster per label, and is then compared by the
        cluster's centroid; a label without one keeps the voice of its turns."""
        bounds = [start for _, start in lines[1:]] + [end] * bool(lines)
        heard: dict[bytes, list[torch.Tensor]] = {}
        for (label, start), stop in zip(lines, bounds, strict=True):
            if stop > start + 1:
                heard.setdefault(label, []).append(self.voice(recording, start + 1, stop + 1))
        voices = {
            label: torch.nn.functional.normalize(torch.stack(parts).mean(0), dim=0)
            for label, parts in heard.items()
        }
        centroids = self.clusters[recording]
        if centroids is None:
            return voices, None
        labels, taken, free = list(voices), {}, set(range(len(centroids)))
        if labels:
            similarity = torch.stack([voices[label] for label in labels]) @ centroids.T
            for flat in similarity.flatten().argsort(descending=True).tolist():
                row, cluster = divmod(flat, len(centroids))
                if similarity[row, cluster] < self.new_speaker_similarity:
                    break
                if labels[row] not in taken and cluster in free:
                    taken[labels[row]] = cluster
                    free.discard(cluster)
        voices.update({label: centroids[cluster] for label, cluster in taken.items()})
        return voices, centroids[sorted(free)]

    def line_starts(self, recording: int, transcript: TranscriptSoFar) -> list[tuple[bytes, int]]:
        """(label, audio token after which the line's speech starts) of each line with a label,
        from the positions recorded when the lines began."""
        found = []
        for label, before in transcript.lines:
            start = self._line_starts.get((recording, tuple(transcript.text[:before])))
            if start is not None:
                found.append((label, start))
        return found

    def speaker_log_probs(
        self, recording: int, end: int, transcript: TranscriptSoFar
    ) -> tuple[list[bytes], torch.Tensor]:
        """The labels the next turn may take and log q over them (the last entry stands for every
        anonymous label when speakers are registered), from the voice of the `window` audio
        tokens after `end`."""
        heard = self.voice(recording, end + 1, end + 1 + self.window)
        if self.enrolled[recording] is not None:
            targets = self.labels[recording]
            similarity = torch.cat(
                [self.enrolled[recording] @ heard, heard.new_tensor([self.unregistered_similarity])]
            )
            if self.log_prior[recording] is not None:
                # the prior is added after the sharpness below
                prior = self.log_prior[recording]
                prior = torch.cat([prior, prior.new_zeros(1)])
                return targets, torch.log_softmax(self.speaker_sharpness * similarity + prior, dim=-1)
        else:
            # Anonymous speakers: the voice of each label in use (its cluster's, or its earlier
            # lines'), and a new speaker (the best cluster no label has taken, if any).
            lines = self.line_starts(recording, transcript)
            voices, free = self.anonymous_voices(recording, lines, end)
            used = sorted(
                {label for label, _ in lines}, key=lambda b: int(b[3:-1]) if b[3:-1].isdigit() else 0
            )
            targets = [*used, b"spk%d:" % len(used)]
            values = [
                voices[label] @ heard if label in voices else heard.new_tensor(self.unregistered_similarity)
                for label in used
            ]
            new = (free @ heard).max() if free is not None and len(free) else None
            similarity = torch.stack(
                [*values, new if new is not None else heard.new_tensor(self.new_speaker_similarity)]
            )
        return targets, torch.log_softmax(self.speaker_sharpness * similarity, dim=-1)

    def turn_change(self, recording: int, end: int, transcript: TranscriptSoFar) -> float:
        """Bonus for a line break: `break_weight * speaker_sharpness * (new_speaker_similarity - cos)`,
        cos comparing the voice of the next audio tokens with the current turn's speaker (its
        enrollment; for an anonymous label the voice `anonymous_voices` gives it with clusters,
        which always has one for a turn that has begun, and the voice of the turn so far without):
        positive when the voice changes, negative while the same speaker goes on."""
        lines = self.line_starts(recording, transcript)
        if not lines:
            return 0.0
        label, start = lines[-1]
        heard = self.voice(recording, end + 1, end + 1 + self.window)
        if self.enrolled[recording] is not None:
            if label not in self.labels[recording]:
                return 0.0
            current = self.enrolled[recording][self.labels[recording].index(label)]
        else:
            if end <= start + 1:
                return 0.0
            if self.clusters[recording] is not None:
                current = self.anonymous_voices(recording, lines, end)[0][label]
            else:
                current = torch.nn.functional.normalize(self.voice(recording, start + 1, end + 1), dim=0)
        similarity = float(current @ heard)
        return self.break_weight * self.speaker_sharpness * (self.new_speaker_similarity - similarity)

    def label_classes(self, targets: list[bytes], label: bytes, anonymous_class: bool) -> list[int]:
        """Indices of the `targets` whose bytes start with, or are the start of, `label` (and the
        extra last class of all anonymous labels, when there is one)."""
        found = [k for k, t in enumerate(targets) if t.startswith(label) or label.startswith(t)]
        if anonymous_class and ANONYMOUS_START.fullmatch(label):
            found.append(len(targets))
        return found

    def label_bonus(
        self, recording: int, end: int, transcript: TranscriptSoFar, ids: list[int]
    ) -> dict[int, float]:
        """speaker_weight * log q(label | label so far) for each token id that goes on a label."""
        targets, log_q = self.speaker_log_probs(recording, end, transcript)
        typed = transcript.label
        anonymous_class = self.enrolled[recording] is not None
        before = self.label_classes(targets, typed, anonymous_class)
        if not before:
            return {}
        base = torch.logsumexp(log_q[before], 0)
        bonus = {}
        for index in ids:
            piece = self.vocabulary.pieces[index] if index < len(self.vocabulary.pieces) else None
            if not piece or NEWLINE in piece:
                continue
            classes = self.label_classes(targets, (typed + piece).lstrip(b" "), anonymous_class)
            if classes:
                bonus[index] = self.speaker_weight * float(torch.logsumexp(log_q[classes], 0) - base)
        return bonus

    # -- LogitsProcessor ----------------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        recordings = self.log_probs.shape[0]
        rows_per_recording = max(1, input_ids.shape[0] // recordings)
        vocabulary = scores.shape[-1]
        pieces = self.vocabulary.pieces
        # The CTC tables live on the CPU; so does the rescoring (a few hundred tokens per step).
        log_p = scores.detach().float().log_softmax(-1).cpu()
        out = log_p * (1.0 - self.weight)
        text_ids = torch.zeros(vocabulary, dtype=torch.bool)
        text_ids[: min(vocabulary, len(self.text_ids))] = self.text_ids[:vocabulary]
        stops = torch.tensor([i for i in self.stops if i < vocabulary], dtype=torch.long)
        breaks = torch.tensor([i for i, _ in self.vocabulary.line_breaks if i < vocabulary], dtype=torch.long)
        kept: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}
        pending = []  # rows inside a turn's text: (row, recording, prefix, candidates, spoken)
        turn_bonus: dict[int, float] = {}
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            if any(i >= len(pieces) or pieces[i] is None for i in ids):
                continue  # the row has ended
            recording = min(row // rows_per_recording, recordings - 1)
            transcript = read_transcript(pieces, ids, self.roles)
            prefix = tuple(transcript.text)
            state, prefix_score = kept[(recording, prefix)] = self.state(recording, prefix)
            if len(stops):
                out[row, stops] += self.weight * (self.complete(recording, state) - prefix_score)
            end = self.position(recording, state)
            if transcript.state == "label":
                if self.directions is not None and transcript.label is not None:
                    self._line_starts.setdefault((recording, prefix), end)
                    finite = torch.isfinite(log_p[row]).nonzero().flatten()
                    for index, value in self.label_bonus(recording, end, transcript, finite.tolist()).items():
                        out[row, index] += value
                continue
            allowed = text_ids & torch.isfinite(log_p[row])
            count = min(self.candidates, int(allowed.sum()))
            if count:
                candidates = log_p[row].masked_fill(~allowed, -float("inf")).topk(count).indices
                heard = self.heard_next(recording, end, allowed)
                candidates = torch.cat([candidates, heard[~torch.isin(heard, candidates)]])
                spoken = transcript.state == "text"
                pending.append((row, recording, prefix, candidates, spoken))
                if spoken and self.directions is not None and self.break_weight:
                    turn_bonus[row] = self.turn_change(recording, end, transcript)
        if pending:
            width = max(len(c) for *_, c, _ in pending)
            tokens = torch.stack([torch.cat([c, c[-1:].expand(width - len(c))]) for *_, c, _ in pending])
            states = torch.stack([kept[(rec, prefix)][0] for _, rec, prefix, _, _ in pending])
            last = [prefix[-1] if prefix else -1 for _, _, prefix, _, _ in pending]
            extended, extended_scores = self.extend(
                [rec for _, rec, _, _, _ in pending], states, last, tokens
            )
            for k, (row, recording, prefix, candidates, spoken) in enumerate(pending):
                count = len(candidates)
                delta = extended_scores[k, :count] - kept[(recording, prefix)][1]
                # inside a turn only the scored words, a line break or the end may come
                pruned = torch.full_like(out[row], -float("inf"))
                pruned[candidates] = out[row, candidates] + self.weight * delta
                # a plain transcript is one line: only a transcript by roles breaks lines
                if spoken and self.roles and len(breaks):
                    pruned[breaks] = out[row, breaks] + self.weight * delta.max() + turn_bonus.get(row, 0.0)
                if spoken and len(stops):
                    pruned[stops] = out[row, stops]
                out[row] = pruned
                for j in range(count):
                    kept[(recording, (*prefix, int(candidates[j])))] = (
                        extended[k, :, j],
                        extended_scores[k, j],
                    )
        self._states = kept
        return out.to(device=scores.device, dtype=scores.dtype)


def resolve_ctc_weight(config, ctc_weight: float | None) -> float:
    """The CTC weight to decode a model with: `ctc_weight`, or by default, for a model whose
    `config.audio_ctc` says its audio tokens spell the transcript, the weight it was tuned to
    decode with (`config.decoding_ctc_weight`) or else `DEFAULT_CTC_WEIGHT`, and 0 for others.
    A weight outside [0, 1), or above 0 for a model without CTC training, is an error."""
    trained = bool(getattr(config, "audio_ctc", False))
    if ctc_weight is None:
        if not trained:
            return 0.0
        tuned = getattr(config, "decoding_ctc_weight", None)
        return DEFAULT_CTC_WEIGHT if tuned is None else float(tuned)
    if not 0.0 <= float(ctc_weight) < 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight!r}")
    if ctc_weight and not trained:
        raise ValueError(
            f"ctc_weight={ctc_weight}: this model's audio tokens were not trained to spell the "
            "transcript (config.audio_ctc is false), so they cannot guide decoding; use ctc_weight=0"
        )
    return float(ctc_weight)


def transcript_logits_processors(
    model,
    tokenizer,
    inputs,
    names: Sequence[Sequence[str]] | Sequence[str],
    *,
    constrain_labels: bool = True,
    timestamps: bool = False,
    ctc_weight: float | None = None,
    speaker_weight: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    roles: bool = True,
    voice_thresholds: VoiceThresholds | None = None,
) -> list[LogitsProcessor]:
    """The processors that decode a batch of transcripts by roles: `SpeakerLabelConstraint` (with
    `constrain_labels`), then `CTCPrefixScorer` (when `ctc_weight` > 0; None means
    `DEFAULT_CTC_WEIGHT` for a model whose `config.audio_ctc` says its audio tokens spell the
    transcript, else 0), steering labels by voice with `speaker_weight` (None:
    `DEFAULT_SPEAKER_WEIGHT`), and line breaks by voice changes with `BREAK_FRACTION` of it, when
    the model has `audio_speaker_window`; without registered speakers the recording's voices are
    clustered first (down to `voice_thresholds.cluster`; None: the model's
    `config.voice_thresholds`, by default `DEFAULT_CLUSTER_THRESHOLD`) and the anonymous labels
    follow the clusters.

    `inputs` is the processor's output for the batch, `names` the registered names of each
    recording (or one list for all of them); `roles=False` decodes plain transcripts (the ASR
    task: no labels, no constraint).
    """
    input_ids = inputs["input_ids"]
    batch, prompt_length = input_ids.shape
    if names and all(isinstance(name, str) for name in names):
        names = [list(names)] * batch
    names = [list(row or ()) for row in names] if names else [[] for _ in range(batch)]
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id
    ctc_weight = resolve_ctc_weight(model.config, ctc_weight)
    if speaker_weight is None:
        speaker_weight = DEFAULT_SPEAKER_WEIGHT
    processors: list[LogitsProcessor] = []
    if constrain_labels and roles:
        processors.append(
            SpeakerLabelConstraint(
                tokenizer, names, prompt_length, timestamps=timestamps, eos_token_id=eos_token_id
            )
        )
    if ctc_weight:
        guides = model.decoding_guides(**inputs)
        processors.append(
            CTCPrefixScorer(
                guides["log_probs"].cpu(),
                guides["lengths"].cpu(),
                tokenizer.pad_token_id,
                tokenizer,
                prompt_length,
                weight=ctc_weight,
                eos_token_id=eos_token_id,
                windows=guides["windows"].cpu() if "windows" in guides else None,
                speakers=[s.cpu() for s in guides["speakers"]] if "speakers" in guides else None,
                names=names,
                speaker_weight=speaker_weight if roles else 0.0,
                cluster_threshold=(voice_thresholds or VoiceThresholds.from_config(model.config)).cluster,
                break_weight=BREAK_FRACTION * speaker_weight if roles else 0.0,
                roles=roles,
            )
        )
    return processors


__all__ = [
    "CTCPrefixScorer",
    "DEFAULT_CLUSTER_THRESHOLD",
    "DEFAULT_CTC_WEIGHT",
    "DEFAULT_SPEAKER_WEIGHT",
    "LabelVocabulary",
    "TranscriptSoFar",
    "SpeakerLabelConstraint",
    "aligned_lines",
    "ctc_alignment",
    "label_vocabulary",
    "read_transcript",
    "resolve_ctc_weight",
    "token_bytes",
    "transcript_logits_processors",
    "transcripts_aligned_lines",
]
