"""Assemble the untrained SpeakerLM-Tiny: small BPE tokenizer, SenseVoice-shaped encoder, Qwen2 LM,
and the trained (frozen) CAM++ extractor, saved like `speakerlm assemble` saves a full-size model.

    python -m training.tiny.assemble --corpus /work/data/synthetic-en \
        --speaker-extractor /work/data/speaker_extractor --out outputs/tiny/assembled

Nothing here is pretrained except the extractor (`training/tiny/speaker_extractor.py`); the
encoder and the LM train from scratch in stage 1. The feature extractor's CMVN is estimated on
training utterances, as SenseVoice's `am.mvn` was on its own data.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig

from speakerlm_hf.assemble import save_atomically
from speakerlm_hf.audio_frontend import sensevoice_features
from speakerlm_hf.configuration_sensevoice import SenseVoiceEncoderConfig
from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
from speakerlm_hf.feature_extraction_speakerlm import SpeakerLMFeatureExtractor
from speakerlm_hf.modeling_campplus import CAMPPlusModel
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor, flat_prompt
from speakerlm_hf.testing_utils import tiny_text_config
from speakerlm_hf.tokenizer_utils import add_speakerlm_tokens, train_bpe_tokenizer

from ..synthetic.corpus import load_utterances
from ..synthetic.grammar import Grammar

logger = logging.getLogger("speakerlm.tiny.assemble")

# Names the tokenizer should know besides the corpus: speaker labels and common enrolment names.
LABEL_TEXTS = [f"spk{i}: " for i in range(64)] + [
    "Person A: ",
    "Person B: ",
    "Person C: ",
    "Person D: ",
    "Alice: ",
    "Bob: ",
    "Carol: ",
    "David: ",
]


def tokenizer_texts(corpus: str, grammar: Grammar) -> list[str]:
    texts = list(load_utterances(corpus, "train", streaming=False, decode=False)["text"])
    texts += sorted(grammar.vocabulary)
    names = ["Mike", "Lucy", "Jack", "Anna"]
    texts += [
        flat_prompt("sdr", names),
        flat_prompt("sdr"),
        flat_prompt("asr"),
        flat_prompt("sdr", names, timestamps=True),
    ]
    return texts + LABEL_TEXTS * 20


def estimate_cmvn(corpus: str, num_utterances: int, lfr_m: int = 7, lfr_n: int = 6):
    """Per-dimension shift (-mean) and scale (1/std) of the LFR features of training utterances."""
    dataset = load_utterances(corpus, "train", streaming=True, decode=True)
    identity = torch.zeros(80 * lfr_m), torch.ones(80 * lfr_m)
    frames = []
    for row in dataset.take(num_utterances):
        frames.append(
            sensevoice_features(np.asarray(row["audio"]["array"]), *identity, lfr_m=lfr_m, lfr_n=lfr_n)
        )
    stacked = torch.cat(frames)
    mean, std = stacked.mean(0), stacked.std(0).clamp_min(1e-3)
    return (-mean).tolist(), (1.0 / std).tolist()


def tiny_configs(tokenizer, extractor_config, ids: dict) -> SpeakerLMConfig:
    audio = SenseVoiceEncoderConfig(
        input_size=560,
        hidden_size=256,
        num_attention_heads=4,
        intermediate_size=1024,
        num_blocks=5,
        tp_blocks=0,
        dropout=0.1,
        attention_dropout=0.1,
    )
    text = tiny_text_config(
        tokenizer,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    return SpeakerLMConfig(
        audio_config=audio,
        speaker_config=extractor_config.to_dict(),
        text_config=text,
        projector_num_layers=1,
        projector_num_heads=4,
        projector_intermediate_size=1024,
        audio_token_stride=2,
        **ids,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--speaker-extractor", required=True, help="folder of the trained CAM++")
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--cmvn-utterances", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)

    tokenizer = train_bpe_tokenizer(tokenizer_texts(args.corpus, Grammar()), vocab_size=args.vocab_size)
    ids = add_speakerlm_tokens(tokenizer)
    extractor = CAMPPlusModel.from_pretrained(args.speaker_extractor)
    config = tiny_configs(tokenizer, extractor.config, ids)
    model = SpeakerLMForConditionalGeneration(config)
    missing = model.speaker_encoder.load_state_dict(extractor.state_dict(), strict=True)
    logger.info("extractor loaded: %s", missing)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    shift, scale = estimate_cmvn(args.corpus, args.cmvn_utterances)
    processor = SpeakerLMProcessor(
        SpeakerLMFeatureExtractor(cmvn_shift=shift, cmvn_scale=scale),
        tokenizer,
        audio_token_stride=config.audio_token_stride,
        speaker_embedding_size=config.speaker_config.embedding_size,
    )
    counts = {
        part: sum(p.numel() for p in getattr(model, part).parameters())
        for part in (
            "audio_encoder",
            "audio_projector",
            "speaker_encoder",
            "speaker_projector",
            "language_model",
        )
    }
    logger.info(
        "parameters (M): %s, total %.2f",
        {k: round(v / 1e6, 2) for k, v in counts.items()},
        sum(counts.values()) / 1e6,
    )
    save_atomically(model, processor, Path(args.out), overwrite=True)
    logger.info("wrote %s (vocabulary %d)", args.out, len(tokenizer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
