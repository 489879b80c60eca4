"""Tiny SpeakerLM models built in seconds, for tests, benchmarks and smoke runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from transformers import Qwen2Config

from .configuration_sensevoice import SenseVoiceEncoderConfig
from .configuration_speaker_encoders import CAMPPlusConfig, ERes2NetV2Config
from .configuration_speakerlm import SpeakerLMConfig
from .feature_extraction_speakerlm import SpeakerLMFeatureExtractor
from .modeling_speakerlm import SpeakerLMForConditionalGeneration
from .processing_speakerlm import SpeakerLMProcessor, flat_prompt
from .tokenizer_utils import add_speakerlm_tokens, train_bpe_tokenizer

TINY_CORPUS = [
    "spk0: good morning everyone, let us start the weekly meeting.",
    "spk1: thanks. I will share the budget numbers for the second quarter.",
    "Mike: the release is planned for next Tuesday if the tests pass.",
    "Lucy: I agree, but we still need the review from the design team.",
    "Jack: can we move the deadline to Friday afternoon?",
    "[12.3-15.8] spk2: the customer called again about the invoice.",
    flat_prompt("sdr", ["Mike", "Lucy", "Jack"]),
    flat_prompt("asr"),
    "Transcribe by roles with timestamps.",
]


def tiny_tokenizer(vocab_size: int = 400):
    tokenizer = train_bpe_tokenizer(TINY_CORPUS * 4, vocab_size=vocab_size)
    add_speakerlm_tokens(tokenizer)
    return tokenizer


def tiny_text_config(tokenizer, **overrides) -> Qwen2Config:
    """A two-layer, 32-wide Qwen2 config over `tokenizer`'s vocabulary."""
    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    fields.update(overrides)
    return Qwen2Config(**fields)


def tiny_config(tokenizer, speaker_model: str = "eres2netv2", **overrides) -> SpeakerLMConfig:
    speaker_config = (
        ERes2NetV2Config(m_channels=8, num_blocks=[1, 1, 1, 1], embedding_size=16)
        if speaker_model == "eres2netv2"
        else CAMPPlusConfig(embedding_size=16, growth_rate=8, init_channels=16, bn_size=2)
    )
    fields = dict(
        audio_config=SenseVoiceEncoderConfig(
            input_size=560,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            num_blocks=2,
            tp_blocks=1,
        ),
        speaker_config=speaker_config,
        text_config=tiny_text_config(tokenizer),
        projector_num_heads=4,
        projector_intermediate_size=64,
        audio_token_stride=2,
        **add_speakerlm_tokens(tokenizer),
    )
    fields.update(overrides)
    return SpeakerLMConfig(**fields)


def tiny_processor(tokenizer, config: SpeakerLMConfig) -> SpeakerLMProcessor:
    return SpeakerLMProcessor(
        SpeakerLMFeatureExtractor(),
        tokenizer,
        audio_token_stride=config.audio_token_stride,
        speaker_embedding_size=config.speaker_config.embedding_size,
    )


def tiny_speakerlm(speaker_model: str = "eres2netv2", seed: int = 0, **overrides):
    """(model, processor) of a tiny random SpeakerLM with a small BPE tokenizer."""
    import torch

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer, speaker_model, **overrides)
    model = SpeakerLMForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tiny_processor(tokenizer, config)


def tone_voice(seconds: float, pitch: float, seed: int) -> np.ndarray:
    """A harmonic 'voice' with noise at 16 kHz: different pitches give different extractor embeddings."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
    return (0.1 * wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def train_on_batch(model, batch, steps: int, lr: float) -> list[float]:
    """`steps` AdamW steps of the trainable parameters on one batch; returns the losses."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def fit_transcripts(
    model: SpeakerLMForConditionalGeneration,
    processor: SpeakerLMProcessor,
    samples: Sequence[tuple[object, Mapping | None, str]],
    steps: int = 150,
    lr: float = 1e-2,
    timestamps: bool = False,
) -> SpeakerLMForConditionalGeneration:
    """Fit a tiny model's LLM until it answers each `(audio, speakers, target)` sample with `target`.

    A random tiny model says arbitrary text; after a few seconds of fitting on one batch it says the
    given transcripts exactly (greedy decoding), so end-to-end tests (pipeline, CLI, Space) can check
    a named transcript. `speakers` is a `{name: clip}` mapping or None; `timestamps` picks the prompt
    the pipeline uses with `return_timestamps=True`. Returns the model, in eval mode and frozen.
    """
    audio, speakers, targets = (list(column) for column in zip(*samples, strict=True))
    batch = processor(audio, speakers=speakers, text=targets, timestamps=timestamps)
    model.set_trainable_parts(["language_model"])
    train_on_batch(model, batch, steps, lr)
    return model.eval().requires_grad_(False)


def run_without_package(script: str, cwd: Path, tmp_path: Path) -> dict:
    """Run `script` in a fresh Python where speakerlm_hf cannot be imported; returns its last JSON line."""
    guard = textwrap.dedent(
        """
        import sys
        sys.modules["speakerlm_hf"] = None  # the installed package must not be importable
        try:
            import speakerlm_hf
        except ImportError:
            pass
        else:
            raise SystemExit("speakerlm_hf is importable")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        TOKENIZERS_PARALLELISM="false",
    )
    done = subprocess.run(
        [sys.executable, "-c", guard + script], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])
