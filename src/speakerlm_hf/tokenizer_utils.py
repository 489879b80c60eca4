"""Tokenizers for SpeakerLM: adding its special tokens, and training a small Qwen-style BPE tokenizer."""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, Qwen2Tokenizer

from .configuration_speakerlm import AUDIO_TOKEN, END_TOKEN, SPEAKER_TOKEN, SPECIAL_TOKENS, START_TOKEN
from .processing_speakerlm import CHAT_TEMPLATE

QWEN_CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def add_speakerlm_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Add the audio/speaker placeholders and the `<start>`/`<end>` markers as special tokens.

    Returns the config fields naming their ids. Tokens already present keep their ids.
    """
    missing = [token for token in SPECIAL_TOKENS if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    ids = tokenizer.convert_tokens_to_ids
    return {
        "audio_token_id": ids(AUDIO_TOKEN),
        "speaker_token_id": ids(SPEAKER_TOKEN),
        "start_token_id": ids(START_TOKEN),
        "end_token_id": ids(END_TOKEN),
    }


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer with Qwen2's pre-tokenisation, control tokens and chat layout.

    Small models (tests, the shipped SpeakerLM-Tiny) use it in place of Qwen2.5's 151k vocabulary.
    """
    probe = Qwen2Tokenizer()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = probe.backend_tokenizer.pre_tokenizer
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_CONTROL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    vocab = bpe.get_vocab()
    merges = _merges_of(bpe)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": list(QWEN_CONTROL_TOKENS)}, replace_extra_special_tokens=False
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _merges_of(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """The merge list of a trained BPE tokenizer, read from its serialised state."""
    state = json.loads(tokenizer.to_str())["model"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
