"""The model card (README.md) of an exported SpeakerLM folder.

The card is rendered from `model_card_template.md` (shipped with the package) with
`huggingface_hub.ModelCard.from_template`: YAML metadata (library, pipeline tag, tags, base models,
languages, datasets, license, model-index), the architecture read from the folder's config.json
(parameters counted on a meta-device model, no weights loaded), usage snippets, training,
evaluation, limitations and the paper's citation.

Evaluation results come from a JSON file (percentages unless `"unit": "fraction"`)::

    {"results": [
        {"dataset": "AliMeeting-Eval", "dataset_id": "alimeeting", "split": "eval",
         "registration": "no-regist", "metrics": {"cer": 13.9, "cpcer": 16.05}},
        {"dataset": "AliMeeting-Eval", "dataset_id": "alimeeting", "split": "eval",
         "registration": "match-regist", "metrics": {"cer": 13.98, "sacer": 15.57}}
    ]}

Metrics are `cer`, `cpcer`, `delta_cp`, `sacer`, `delta_sa` (also spelled CER, cpCER, Δcp, saCER,
Δsa); a missing Δ is computed from its two rates, a given one must agree with them. Registration
is `no-regist`, `match-regist` or `over-regist`.

Descriptive fields the folder cannot tell (model name, repo id, licence, languages, datasets, base
models, training stages and data) come from a `CardInfo`, loadable from a JSON or YAML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_speakerlm import SpeakerLMConfig
from .modeling_speakerlm import SpeakerLMForConditionalGeneration
from .pipeline_speakerlm import TASK

TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")
PIPELINE_TAG = "automatic-speech-recognition"
TASK_NAME = "Speaker diarization and recognition"
PAPER_URL = "https://arxiv.org/abs/2508.06372"
CARD_TAGS = (
    TASK,
    "speaker-diarization",
    "speaker-recognition",
    "speech",
    "audio",
    "multimodal-llm",
    "custom_code",
)

REGISTRATION_MODES = {"no-regist": "No-Regist", "match-regist": "Match-Regist", "over-regist": "Over-Regist"}
METRICS = {
    "cer": "CER",
    "cpcer": "cpCER",
    "delta_cp": "Δcp",
    "sacer": "saCER",
    "delta_sa": "Δsa",
    "tcpcer": "tcpCER",
    "der": "DER",
}
# Each Δ is its attributed rate minus the CER.
DELTAS = {"delta_cp": "cpcer", "delta_sa": "sacer"}
METRIC_ALIASES = {
    **{key: key for key in METRICS},
    **{label.lower(): key for key, label in METRICS.items()},
    "deltacp": "delta_cp",
    "delta-cp": "delta_cp",
    "deltasa": "delta_sa",
    "delta-sa": "delta_sa",
}
# A Δ given with its rates may differ from their difference by the rounding of three numbers.
DELTA_TOLERANCE = 0.015

SPEAKER_ENCODERS = {
    "eres2netv2": (
        "ERes2NetV2",
        "https://modelscope.cn/models/iic/speech_eres2netv2_sv_zh-cn_16k-common",
    ),
    "campplus": ("CAM++", "https://modelscope.cn/models/iic/speech_campplus_sv_zh-cn_16k-common"),
}
MODEL_PARTS = {
    "audio_encoder": "Audio encoder",
    "audio_projector": "Audio projector",
    "speaker_encoder": "Speaker extractor (frozen)",
    "speaker_projector": "Speaker projector",
    "language_model": "LLM",
}

DEFAULT_STAGES = (
    {
        "stage": "1",
        "data": "ASR data",
        "trained": "LLM (LoRA) + audio projector",
        "frozen": "speaker modules absent",
    },
    {
        "stage": "2",
        "data": "simulated SDR (concatenated single-speaker utterances, 2-4 speakers, ~50 s)",
        "trained": "audio and speaker projectors",
        "frozen": "LLM, audio encoder",
    },
    {"stage": "3", "data": "real SDR (meetings)", "trained": "audio encoder + projectors", "frozen": "LLM"},
    {
        "stage": "4",
        "data": "real SDR (meetings)",
        "trained": "audio encoder, projectors, LLM (LoRA)",
        "frozen": "speaker extractor",
    },
)
# The published components SpeakerLM is assembled from, by their Hub ids. ERes2NetV2 is published on
# ModelScope only (see SPEAKER_ENCODERS), so it has no default Hub id.
DEFAULT_BASE_MODELS: dict[str, str | None] = {
    "llm": "Qwen/Qwen2.5-7B-Instruct",
    "audio_encoder": "FunAudioLLM/SenseVoiceSmall",
    "speaker_encoder": None,
}
DEFAULT_PROCEDURE = (
    "Registration is drawn per sample: a third of the samples register exactly the speakers present "
    "(Match-Regist), a third none (No-Regist), and a third add 1-50 speakers from other sessions (Over-Regist)."
)


@dataclass(frozen=True)
class EvalEntry:
    """The scores of one dataset split under one registration mode, in percent."""

    dataset: str
    dataset_id: str
    split: str
    registration: str
    metrics: dict[str, float]


def read_data_file(path: str | Path, what: str) -> Any:
    """Parse a JSON or YAML file (JSON is read as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON or YAML: {error}") from error


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _registration(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: registration must be one of {sorted(REGISTRATION_MODES)}, got {value!r}")
    mode = value.strip().lower().replace("_", "-").replace(" ", "-")
    mode = mode if mode.endswith("-regist") else f"{mode}-regist"
    if mode not in REGISTRATION_MODES:
        raise ValueError(f"{where}: registration must be one of {sorted(REGISTRATION_MODES)}, got {value!r}")
    return mode


def _metrics(raw: object, scale: float, registration: str, where: str) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{where}: 'metrics' must be a non-empty mapping of {list(METRICS)} to numbers")
    metrics: dict[str, float] = {}
    for name, value in raw.items():
        key = METRIC_ALIASES.get(str(name).strip().lower().replace("δ", "delta_").replace("__", "_"))
        if key is None:
            raise ValueError(f"{where}: unknown metric {name!r}; expected some of {list(METRICS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: metric {name!r} must be a finite number, got {value!r}")
        if key not in DELTAS and value < 0:
            raise ValueError(f"{where}: metric {name!r} is a rate and cannot be negative, got {value!r}")
        metrics[key] = float(value) * scale
    if registration == "no-regist" and {"sacer", "delta_sa"} & metrics.keys():
        raise ValueError(f"{where}: saCER needs registered names; it has no meaning under no-regist")
    for delta, rate in DELTAS.items():
        if "cer" not in metrics or rate not in metrics:
            continue
        difference = round(metrics[rate] - metrics["cer"], 4)
        if delta not in metrics:
            metrics[delta] = difference
        elif abs(metrics[delta] - difference) > DELTA_TOLERANCE * scale:
            raise ValueError(
                f"{where}: {METRICS[delta]} = {metrics[delta]:g} but {METRICS[rate]} - CER = {difference:g}"
            )
    return {key: metrics[key] for key in METRICS if key in metrics}


def load_results(source: str | Path | Mapping | Sequence) -> list[EvalEntry]:
    """Read evaluation results (a JSON file, or its parsed content) into entries, checked.

    Raises ValueError naming the file and entry for anything malformed.
    """
    name = "evaluation results"
    if isinstance(source, (str, Path)):
        name = str(source)
        source = read_data_file(source, "evaluation results file")
    if isinstance(source, Mapping):
        unit = source.get("unit", "percent")
        items = source.get("results")
    else:
        unit, items = "percent", source
    if unit not in ("percent", "fraction"):
        raise ValueError(f"{name}: unit must be 'percent' or 'fraction', got {unit!r}")
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise ValueError(f"{name}: expected a non-empty list under 'results'")
    scale = 100.0 if unit == "fraction" else 1.0

    entries: list[EvalEntry] = []
    seen: set[tuple[str, str, str]] = set()
    for i, item in enumerate(items):
        where = f"{name}, results[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
        unknown = set(item) - {"dataset", "dataset_id", "split", "registration", "metrics"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        dataset = item.get("dataset")
        if not isinstance(dataset, str) or not dataset.strip():
            raise ValueError(f"{where}: 'dataset' must be a non-empty name")
        registration = _registration(item.get("registration"), where)
        dataset_id = str(item.get("dataset_id") or _slug(dataset))
        split = str(item.get("split") or "test")
        key = (dataset_id, split, registration)
        if key in seen:
            raise ValueError(f"{where}: {dataset} ({split}, {registration}) is listed twice")
        seen.add(key)
        metrics = _metrics(item.get("metrics"), scale, registration, where)
        entries.append(EvalEntry(dataset.strip(), dataset_id, split, registration, metrics))
    return entries


def as_entries(results: str | Path | Mapping | Sequence | None) -> list[EvalEntry]:
    """Checked entries from results in any accepted form (None: no results)."""
    if results is None:
        return []
    if isinstance(results, Sequence) and not isinstance(results, str):
        if all(isinstance(entry, EvalEntry) for entry in results):
            return list(results)
    return load_results(results)


def eval_results(entries: Sequence[EvalEntry]) -> list[EvalResult]:
    """One `EvalResult` per metric; the registration mode is the dataset config of the model-index."""
    return [
        EvalResult(
            task_type=PIPELINE_TAG,
            task_name=TASK_NAME,
            dataset_type=entry.dataset_id,
            dataset_name=entry.dataset,
            dataset_config=entry.registration,
            dataset_split=entry.split,
            metric_type=metric,
            metric_name=METRICS[metric],
            metric_value=value,
        )
        for entry in entries
        for metric, value in entry.metrics.items()
    ]


def results_table(entries: Sequence[EvalEntry]) -> str:
    """Markdown table of the results (percent, two decimals)."""
    if not entries:
        return "No evaluation results were supplied with this export."
    header = "| Dataset | Split | Registration | " + " | ".join(METRICS.values()) + " |"
    lines = [header, "|" + "---|" * (3 + len(METRICS))]
    for entry in entries:
        values = [f"{entry.metrics[m]:.2f}" if m in entry.metrics else "–" for m in METRICS]
        lines.append(
            f"| {entry.dataset} | {entry.split} | {REGISTRATION_MODES[entry.registration]} | "
            + " | ".join(values)
            + " |"
        )
    return "\n".join(lines)


@dataclass
class CardInfo:
    """What the card says that the exported folder cannot tell."""

    model_name: str = "SpeakerLM"
    repo_id: str = "YOUR_USERNAME/SpeakerLM"
    description: str = ""
    license: str = "apache-2.0"
    languages: list[str] = field(default_factory=lambda: ["zh"])
    datasets: list[str] = field(default_factory=list)
    # Hub ids of the components the weights started from, merged over DEFAULT_BASE_MODELS; None leaves
    # a component out of `base_model`.
    base_models: dict[str, str | None] = field(default_factory=dict)
    training_stages: list[dict[str, str]] = field(default_factory=lambda: [dict(s) for s in DEFAULT_STAGES])
    training_data: str = ""
    training_procedure: str = DEFAULT_PROCEDURE
    limitations: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        for name in ("languages", "datasets", "limitations", "tags"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        if not isinstance(self.base_models, Mapping):
            raise ValueError(
                "base_models must map a component (llm, audio_encoder, speaker_encoder) to a Hub id"
            )
        self.base_models = {**DEFAULT_BASE_MODELS, **self.base_models}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "card info") -> CardInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; expected some of {sorted(names)}")
        try:
            info = cls(**data)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        for stage in info.training_stages:
            missing = {"stage", "data", "trained", "frozen"} - set(stage)
            if missing:
                raise ValueError(f"{where}: training stage {stage!r} lacks {sorted(missing)}")
        return info

    @classmethod
    def from_file(cls, path: str | Path) -> CardInfo:
        """Read a JSON or YAML file of `CardInfo` fields."""
        data = read_data_file(path, "card info file")
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping of card fields")
        return cls.from_dict(data, str(path))


def meta_model(folder: str | Path) -> SpeakerLMForConditionalGeneration:
    """The model described by `folder/config.json`, built on the meta device (no memory, no weights)."""
    try:
        config = SpeakerLMConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{folder}: config.json does not describe a valid SpeakerLM: {error}") from error
    with torch.device("meta"):
        return SpeakerLMForConditionalGeneration(config)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per top-level part of a model (tied weights counted once)."""
    counts: dict[str, int] = {}
    for name, param in model.named_parameters():
        part = name.split(".", 1)[0]
        counts[part] = counts.get(part, 0) + param.numel()
    return counts


def _count(count: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return str(count)


def architecture_table(config: Mapping[str, Any], counts: Mapping[str, int], frame_ms: int = 60) -> str:
    """Markdown table of the model's parts, sizes and parameter counts; `frame_ms` is the encoder's frame step."""
    audio, speaker, text = config["audio_config"], config["speaker_config"], config["text_config"]
    speaker_name, speaker_url = SPEAKER_ENCODERS.get(
        speaker.get("model_type"), (speaker.get("model_type"), None)
    )
    stride = config.get("audio_token_stride", 2)
    details = {
        "audio_encoder": f"SenseVoice SANM encoder, {audio.get('num_blocks')} + {audio.get('tp_blocks')} blocks, "
        f"width {audio.get('hidden_size')}",
        "audio_projector": f"{config.get('projector_num_layers')} Transformer layers + strided convolution "
        f"({stride} frames -> 1 token, {stride * frame_ms} ms per audio token)",
        "speaker_encoder": f"[{speaker_name}]({speaker_url}), {speaker.get('embedding_size')}-d embedding"
        if speaker_url
        else f"{speaker_name}, {speaker.get('embedding_size')}-d embedding",
        "speaker_projector": f"linear {speaker.get('embedding_size')} -> {text.get('hidden_size')}",
        "language_model": f"{text.get('model_type')} causal LM, {text.get('num_hidden_layers')} layers, "
        f"hidden {text.get('hidden_size')}, vocabulary {text.get('vocab_size')}",
    }
    lines = ["| Part | Details | Parameters |", "|---|---|---|"]
    for part, label in MODEL_PARTS.items():
        lines.append(f"| {label} | {details[part]} | {_count(counts[part]) if part in counts else '–'} |")
    lines.append(f"| **Total** | | **{_count(sum(counts.values()))}** |")
    return "\n".join(lines)


def stages_table(stages: Sequence[Mapping[str, str]]) -> str:
    lines = ["| Stage | Data | Trained | Frozen |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['data']} | {s['trained']} | {s['frozen']} |" for s in stages]
    return "\n".join(lines)


def card_data(info: CardInfo, entries: Sequence[EvalEntry]) -> ModelCardData:
    """The YAML metadata: library, task, tags, base models, languages, datasets, metrics, model-index."""
    base_models = [repo for repo in info.base_models.values() if repo]
    used_metrics = [m for m in METRICS if any(m in e.metrics for e in entries)]
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=list(dict.fromkeys([*CARD_TAGS, *info.tags])),
        base_model=base_models or None,
        language=list(info.languages) or None,
        datasets=list(info.datasets) or None,
        metrics=used_metrics or None,
        license=info.license,
        model_name=info.model_name,
        eval_results=eval_results(entries) or None,
        # Several base models would otherwise read as a merge of them.
        base_model_relation="finetune" if base_models else None,
    )


def render_model_card(
    folder: str | Path,
    info: CardInfo | None = None,
    results: str | Path | Mapping | Sequence | None = None,
) -> ModelCard:
    """The card of an exported folder (its config.json and processor_config.json are read)."""
    folder = Path(folder)
    info = info or CardInfo()
    entries = as_entries(results)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} has no config.json; export the model before writing its card")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    processor_path = folder / "processor_config.json"
    processor = json.loads(processor_path.read_text(encoding="utf-8")) if processor_path.is_file() else {}
    # The encoder sees one LFR frame every lfr_n fbank frames of 10 ms.
    frame_ms = 10 * processor.get("feature_extractor", {}).get("lfr_n", 6)
    speaker_type = config["speaker_config"].get("model_type")
    speaker_name = SPEAKER_ENCODERS.get(speaker_type, (speaker_type,))[0]
    limitations = "\n".join(f"- {item}" for item in info.limitations)
    return ModelCard.from_template(
        card_data(info, entries),
        template_path=str(TEMPLATE_PATH),
        model_name=info.model_name,
        repo_id=info.repo_id,
        description=info.description.strip(),
        architecture_table=architecture_table(config, parameter_counts(meta_model(folder)), frame_ms),
        speaker_encoder_name=speaker_name,
        stages_table=stages_table(info.training_stages),
        training_data=info.training_data.strip(),
        training_procedure=info.training_procedure.strip(),
        results_table=results_table(entries),
        extra_limitations=limitations,
        paper_url=PAPER_URL,
    )


def write_model_card(
    folder: str | Path,
    info: CardInfo | None = None,
    results: str | Path | Mapping | Sequence | None = None,
) -> Path:
    """Render the card of `folder` and write it as `folder/README.md`."""
    card = render_model_card(folder, info, results)
    path = Path(folder) / "README.md"
    card.save(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """(Re)write README.md of an exported folder, e.g. after new evaluation results."""
    parser = argparse.ArgumentParser(
        description="Write the model card (README.md) of an exported SpeakerLM folder."
    )
    parser.add_argument("folder", type=Path, help="folder written by `speakerlm export`")
    parser.add_argument("--results", type=Path, help="evaluation results JSON (see speakerlm_hf.model_card)")
    parser.add_argument("--card-info", type=Path, help="JSON or YAML file of CardInfo fields")
    args = parser.parse_args(argv)
    try:
        info = CardInfo.from_file(args.card_info) if args.card_info else None
        print(f"wrote {write_model_card(args.folder, info, args.results)}")
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "CardInfo",
    "EvalEntry",
    "load_results",
    "as_entries",
    "eval_results",
    "results_table",
    "card_data",
    "parameter_counts",
    "meta_model",
    "render_model_card",
    "write_model_card",
]
