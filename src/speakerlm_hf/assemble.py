"""Build a SpeakerLM checkpoint from published parts: SenseVoiceSmall, ERes2NetV2 or CAM++, and a Qwen2.5 LLM.

Each part comes from a local folder or a hub id: SenseVoice and the speaker extractor from
ModelScope (`modelscope.snapshot_download`), the LLM from the Hugging Face Hub. External
weights are read only through safetensors or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from .audio_frontend import load_kaldi_cmvn
from .configuration_speaker_encoders import CAMPPlusConfig, ERes2NetV2Config
from .configuration_speakerlm import SpeakerLMConfig
from .feature_extraction_speakerlm import SpeakerLMFeatureExtractor
from .modeling_campplus import load_campplus
from .modeling_eres2netv2 import load_eres2netv2
from .modeling_sensevoice import load_sensevoice_encoder
from .modeling_speakerlm import SpeakerLMAudioProjector, SpeakerLMForConditionalGeneration
from .processing_speakerlm import SpeakerLMProcessor
from .tokenizer_utils import add_speakerlm_tokens

DEFAULT_SENSEVOICE = "iic/SenseVoiceSmall"
DEFAULT_SPEAKER_MODEL = "iic/speech_eres2netv2_sv_zh-cn_16k-common"
DEFAULT_SPEAKER_REVISION = "v1.0.1"
DEFAULT_LLM = "Qwen/Qwen2.5-7B-Instruct"

# Published ERes2NetV2 sizes; a checkpoint is matched to the first whose shapes fit.
ERES2NETV2_VARIANTS = {
    "eres2netv2": ERes2NetV2Config(),
    "eres2netv2w24s4ep4": ERes2NetV2Config(base_width=24, scale=4, expansion=4),
}
SUPPORTED_FRONTEND = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10}


def resolve_modelscope(source: str, revision: str | None = None) -> str:
    """A local folder as is; otherwise download the ModelScope model id and return its folder."""
    if os.path.isdir(source):
        return source
    try:
        from modelscope import snapshot_download
    except ImportError as error:
        raise ImportError(
            f"{source!r} is not a local folder; downloading it from ModelScope needs `pip install modelscope`"
        ) from error
    return snapshot_download(source, revision=revision)


def read_frontend_settings(sensevoice_dir: str) -> dict:
    """Check SenseVoice's `frontend_conf` and read its LFR settings and `am.mvn` CMVN."""
    import yaml

    with open(os.path.join(sensevoice_dir, "config.yaml"), encoding="utf-8") as file:
        frontend = (yaml.safe_load(file) or {}).get("frontend_conf") or {}
    for key, expected in SUPPORTED_FRONTEND.items():
        if key in frontend and frontend[key] != expected:
            raise ValueError(
                f"{sensevoice_dir}/config.yaml: frontend_conf.{key} is {frontend[key]!r}; "
                f"SpeakerLM's feature extractor supports {expected!r}"
            )
    cmvn_path = os.path.join(sensevoice_dir, "am.mvn")
    if not os.path.isfile(cmvn_path):
        raise FileNotFoundError(f"{cmvn_path} not found: SenseVoice's CMVN statistics are needed")
    shift, scale = load_kaldi_cmvn(cmvn_path)
    lfr_m, lfr_n = int(frontend.get("lfr_m", 7)), int(frontend.get("lfr_n", 6))
    return {
        "num_mel_bins": 80,
        "lfr_m": lfr_m,
        "lfr_n": lfr_n,
        "feature_size": 80 * lfr_m,
        "cmvn_shift": shift,
        "cmvn_scale": scale,
    }


def find_speaker_checkpoint(folder: str) -> str:
    """The weights file of a 3D-Speaker ModelScope folder (named in configuration.json when present)."""
    config_path = os.path.join(folder, "configuration.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as file:
            named = (json.load(file).get("model") or {}).get("pretrained_model")
        if named and os.path.isfile(os.path.join(folder, named)):
            return os.path.join(folder, named)
    candidates = sorted(glob.glob(os.path.join(folder, "*.ckpt")) + glob.glob(os.path.join(folder, "*.bin")))
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"{folder}: expected one speaker-model checkpoint (*.ckpt or *.bin), found {len(candidates)}"
        )
    return candidates[0]


def load_speaker_extractor(source: str, speaker_model: str | None = None):
    """Load ERes2NetV2 (either published size) or CAM++ from a checkpoint file or a folder holding one."""
    path = source if os.path.isfile(source) else find_speaker_checkpoint(source)
    if speaker_model is None:
        speaker_model = "campplus" if "campplus" in os.path.basename(path).lower() else "eres2netv2"
    if speaker_model == "campplus":
        return load_campplus(path, CAMPPlusConfig())
    if speaker_model != "eres2netv2":
        raise ValueError(f"speaker_model must be 'eres2netv2' or 'campplus', got {speaker_model!r}")
    errors = []
    for name, config in ERES2NETV2_VARIANTS.items():
        try:
            return load_eres2netv2(path, config)
        except ValueError as error:
            errors.append(f"{name}: {str(error)[:200]}")
    raise ValueError(f"{path} matches no published ERes2NetV2 size:\n" + "\n".join(errors))


def ensure_vocabulary_fits(llm, tokenizer) -> None:
    """Grow the LLM's embeddings when the added tokens do not fit (Qwen2.5 has spare rows)."""
    if len(tokenizer) > llm.get_input_embeddings().weight.shape[0]:
        llm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)


def assemble_speakerlm(
    sensevoice: str = DEFAULT_SENSEVOICE,
    speaker: str = DEFAULT_SPEAKER_MODEL,
    llm: str = DEFAULT_LLM,
    speaker_model: str | None = None,
    speaker_revision: str | None = DEFAULT_SPEAKER_REVISION,
    dtype: torch.dtype = torch.float32,
    **projector_settings,
) -> tuple[SpeakerLMForConditionalGeneration, SpeakerLMProcessor]:
    """Assemble SpeakerLM: converted SenseVoice encoder and speaker extractor, the LLM with
    SpeakerLM's special tokens, and randomly initialised projectors.

    `projector_settings` are SpeakerLMConfig fields (`audio_token_stride`, `projector_num_layers`, ...).
    """
    sensevoice_dir = resolve_modelscope(sensevoice)
    frontend = read_frontend_settings(sensevoice_dir)
    audio_encoder = load_sensevoice_encoder(sensevoice_dir)
    if audio_encoder.config.input_size != frontend["feature_size"]:
        raise ValueError(
            f"{sensevoice_dir}: encoder input size {audio_encoder.config.input_size} does not match "
            f"the front end's {frontend['feature_size']}"
        )
    speaker_source = speaker if os.path.exists(speaker) else resolve_modelscope(speaker, speaker_revision)
    speaker_encoder = load_speaker_extractor(speaker_source, speaker_model)

    tokenizer = AutoTokenizer.from_pretrained(llm)
    language_model = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
    token_ids = add_speakerlm_tokens(tokenizer)
    ensure_vocabulary_fits(language_model, tokenizer)

    config = SpeakerLMConfig(
        audio_config=audio_encoder.config,
        speaker_config=speaker_encoder.config,
        text_config=language_model.config,
        **token_ids,
        **projector_settings,
    )
    # Build the shell without allocating the big parts, then put the loaded ones in place.
    with torch.device("meta"):
        model = SpeakerLMForConditionalGeneration(config)
    model.audio_encoder = audio_encoder.to(dtype)
    model.speaker_encoder = speaker_encoder
    model.language_model = language_model
    model.audio_projector = SpeakerLMAudioProjector(config).to(dtype)
    model.speaker_projector = torch.nn.Linear(
        config.speaker_config.embedding_size, config.text_config.hidden_size, dtype=dtype
    )
    for module in (model.audio_projector, model.speaker_projector):
        module.apply(model._init_weights)
    model.generation_config = generation_config_for(llm, tokenizer)
    model.eval()

    processor = SpeakerLMProcessor(
        SpeakerLMFeatureExtractor(**frontend),
        tokenizer,
        audio_token_stride=config.audio_token_stride,
        speaker_embedding_size=config.speaker_config.embedding_size,
    )
    return model, processor


def generation_config_for(llm: str, tokenizer) -> GenerationConfig:
    """The LLM's generation config (Qwen2.5 stops at <|im_end|>), greedy by default for transcription."""
    try:
        config = GenerationConfig.from_pretrained(llm)
    except OSError:
        config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config.do_sample = False
    for sampling_only in ("temperature", "top_p", "top_k", "repetition_penalty"):
        setattr(config, sampling_only, None)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def default_permissions(folder: Path) -> None:
    """Give a folder made by `tempfile.mkdtemp` (0700) and its files the modes a plain `mkdir` and
    `open` would (0777 / 0666 less the umask), so a published folder is not private to its writer."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def move_into_place(new: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished folder `new` to `target` with default permissions; an existing `target` is
    swapped out only with `overwrite`, and restored if the rename fails."""
    default_permissions(new)
    if not target.exists():
        os.replace(new, target)
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def check_output_folder(output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """The absolute output folder; FileExistsError when something other than an empty folder is
    there and `overwrite` is off. Call it before long work to fail early; `save_atomically` calls it."""
    target = Path(output_dir).absolute()
    if target.exists() and not overwrite and not (target.is_dir() and not any(target.iterdir())):
        raise FileExistsError(
            f"{target} exists and is not empty; choose a new output folder or pass overwrite"
        )
    return target


def save_atomically(model, processor, output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Write model and processor into a temporary sibling folder, then move it into place, so a
    failure never leaves a half-written checkpoint (nor, with `overwrite`, loses the old one)."""
    target = check_output_folder(output_dir, overwrite)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".speakerlm-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def run_assemble(args: argparse.Namespace) -> int:
    model, processor = assemble_speakerlm(
        sensevoice=args.sensevoice,
        speaker=args.speaker,
        llm=args.llm,
        speaker_model=args.speaker_model,
        speaker_revision=args.speaker_revision,
        dtype=getattr(torch, args.dtype),
        audio_token_stride=args.audio_token_stride,
    )
    save_atomically(model, processor, args.output)
    total = sum(p.numel() for p in model.parameters())
    print(f"assembled SpeakerLM ({total / 1e6:.1f} M parameters) into {args.output}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "assemble",
        help="build a SpeakerLM checkpoint from SenseVoiceSmall, ERes2NetV2/CAM++ and a Qwen2.5 LLM",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sensevoice", default=DEFAULT_SENSEVOICE, help="folder or ModelScope id of SenseVoiceSmall"
    )
    parser.add_argument(
        "--speaker", default=DEFAULT_SPEAKER_MODEL, help="checkpoint, folder or ModelScope id"
    )
    parser.add_argument(
        "--speaker-model", choices=("eres2netv2", "campplus"), help="default: from the file name"
    )
    parser.add_argument("--speaker-revision", default=DEFAULT_SPEAKER_REVISION, help="ModelScope revision")
    parser.add_argument("--llm", default=DEFAULT_LLM, help="folder or Hugging Face id of the instruct LLM")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument(
        "--audio-token-stride", type=int, default=2, help="encoder frames (60 ms) per audio token"
    )
    parser.add_argument("--output", required=True, help="new folder for the assembled checkpoint")
    parser.set_defaults(func=run_assemble)
