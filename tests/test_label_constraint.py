"""Constrained speaker labels: registered names and anonymous labels in order of first appearance."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from speakerlm_hf.configuration_speakerlm import AUDIO_TOKEN, SPEAKER_TOKEN
from speakerlm_hf.generation_speakerlm import SpeakerLabelConstraint, label_vocabulary, token_bytes
from speakerlm_hf.processing_speakerlm import parse_role_transcript
from speakerlm_hf.testing_utils import tiny_speakerlm, tiny_tokenizer

PROMPT = 6


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def decode(constraint: SpeakerLabelConstraint, ids: list[int]) -> str:
    pieces = constraint.vocabulary.pieces
    return b"".join(pieces[i] or b"" for i in ids).decode("utf-8", "replace")


def random_decoding(
    tokenizer, names, steps: int, timestamps: bool = False, seed: int = 0, constrain: bool = True
) -> list[str]:
    """Greedy decoding of random scores (new lines favoured, end of turn never chosen) through the constraint."""
    constraint = SpeakerLabelConstraint(tokenizer, names, PROMPT, timestamps=timestamps)
    newline = [i for i, piece in enumerate(constraint.vocabulary.pieces) if piece == b"\n"]
    special = constraint.vocabulary.special
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((len(names), PROMPT), 3, dtype=torch.long)
    for _ in range(steps):
        scores = torch.randn(len(names), len(tokenizer), generator=generator)
        scores[:, newline] += 2.5
        scores[:, special] = -1e4
        if constrain:
            scores = constraint(ids, scores)
        assert torch.isfinite(scores).any(-1).all()
        ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], 1)
    return [decode(constraint, row[PROMPT:]) for row in ids.tolist()]


def check_lines(text: str, names: list[str], timestamps: bool) -> int:
    """Asserts every complete line's label; returns how many lines were checked."""
    lines = text.split("\n")[:-1]  # the last line may be unfinished
    next_anonymous = 0
    for line in lines:
        if timestamps:
            assert line.startswith("["), line
            if "]" not in line:
                continue  # the model is still writing its timestamp when a new line comes
            line = line[line.index("]") + 1 :].lstrip(" ")
        else:
            assert not line.startswith("["), line
        label, _, words = line.partition(":")
        assert ":" in line and (label in names or re.fullmatch(r"spk\d+", label)), line
        assert words.startswith(" "), f"a turn begins with a word: {line!r}"
        if label.startswith("spk"):
            number = int(label[3:])
            assert number <= next_anonymous, f"{label} before spk{next_anonymous}"
            next_anonymous = max(next_anonymous, number + 1)
    return len(lines)


def test_token_bytes_spell_the_text(tokenizer):
    pieces = token_bytes(tokenizer)
    text = "Mike: the release 张伟 café\n[1.0-2.5] spk0: ok"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert b"".join(pieces[i] for i in ids) == text.encode("utf-8")
    assert pieces[tokenizer.eos_token_id] is None and pieces[tokenizer.pad_token_id] is None
    assert label_vocabulary(tokenizer) is label_vocabulary(tokenizer)


def test_random_scores_only_ever_write_allowed_labels(tokenizer):
    names = [["Mike", "Mary Ann"], [], ["张伟"]]
    texts = random_decoding(tokenizer, names, steps=250)
    for text, registered in zip(texts, names, strict=True):
        assert check_lines(text, registered, timestamps=False) >= 10
    # Without the constraint the same scores write labels that name nobody.
    with pytest.raises(AssertionError):
        check_lines(random_decoding(tokenizer, names, steps=250, constrain=False)[0], names[0], False)
    # The registered names are written, and the anonymous labels count up from spk0.
    assert "Mike:" in texts[0] and "Mary Ann:" in texts[0] and "张伟:" in texts[2]
    assert "spk0:" in texts[1] and "spk1:" in texts[1]


def test_timestamped_lines_start_with_their_times(tokenizer):
    names = [["Mike"], []]
    texts = random_decoding(tokenizer, names, steps=250, timestamps=True, seed=2)
    for text, registered in zip(texts, names, strict=True):
        assert check_lines(text, registered, timestamps=True) >= 5


def test_a_turn_begins_with_a_word_after_its_label(tokenizer):
    constraint = SpeakerLabelConstraint(tokenizer, ["Mike"], PROMPT, timestamps=True)
    pieces = constraint.vocabulary.pieces

    def allowed_after(text: str) -> list[int]:
        ids = [3] * PROMPT + tokenizer(text, add_special_tokens=False)["input_ids"]
        scores = constraint(torch.tensor([ids]), torch.zeros(1, len(tokenizer)))
        return torch.isfinite(scores[0]).nonzero().flatten().tolist()

    inner = tokenizer("position", add_special_tokens=False)["input_ids"][-1]  # a piece inside a word
    assert not pieces[inner].startswith(b" ")
    for cut in ("[0.0-1.2] Mike: the pos\n[1.2-2.0] Mike:", "[0.0-1.2] spk0:"):
        allowed = allowed_after(cut)
        assert allowed and inner not in allowed
        assert all(pieces[i].startswith(b" ") and b"\n" not in pieces[i] for i in allowed)
    # once the turn has a word, a word goes on with any piece, and the line may end
    allowed = allowed_after("[0.0-1.2] Mike: the pos")
    assert inner in allowed and any(b"\n" in (pieces[i] or b"") for i in allowed)


def test_only_registered_names_without_anonymous_labels(tokenizer):
    constraint = SpeakerLabelConstraint(tokenizer, ["Mike", "Lucy"], PROMPT, anonymous=False)
    ids = torch.full((1, PROMPT), 3, dtype=torch.long)
    generator = torch.Generator().manual_seed(3)
    for _ in range(200):
        scores = torch.randn(1, len(tokenizer), generator=generator)
        scores[:, constraint.vocabulary.special] = -1e4
        ids = torch.cat([ids, constraint(ids, scores).argmax(-1, keepdim=True)], 1)
    labels = {turn["speaker"] for turn in parse_role_transcript(decode(constraint, ids[0, PROMPT:].tolist()))}
    assert labels and labels <= {"Mike", "Lucy"}


def test_a_preferred_invented_name_gives_way_to_the_registered_ones(tokenizer):
    """Scores that spell `Zed: hello` write a registered name instead, then the model's own text;
    the end of turn stays allowed at the start of a line, never inside a label."""
    constraint = SpeakerLabelConstraint(tokenizer, ["Mike", "Lucy"], PROMPT)
    wanted = tokenizer("Zed: hello", add_special_tokens=False)["input_ids"]
    ids = torch.full((1, PROMPT), 3, dtype=torch.long)
    for step in range(12):
        scores = torch.zeros(1, len(tokenizer))
        if step < len(wanted):
            scores[0, wanted[step]] = 10.0
        scores[0, tokenizer.convert_tokens_to_ids("M")] = 5.0  # the registered name comes second
        scores[0, tokenizer.eos_token_id] = 1.0
        ids = torch.cat([ids, constraint(ids, scores).argmax(-1, keepdim=True)], 1)
        if ids[0, -1] == tokenizer.eos_token_id:
            break
    text = decode(constraint, ids[0, PROMPT:].tolist())
    assert text.startswith("Mike:"), text
    start = constraint(torch.full((1, PROMPT), 3, dtype=torch.long), torch.zeros(1, len(tokenizer)))
    assert start[0, tokenizer.eos_token_id] == 0 and start[0, tokenizer.convert_tokens_to_ids("Z")] < -1e30
    # Inside a turn the words are free, but no placeholder or chat marker is ever written.
    turn = tokenizer("Mike: the", add_special_tokens=False)["input_ids"]
    inside = constraint(torch.tensor([[3] * PROMPT + turn]), torch.zeros(1, len(tokenizer)))
    for token in (AUDIO_TOKEN, SPEAKER_TOKEN, "<|im_start|>"):
        assert inside[0, tokenizer.convert_tokens_to_ids(token)] < -1e30, token
    assert inside[0, tokenizer.eos_token_id] == 0 and inside[0, tokenizer.convert_tokens_to_ids("Z")] == 0


class FavourNewLines(LogitsProcessor):
    def __init__(self, newline: int):
        self.newline = newline

    def __call__(self, input_ids, scores):
        scores[:, self.newline] += 4.0
        return scores


def test_generate_with_a_random_model_writes_only_allowed_labels():
    """Inside `generate` (left-padded batch, prompt sliced off by its length), with registration
    in one row and none in the other."""
    model, processor = tiny_speakerlm(seed=4)
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(16000 * length).astype(np.float32) * 0.1 for length in (3, 2)]
    clip = rng.standard_normal(16000 * 2).astype(np.float32) * 0.1
    inputs = processor(audio, speakers=[{"Mike": clip, "Lucy": clip}, None])
    prompt_length = inputs["input_ids"].shape[1]
    names = [["Mike", "Lucy"], []]
    constraint = SpeakerLabelConstraint(processor.tokenizer, names, prompt_length)
    newline = processor.tokenizer.convert_tokens_to_ids("\u010a")
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=80,
            do_sample=True,
            top_k=0,
            logits_processor=LogitsProcessorList([FavourNewLines(newline), constraint]),
            suppress_tokens=constraint.vocabulary.special,  # no end of turn, no placeholders
        )
    for row, registered in zip(out[:, prompt_length:].tolist(), names, strict=True):
        assert check_lines(decode(constraint, row), registered, timestamps=False) >= 3
