"""One entry point for the four SpeakerLM training stages.

    python -m training.train training/configs/stage1.yaml [--key value ...]
    accelerate launch --config_file training/accelerate/ddp.yaml -m training.train training/configs/stage2.yaml

A stage config (YAML) holds `StageArguments` and `TrainingArguments` fields; command-line
`--key value` pairs override it. Each stage starts from `model_name_or_path` (stage 1: the
assembled model, later stages: the previous stage's `final/` folder), trains exactly the parts the
spec's table names, validates by transcribing and scoring, and writes `<output_dir>/final` with
LoRA merged. A rerun in the same `output_dir` resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import torch
import torch.distributed as distributed
import yaml
from transformers import HfArgumentParser, TrainingArguments, set_seed

from speakerlm_hf.assemble import save_atomically
from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
from speakerlm_hf.data import (
    RegistrationSampler,
    SimulationConfig,
    SpeakerBank,
    SpeakerLMDataCollator,
    load_prepared,
    name_pool,
    simulate_conversations,
)
from speakerlm_hf.data.audio import decode_audio
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor
from speakerlm_hf.trainer import (
    STAGES,
    GenerationExample,
    SkippingCollator,
    SpeakerLMTrainer,
    Stage,
    finish_stage,
    latest_complete_checkpoint,
    prepare_model_for_stage,
)

logger = logging.getLogger("speakerlm.train")
DATA_KINDS = ("asr", "simulated", "prepared")
DEFAULT_KIND = {1: "asr", 2: "simulated", 3: "prepared", 4: "prepared"}


@dataclass
class StageArguments:
    stage: int = field(metadata={"help": "1 (ASR), 2 (simulated SDR), 3 or 4 (real SDR)"})
    model_name_or_path: str = field(
        metadata={"help": "assembled model (stage 1) or the previous stage's final/"}
    )
    train_data: str = field(
        metadata={
            "help": "folder of parquet shards, a glob, or a Hub dataset id; prepared data may name several "
            "folders or globs separated by commas"
        }
    )
    train_data_kind: str = field(
        default="auto",
        metadata={"help": "asr | simulated | prepared; auto: asr, simulated, prepared, prepared"},
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "data transcribed and scored at validation"}
    )
    eval_examples: int = field(
        default=32, metadata={"help": "validation recordings (from the start of eval_data)"}
    )
    audio_column: str = "audio"
    text_column: str = "text"
    speaker_column: str = "speaker"
    speaker_bank: str | None = field(
        default=None, metadata={"help": "embeddings for Over-Regist (prepare-data)"}
    )
    registration_probabilities: list[float] = field(
        default_factory=lambda: [1 / 3, 1 / 3, 1 / 3], metadata={"help": "match, no, over"}
    )
    registration_per_batch: bool = field(default=True, metadata={"help": "one draw per batch, as the paper"})
    max_extra_speakers: int = 50
    registration_names: str = field(
        default="all",
        metadata={
            "help": "names given to registered speakers: all | english | chinese | a file, one per line"
        },
    )
    enrollment: str = field(default="clips", metadata={"help": "clips | embeddings (from the speaker bank)"})
    timestamps: float = field(default=0.0, metadata={"help": "probability of the timestamped target"})
    asr_probability: float = field(
        default=0.0, metadata={"help": "SDR stages: probability of a plain-transcription batch (keeps ASR)"}
    )
    simulation_min_speakers: int = 2
    simulation_max_speakers: int = 4
    simulation_duration: float = 50.0
    simulation_min_duration: float | None = field(
        default=None, metadata={"help": "draw each session's length from [this, simulation_duration]"}
    )
    simulation_continue_probability: float = 0.3
    simulation_noise_probability: float = 0.0
    simulation_reverb_probability: float = 0.0
    trainable_parts: list[str] | None = field(
        default=None,
        metadata={
            "help": "parts to train instead of the stage's (e.g. a model trained from scratch trains "
            "audio_encoder, audio_projector and language_model in stage 1)"
        },
    )
    lora: bool | None = field(
        default=None, metadata={"help": "add LoRA or not, instead of the stage's choice"}
    )
    model_config_overrides: str | None = field(
        default=None,
        metadata={
            "help": 'JSON of model-config fields to change when loading, e.g. {"audio_speaker_window": 1.5}'
        },
    )
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    warmup_start_lr: float = field(
        default=1e-5, metadata={"help": "learning rate at the start of the warm-up"}
    )
    max_new_tokens: int = 256
    ctc_weight: float = field(
        default=0.0,
        metadata={
            "help": "auxiliary CTC on the audio tokens (models trained from scratch, stage 1); 0 = off"
        },
    )
    ctc_only: bool = field(
        default=False,
        metadata={
            "help": "train the CTC loss alone, without running the LLM (an acoustic round for an encoder "
            "trained from scratch); every target counts by its spoken words"
        },
    )
    ctc_spoken: bool = field(
        default=False,
        metadata={
            "help": "with the LLM's loss, score CTC on every target by its spoken words, not on plain "
            "transcripts only (an LLM round that keeps a ctc_only-trained encoder spelling meetings)"
        },
    )
    shuffle_buffer: int = field(
        default=0,
        metadata={
            "help": "prepared data: read its shards in a seeded random order and shuffle rows within a "
            "buffer of this many (several folders through a glob mix); 0 = file order"
        },
    )
    speed_perturbation: list[float] | None = field(
        default=None,
        metadata={
            "help": "low high: play each training recording at a speed drawn from this range (e.g. 0.9 1.1), "
            "turn times and enrollment clips scaled with it; needs enrollment clips"
        },
    )
    generation_batch_size: int = 4

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {sorted(STAGES)}, got {self.stage}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.speed_perturbation is not None and self.enrollment != "clips":
            raise ValueError(
                "speed_perturbation needs enrollment clips (a bank embedding cannot follow the speed)"
            )
        if self.train_data_kind == "auto":
            self.train_data_kind = DEFAULT_KIND[self.stage]
        if self.train_data_kind not in DATA_KINDS:
            raise ValueError(f"train_data_kind must be one of {DATA_KINDS}, got {self.train_data_kind!r}")


def parse_arguments(argv: list[str]) -> tuple[StageArguments, TrainingArguments]:
    """A YAML config as the first argument, then `--key value` overrides."""
    parser = HfArgumentParser((StageArguments, TrainingArguments))
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv[0], encoding="utf-8") as file:
            config = yaml.safe_load(file) or {}
        return parser.parse_args_into_dataclasses(args=config_to_args(config) + argv[1:])
    return parser.parse_args_into_dataclasses(args=argv)


def config_to_args(config: dict) -> list[str]:
    args = []
    for key, value in config.items():
        if isinstance(value, list):
            args += [f"--{key}", *[str(v) for v in value]]
        else:
            args += [f"--{key}", str(value)]
    return args


def parquet_files(path: str) -> list[str] | None:
    """Parquet shards under a folder (or matching a glob), or None for a Hub dataset id."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    else:
        files = sorted(glob.glob(path))
    return files or None


def load_utterances(path: str, split: str = "train", streaming: bool = True):
    """Single-speaker utterances (audio, text, speaker) from parquet shards or the Hub, audio undecoded."""
    files = parquet_files(path)
    if files is not None:
        in_split = [f for f in files if os.path.basename(f).startswith(f"{split}-")] or files
        dataset = datasets.load_dataset(
            "parquet", data_files={split: in_split}, split=split, streaming=streaming
        )
    else:
        dataset = datasets.load_dataset(path, split=split, streaming=streaming)
    if isinstance(dataset.features, datasets.Features) and "audio" in dataset.features:
        dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    return dataset


def training_dataset(args: StageArguments, seed: int):
    if args.train_data_kind == "asr":
        return load_utterances(args.train_data, "train")
    if args.train_data_kind == "simulated":
        config = SimulationConfig(
            min_speakers=args.simulation_min_speakers,
            max_speakers=args.simulation_max_speakers,
            duration=args.simulation_duration,
            min_duration=args.simulation_min_duration,
            continue_probability=args.simulation_continue_probability,
            noise_probability=args.simulation_noise_probability,
            reverb_probability=args.simulation_reverb_probability,
        )
        source = load_utterances(args.train_data, "train", streaming=False)
        return simulate_conversations(
            source,
            config,
            seed=seed,
            audio_column=args.audio_column,
            text_column=args.text_column,
            speaker_column=args.speaker_column,
        )
    dataset = load_prepared(args.train_data, "train", streaming=True)
    if args.shuffle_buffer:
        dataset = dataset.shuffle(seed=seed, buffer_size=args.shuffle_buffer)
    return dataset


def evaluation_rows(args: StageArguments, task: str) -> list[dict]:
    """The first `eval_examples` rows of `eval_data` (utterances for ASR, prepared segments for SDR)."""
    if not args.eval_data:
        return []
    dataset = (
        load_utterances(args.eval_data, "test") if task == "asr" else load_prepared(args.eval_data, "test")
    )
    return list(dataset.take(args.eval_examples))


def generation_examples(args: StageArguments, task: str, rows: list[dict]) -> list[GenerationExample]:
    """Validation recordings with their reference turns.

    Every other SDR recording is registered with its present speakers' pool clips (Match-Regist),
    so validation reports cpCER on No-Regist and saCER on Match-Regist recordings.
    """
    examples = []
    for index, row in enumerate(rows):
        key = str(row.get("id", index))
        audio = decode_audio(row[args.audio_column], f"audio of {key}")
        if task == "asr":
            examples.append(
                GenerationExample(audio, [{"speaker": "spk0", "text": row[args.text_column]}], None, key)
            )
            continue
        order = []
        for turn in sorted(row["turns"], key=lambda t: (t["start"], t["end"])):
            if turn["speaker"] not in order:
                order.append(turn["speaker"])
        clips = {
            e["speaker"]: [decode_audio(c, f"enrollment clip of {e['speaker']}") for c in e["clips"][:1]]
            for e in row.get("enrollment") or []
            if e["clips"]
        }
        speakers, labels = None, {s: f"spk{i}" for i, s in enumerate(order)}
        if index % 2 == 1 and all(s in clips for s in order):
            labels = {s: f"Person {chr(65 + i)}" for i, s in enumerate(order)}
            speakers = {labels[s]: clips[s] for s in order}
        turns = [{**t, "speaker": labels[t["speaker"]]} for t in row["turns"]]
        examples.append(GenerationExample(audio, turns, speakers, key))
    return examples


def build_collator(args: StageArguments, processor, task: str, seed: int) -> SkippingCollator:
    sampler = None
    if task == "sdr":
        bank = SpeakerBank.load(args.speaker_bank) if args.speaker_bank else None
        probabilities = list(args.registration_probabilities)
        if bank is None and probabilities[2] > 0:
            logger.warning("no speaker_bank: Over-Regist is not drawn (its probability goes to the others)")
            probabilities[2] = 0.0
        sampler = RegistrationSampler(
            bank,
            probabilities,
            per_batch=args.registration_per_batch,
            max_extra=args.max_extra_speakers,
            enrollment=args.enrollment,
            names=name_pool(args.registration_names),
        )
    collator = SpeakerLMDataCollator(
        processor,
        sampler,
        task=task,
        timestamps=args.timestamps,
        asr_probability=args.asr_probability if task == "sdr" else 0.0,
        seed=seed,
        audio_column=args.audio_column,
        text_column=args.text_column,
        speed_perturbation=args.speed_perturbation,
    )
    return SkippingCollator(collator)


def native_cpu_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:
        return True


def cpu_precision(training_args: TrainingArguments) -> None:
    """Train in float32 when bf16 is asked for on a CPU that only emulates it: there, autocast to
    bfloat16 made a full SpeakerLM-Tiny step (speaker windows, encoder, LLM) more than ten times
    slower (its first step 220 s against 14-17 s in float32, on 2 AVX2 cores)."""
    if training_args.bf16 and training_args.use_cpu and not native_cpu_bf16():
        logger.warning("this CPU has no native bfloat16: training in float32 instead of bf16")
        training_args.bf16 = False
        training_args.mixed_precision = "no"


def stage_with_overrides(stage: Stage, args: StageArguments) -> Stage:
    """The stage's trainable parts and LoRA choice, unless the arguments override them."""
    if args.trainable_parts is not None:
        stage = dataclasses.replace(stage, trainable_parts=tuple(args.trainable_parts))
    if args.lora is not None:
        stage = dataclasses.replace(stage, lora=args.lora)
    if "lora" in stage.trainable_parts and not stage.lora:
        raise ValueError(f"stage {stage.number} trains 'lora' but LoRA is off")
    return stage


def main(argv: list[str] | None = None) -> int:
    stage_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stage = stage_with_overrides(STAGES[stage_args.stage], stage_args)
    cpu_precision(training_args)
    set_seed(training_args.seed)
    training_args.remove_unused_columns = False
    # Enrollment tensors are indexed by registered speaker, not by sample: batches must be
    # collated in each process rather than dispatched and sliced by accelerate.
    training_args.accelerator_config.dispatch_batches = False

    overrides = json.loads(stage_args.model_config_overrides) if stage_args.model_config_overrides else {}
    # Overrides go through the config: as `from_pretrained` keyword arguments they would also be
    # copied into the generation config.
    config = SpeakerLMConfig.from_pretrained(stage_args.model_name_or_path, **overrides)
    model = SpeakerLMForConditionalGeneration.from_pretrained(stage_args.model_name_or_path, config=config)
    processor = SpeakerLMProcessor.from_pretrained(stage_args.model_name_or_path)
    processor.match_model(model.config)
    prepare_model_for_stage(
        model,
        stage,
        {
            "r": stage_args.lora_r,
            "alpha": stage_args.lora_alpha,
            "dropout": stage_args.lora_dropout,
            "target_modules": stage_args.lora_target_modules,
        },
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "stage %d trains %s (%.2f M parameters)", stage.number, model.trainable_parts(), trainable / 1e6
    )

    collator = build_collator(stage_args, processor, stage.task, training_args.seed)
    eval_rows = evaluation_rows(stage_args, stage.task)
    trainer = SpeakerLMTrainer(
        model=model,
        args=training_args,
        train_dataset=training_dataset(stage_args, training_args.seed),
        eval_dataset=eval_rows or None,
        data_collator=collator,
        processing_class=processor,
        warmup_start_lr=stage_args.warmup_start_lr,
        generation_examples=generation_examples(stage_args, stage.task, eval_rows),
        task=stage.task,
        generation_batch_size=stage_args.generation_batch_size,
        max_new_tokens=stage_args.max_new_tokens,
        ctc_weight=stage_args.ctc_weight,
        ctc_only=stage_args.ctc_only,
        ctc_spoken=stage_args.ctc_spoken,
    )
    logger.info("training in %d process(es)", training_args.world_size)
    resume = latest_complete_checkpoint(
        training_args.output_dir, remove_incomplete=trainer.is_world_process_zero()
    )
    if resume:
        logger.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    if collator.skipped:
        logger.warning("skipped %d unusable samples: %s", collator.skipped, collator.reasons[-3:])
    if trainer.is_world_process_zero():
        finish_stage(model)
        final = os.path.join(training_args.output_dir, "final")
        save_atomically(model, processor, final, overwrite=True)
        if trainer.generation_examples:
            scores = trainer.transcription_scores(trainer.generation_examples)
            logger.info("final validation: %s", scores)
    close_process_group()
    return 0


def close_process_group() -> None:
    """Waits for the main process to finish saving, then tears the process group down: a
    worker exiting while the group's threads still run aborts ("terminate called without an
    active exception") and fails the whole distributed run."""
    if distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
