"""Packaging for the Hugging Face Hub: auto classes, `speakerlm export`, `speakerlm push`, safe loading.

An exported folder is exactly what goes to the Hub: safetensors weights, config.json (with `auto_map`
and `custom_pipelines`), generation_config.json, processor and tokenizer files, the remote code and
README.md. It loads with nothing but transformers installed:

    AutoModel.from_pretrained(repo, trust_remote_code=True)
    AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    pipeline("speaker-diarization-recognition", model=repo, trust_remote_code=True)

LoRA: adapters are merged into the LLM weights at the end of every training stage and before export,
so an exported checkpoint is a plain transformers checkpoint without a peft dependency. `export_model`
refuses a model that still has adapters unless asked to merge them, which it does in place (a copy of
a 7B model would double the memory). A mid-run checkpoint of a LoRA stage (config.json records the
adapters' settings under `lora`) loads with its adapters, and `speakerlm export` merges them; unmerged
LoRA weights without those settings are refused.

Safety: `load_exported` reads safetensors only and builds the installed package's classes, so it never
unpickles a file nor runs code from the folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor, GenerationConfig
from transformers.dynamic_module_utils import custom_object_save, get_relative_imports
from transformers.pipelines import PIPELINE_REGISTRY

from .assemble import move_into_place
from .configuration_speakerlm import SpeakerLMConfig
from .feature_extraction_speakerlm import SpeakerLMFeatureExtractor
from .model_card import CardInfo, EvalEntry, as_entries, meta_model, write_model_card
from .modeling_speakerlm import SpeakerLMForConditionalGeneration
from .pipeline_speakerlm import TASK, SpeakerLMPipeline
from .processing_speakerlm import SpeakerLMProcessor

MODEL_TYPE = SpeakerLMConfig.model_type
SINGLE_WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# Suffixes of files that torch.load / pickle would read; never opened, never uploaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "README.md",
)
# Remote files of the kinds an export writes: removed on push when the new export lacks them, so stale
# shards or code never sit next to the new ones.
STALE_PATTERNS = ("*.safetensors", WEIGHTS_INDEX, "*.py", *(f"*{suffix}" for suffix in PICKLE_SUFFIXES))
DEFAULT_MAX_NEW_TOKENS = SpeakerLMPipeline._default_generation_config.max_new_tokens


def register_auto_classes() -> None:
    """Register SpeakerLM for the auto classes and the `speaker-diarization-recognition` pipeline.

    `register_for_auto_class` makes `save_pretrained` write `auto_map` and copy the remote code; the
    local `Auto*.register` calls let the installed package load a saved folder without
    `trust_remote_code` (the folder's code is then not used). Safe to call more than once.
    """
    SpeakerLMConfig.register_for_auto_class()
    SpeakerLMForConditionalGeneration.register_for_auto_class("AutoModel")
    SpeakerLMFeatureExtractor.register_for_auto_class()
    SpeakerLMProcessor.register_for_auto_class()
    registered = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if registered is None or registered["impl"] is not SpeakerLMPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=SpeakerLMPipeline, pt_model=AutoModel, type="multimodal"
        )
    AutoConfig.register(MODEL_TYPE, SpeakerLMConfig, exist_ok=True)
    AutoModel.register(SpeakerLMConfig, SpeakerLMForConditionalGeneration, exist_ok=True)
    AutoFeatureExtractor.register(SpeakerLMConfig, SpeakerLMFeatureExtractor, exist_ok=True)
    AutoProcessor.register(SpeakerLMConfig, SpeakerLMProcessor, exist_ok=True)


def custom_pipelines_entry() -> dict[str, dict[str, Any]]:
    """The `custom_pipelines` field of config.json, as `Pipeline.save_pretrained` writes it."""
    info = dict(SpeakerLMPipeline._registered_impl[TASK])
    info["impl"] = f"{SpeakerLMPipeline.__module__.rsplit('.', 1)[-1]}.{SpeakerLMPipeline.__name__}"
    info["pt"] = [model_class.__name__ for model_class in info["pt"]]
    return {TASK: info}


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} {path} cannot be read as JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return data


def read_speakerlm_config(folder: Path) -> dict:
    """config.json of a SpeakerLM folder, with its model_type checked."""
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no config.json; it is not a saved SpeakerLM model")
    config = _read_json(path, "config")
    if config.get("model_type") != MODEL_TYPE:
        raise ValueError(
            f"{folder}: config.json has model_type {config.get('model_type')!r}; expected {MODEL_TYPE!r} (SpeakerLM)"
        )
    return config


def _pickle_files(folder: Path) -> list[str]:
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES
    )


def _weight_files(folder: Path) -> list[Path]:
    index_path = folder / WEIGHTS_INDEX
    if index_path.is_file():
        weight_map = _read_json(index_path, "weights index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no weight_map")
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file() or f.parent != folder]
        if missing:
            raise ValueError(f"{folder} lacks weight shards named in {WEIGHTS_INDEX}: {missing}")
        return files
    if (folder / SINGLE_WEIGHTS).is_file():
        return [folder / SINGLE_WEIGHTS]
    pickles = _pickle_files(folder)
    if pickles:
        raise ValueError(
            f"{folder} has no safetensors weights, only pickle files {pickles}; SpeakerLM loads safetensors "
            "only and never unpickles. Convert them where you trust their origin (load, then save_pretrained)."
        )
    raise ValueError(f"{folder} has no model weights ({SINGLE_WEIGHTS} or {WEIGHTS_INDEX})")


def _expected_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors a checkpoint of this config stores."""
    model = meta_model(folder)
    # Tied weights (e.g. lm_head = embed_tokens) are stored once, under their source's name.
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items() if name not in tied}


def safetensors_files(folder: Path) -> list[Path]:
    """The safetensors weight files of a folder, checked against its config; pickle files are never opened.

    Only the headers are read. Raises ValueError naming the folder when the weights are missing,
    pickle-only, unreadable, hold unmerged LoRA, or miss, add or reshape tensors of the config's model.
    """
    from safetensors import SafetensorError, safe_open

    files = _weight_files(folder)
    found: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            with safe_open(str(path), "pt") as weights:
                for name in weights.keys():
                    found[name] = tuple(weights.get_slice(name).get_shape())
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path} is not a valid safetensors file: {error}") from error
    lora = [name for name in found if "lora_" in name or ".base_layer." in name]
    if lora and not read_speakerlm_config(folder).get("lora"):
        # without the adapters' settings (their scaling) the weights cannot be rebuilt
        raise ValueError(
            f"{folder} holds unmerged LoRA weights (e.g. {lora[0]!r}) but its config.json has no `lora` "
            "settings; merge them before saving: model.merge_lora(), then save_pretrained (training does "
            "this at the end of each stage)"
        )
    expected = _expected_shapes(folder)
    problems = {
        "missing keys": sorted(expected.keys() - found.keys()),
        "unexpected keys": sorted(found.keys() - expected.keys()),
        "mismatched shapes": sorted(n for n in expected.keys() & found.keys() if expected[n] != found[n]),
    }
    described = "; ".join(f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in problems.items() if keys)
    if described:
        raise ValueError(f"{folder}: the weights do not match config.json: {described}")
    return files


def load_exported(
    folder: str | os.PathLike, dtype: str | Any = "auto"
) -> tuple[SpeakerLMForConditionalGeneration, SpeakerLMProcessor]:
    """Load a saved SpeakerLM folder (an export or a training checkpoint) with the installed classes.

    Only safetensors weights are read and no code from the folder runs. A wrong model_type, missing or
    pickle-only weights, weights that do not match the config, or a missing processor raise ValueError
    naming the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SpeakerLM folder {str(folder)!r} does not exist")
    read_speakerlm_config(folder)
    safetensors_files(folder)
    if not (folder / "processor_config.json").is_file():
        raise ValueError(f"{folder} has no processor_config.json; save the processor next to the model")
    # The processor finds its feature extractor through AutoFeatureExtractor: the local registration
    # makes it take the installed class instead of asking to run the folder's code.
    register_auto_classes()
    model = SpeakerLMForConditionalGeneration.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    processor = SpeakerLMProcessor.from_pretrained(folder)
    return model.eval(), processor


def _code_files(folder: Path) -> list[str]:
    """Module files named by the folder's auto_map and custom_pipelines, with their relative imports."""
    config = read_speakerlm_config(folder)
    processor_config = _read_json(folder / "processor_config.json", "processor config")
    references = []
    for where, auto_map in (
        ("config.json", config.get("auto_map")),
        ("processor_config.json", processor_config.get("auto_map")),
    ):
        if not isinstance(auto_map, dict) or not auto_map:
            raise ValueError(f"{folder}: {where} has no auto_map; export with speakerlm_hf.hub.export_model")
        references += list(auto_map.values())
    pipeline_info = (config.get("custom_pipelines") or {}).get(TASK)
    if not isinstance(pipeline_info, dict) or not isinstance(pipeline_info.get("impl"), str):
        raise ValueError(f"{folder}: config.json does not register the {TASK!r} pipeline (custom_pipelines)")
    references.append(pipeline_info["impl"])
    pending = sorted(
        {f"{reference.rsplit('.', 1)[0]}.py" for reference in references if isinstance(reference, str)}
    )
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found:
            continue
        if not (folder / name).is_file():
            raise ValueError(f"{folder} lacks the remote-code file {name}")
        found.add(name)
        pending += [f"{module}.py" for module in get_relative_imports(folder / name)]
    return sorted(found)


def check_hub_folder(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """Check that `folder` is a complete export; returns the files to upload as (relative path, bytes).

    Hidden files and `__pycache__` are left out; any pickle file is refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder {str(folder)!r} does not exist")
    read_speakerlm_config(folder)
    pickles = _pickle_files(folder)
    if pickles:
        raise ValueError(f"{folder} contains pickle files {pickles}; an export holds safetensors only")
    safetensors_files(folder)
    missing = [name for name in HUB_REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a complete export: missing {missing}")
    _code_files(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(
            part.startswith(".") or part == "__pycache__" for part in relative.parts
        ):
            continue
        files.append((relative.as_posix(), path.stat().st_size))
    return files


def _finish_generation_config(folder: Path, max_new_tokens: int | None) -> None:
    """Give the saved generation config a transcript-sized `max_new_tokens` unless it sets a length,
    and drop SpeakerLM config fields that `from_pretrained(path, field=value)` copied into it."""
    generation_config = GenerationConfig.from_pretrained(folder)
    defaults = GenerationConfig()
    for field in SpeakerLMConfig.__annotations__:
        if field in generation_config.__dict__ and not hasattr(defaults, field):
            delattr(generation_config, field)
    sets_length = (
        generation_config.max_new_tokens is not None or generation_config.max_length != defaults.max_length
    )
    if max_new_tokens is not None or not sets_length:
        generation_config.max_new_tokens = (
            DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
        )
    generation_config.save_pretrained(folder)


def export_model(
    model: SpeakerLMForConditionalGeneration,
    processor: SpeakerLMProcessor,
    out_dir: str | os.PathLike,
    results: str | os.PathLike | Mapping | Sequence | None = None,
    card_info: CardInfo | None = None,
    *,
    merge_lora: bool = False,
    overwrite: bool = False,
    max_shard_size: int | str = "5GB",
    max_new_tokens: int | None = None,
) -> Path:
    """Write the folder that goes to the Hub, atomically: all of it appears at `out_dir`, or nothing does.

    The folder is written next to `out_dir` under a temporary name, checked, then renamed into place
    (replacing an existing `out_dir` only with `overwrite`).

    Args:
        results: evaluation results (a JSON file or its content; see `speakerlm_hf.model_card`) for the
            card's model-index and results table.
        card_info: the card's descriptive fields (model name, repo id used in the snippets, licence, ...).
        merge_lora: merge LoRA adapters still on the model into the LLM, in place, before writing;
            without it such a model is refused.
        max_new_tokens: written to the generation config; by default the generation config gets
            `max_new_tokens=1024` unless it already sets a length.
    """
    if getattr(model.config, "model_type", None) != MODEL_TYPE:
        raise ValueError(f"export_model needs a SpeakerLM model, got model_type {model.config.model_type!r}")
    if model.has_lora and not merge_lora:
        raise ValueError(
            "the model still has LoRA adapters; merge them first (model.merge_lora(), as training does at "
            "the end of each stage) or pass merge_lora=True: an export is a plain checkpoint without peft"
        )
    entries: list[EvalEntry] = as_entries(results)
    target = Path(out_dir).absolute()
    if target.exists() and not (overwrite and target.is_dir()):
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True (--overwrite) to replace it"
            if target.is_dir()
            else f"{target} exists and is not a folder"
        )
    if model.has_lora:
        model.merge_lora()
    target.parent.mkdir(parents=True, exist_ok=True)
    register_auto_classes()

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    had_pipelines = hasattr(model.config, "custom_pipelines")
    previous_pipelines = getattr(model.config, "custom_pipelines", None)
    try:
        model.config.custom_pipelines = custom_pipelines_entry()
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        processor.save_pretrained(staging)
        custom_object_save(SpeakerLMPipeline, staging)
        _finish_generation_config(staging, max_new_tokens)
        write_model_card(staging, card_info, entries)
        check_hub_folder(staging)
        move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        # The caller's config stays as it was.
        if had_pipelines:
            model.config.custom_pipelines = previous_pipelines
        else:
            del model.config.custom_pipelines
    return target


@dataclass(frozen=True)
class PushReport:
    """What `push_folder` uploads (or would upload, on a dry run) and where."""

    folder: Path
    repo_id: str
    revision: str | None
    private: bool
    files: tuple[tuple[str, int], ...]
    warnings: tuple[str, ...] = ()
    commit_url: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        target = f"{self.repo_id}@{self.revision or 'main'}" + (" (private)" if self.private else "")
        width = max(len(name) for name, _ in self.files)
        lines = [f"{name:<{width}}  {_size(size):>10}" for name, size in self.files]
        lines.append(f"{len(self.files)} files, {_size(self.total_bytes)} -> {target}")
        lines.append(f"remote files matching {list(STALE_PATTERNS)} that this export lacks are deleted")
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    exponent = min(int(math.log(count, 1024)), 4)
    return f"{count / 1024**exponent:.1f} {'BKMGT'[exponent]}{'iB' if exponent else ''}"


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    commit_message: str | None = None,
) -> PushReport:
    """Upload an export folder to the Hub model repo `repo_id` (created if needed).

    The folder is checked first (`check_hub_folder`). The token is `token`, else `HF_TOKEN`, else the
    cached login; without one a ValueError is raised before any network call. With `dry_run` nothing
    is sent: the report lists what would be uploaded. `revision` names a branch, created if needed.
    `private` applies when the repo is created; an existing repo keeps its visibility.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{repo_id!r} is not a valid Hub repo id (owner/name): {error}") from error
    folder = Path(folder)
    files = tuple(check_hub_folder(folder))
    warnings = ()
    if f'"{repo_id}"' not in (folder / "README.md").read_text(encoding="utf-8"):
        warnings = (
            f"the usage snippets in README.md do not load {repo_id!r}; export with --repo-id {repo_id} "
            "or rewrite the card with hub_card/generate_card.py",
        )
    report = PushReport(folder, repo_id, revision, private, files, warnings)
    if dry_run:
        return report
    token = token or get_token()
    if not token:
        raise ValueError("no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`")
    api = HfApi(token=token)
    # private=None keeps the account's default visibility for new repos.
    api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=folder,
        revision=revision,
        commit_message=commit_message or f"Upload {folder.name} with speakerlm push",
        allow_patterns=[name for name, _ in report.files],
        delete_patterns=list(STALE_PATTERNS),
    )
    return replace(report, commit_url=commit.commit_url)


EXPORT_DESCRIPTION = """\
Write the folder that goes to the Hub from a checkpoint folder (model and processor saved with
save_pretrained, e.g. the output of a training stage): safetensors weights, config with auto_map and
custom_pipelines, generation config, processor and tokenizer files, the remote code and README.md.

LoRA adapters are merged into the LLM at the end of each training stage, so the export is a plain
transformers checkpoint that needs no peft; a checkpoint with unmerged LoRA weights is refused.
Pickle weights are never read. The output appears atomically (written under a temporary name, then
renamed)."""


def run_export(args: argparse.Namespace) -> int:
    """Handler of `speakerlm export`."""
    info = CardInfo.from_file(args.card_info) if args.card_info else CardInfo()
    if args.repo_id:
        info.repo_id = args.repo_id
    if args.model_name:
        info.model_name = args.model_name
    if info.repo_id == CardInfo.repo_id:
        print(f"note: the card's usage snippets name {info.repo_id!r}; pass --repo-id to name the real repo")
    model, processor = load_exported(args.checkpoint)
    if model.has_lora:
        print(
            "note: the checkpoint holds unmerged LoRA adapters (a mid-run checkpoint); the export merges them"
        )
    out = export_model(
        model,
        processor,
        args.output,
        results=args.results,
        card_info=info,
        overwrite=args.overwrite,
        max_shard_size=args.max_shard_size,
        max_new_tokens=args.max_new_tokens,
        merge_lora=model.has_lora,
    )
    files = check_hub_folder(out)
    print(f"exported {len(files)} files ({_size(sum(size for _, size in files))}) to {out}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    """Handler of `speakerlm push`."""
    report = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        token=args.token,
        dry_run=args.dry_run,
        commit_message=args.commit_message,
    )
    print(report.describe())
    print("dry run: nothing uploaded" if args.dry_run else f"uploaded: {report.commit_url}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` and `push` subcommands to the project's CLI."""
    export = subparsers.add_parser(
        "export",
        help="write the Hub folder (weights, configs, processor, remote code, model card)",
        description=EXPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "checkpoint", type=Path, help="folder with the model and processor saved by save_pretrained"
    )
    export.add_argument("output", type=Path, help="export folder to write")
    export.add_argument(
        "--results", type=Path, help="evaluation results JSON for the card (see speakerlm_hf.model_card)"
    )
    export.add_argument(
        "--card-info", type=Path, help="JSON or YAML of the card's fields (model_name, license, ...)"
    )
    export.add_argument("--repo-id", help="Hub repo id the card's usage snippets load (owner/name)")
    export.add_argument("--model-name", help="model name in the card and its model-index")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    export.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default: 5GB)")
    export.add_argument(
        "--max-new-tokens",
        type=int,
        help=f"generation length to store (default: {DEFAULT_MAX_NEW_TOKENS} if unset)",
    )
    export.set_defaults(func=run_export)

    push = subparsers.add_parser(
        "push",
        help="upload an export folder to a Hub model repo",
        description=(
            "Upload a folder written by `speakerlm export` to the Hub (the repo is created if needed). The token "
            "comes from --token, HF_TOKEN or the cached login (`hf auth login`)."
        ),
    )
    push.add_argument("repo_id", help="Hub model repo id (owner/name)")
    push.add_argument("folder", nargs="?", default=Path("."), type=Path, help="export folder (default: .)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to (created if needed; default: main)")
    push.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the cached login)")
    push.add_argument("--commit-message", help="commit message")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded and upload nothing")
    push.set_defaults(func=run_push)


__all__ = [
    "register_auto_classes",
    "export_model",
    "load_exported",
    "check_hub_folder",
    "safetensors_files",
    "push_folder",
    "PushReport",
    "register",
]
