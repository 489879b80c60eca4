"""Training SpeakerLM stage by stage with the Hugging Face Trainer.

What each stage trains, the paper's learning-rate schedule (linear warm-up from 1e-5 to the peak,
then cosine decay), checkpoints that are only picked up when complete, and validation that
generates transcripts and scores them (CER, cpCER, and saCER when speakers are registered).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .metrics import score_sessions
from .processing_speakerlm import parse_role_transcript

COMPLETE_MARKER = "checkpoint_complete.json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One training stage of the spec: its task, its trainable parts, and whether LoRA is added."""

    number: int
    task: str
    trainable_parts: tuple[str, ...]
    lora: bool
    data: str


STAGES = {
    1: Stage(1, "asr", ("audio_projector", "lora"), True, "single-speaker ASR data"),
    2: Stage(2, "sdr", ("audio_projector", "speaker_projector"), False, "simulated conversations"),
    3: Stage(3, "sdr", ("audio_encoder", "audio_projector", "speaker_projector"), False, "real meetings"),
    4: Stage(
        4, "sdr", ("audio_encoder", "audio_projector", "speaker_projector", "lora"), True, "real meetings"
    ),
}


def prepare_model_for_stage(model, stage: Stage, lora_settings: Mapping | None = None) -> None:
    """Add LoRA when the stage uses it, then freeze everything the stage does not train."""
    if stage.lora and not model.has_lora:
        model.add_lora(**dict(lora_settings or {}))
    model.set_trainable_parts(stage.trainable_parts)


def finish_stage(model) -> None:
    """Merge LoRA so that the stage's output is a plain checkpoint for the next stage or export."""
    if model.has_lora:
        model.merge_lora()


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, start_factor: float) -> float:
    """Learning-rate factor: linear from `start_factor` to 1 over the warm-up, then cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class SkippingCollator:
    """Wraps a collator so that unusable samples (unreadable audio, empty transcript, bad names)
    are skipped and counted instead of stopping training; a batch with no usable sample fails."""

    def __init__(self, collator):
        self.collator = collator
        self.skipped = 0
        self.reasons: list[str] = []

    def __call__(self, features: Sequence[Mapping]):
        usable = [f for f in features if not self.reject_empty(f)]
        try:
            return self.collator(usable)
        except ValueError:
            usable = [f for f in usable if self.usable(f)]
        if not usable:
            raise ValueError(f"none of the {len(features)} samples of a batch is usable: {self.reasons[-3:]}")
        return self.collator(usable)

    def skip(self, feature: Mapping, reason: str) -> None:
        self.skipped += 1
        self.reasons.append(f"{feature.get('id', '?')}: {reason}")
        logger.warning("skipping sample %s: %s", feature.get("id", "?"), reason)

    def reject_empty(self, feature: Mapping) -> bool:
        text = feature.get("text")
        turns = feature.get("turns")
        if (
            text is not None
            and not str(text).strip()
            or turns is not None
            and not any(str(t.get("text", "")).strip() for t in turns)
        ):
            self.skip(feature, "empty transcript")
            return True
        return False

    def usable(self, feature: Mapping) -> bool:
        try:
            self.collator([feature])
        except ValueError as error:
            self.skip(feature, str(error))
            return False
        return True


def is_complete_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, COMPLETE_MARKER))


def latest_complete_checkpoint(output_dir: str, remove_incomplete: bool = False) -> str | None:
    """The newest `checkpoint-N` folder whose saving finished; optionally delete unfinished ones."""
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if not (name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and os.path.isdir(path)):
            continue
        if not name.rsplit("-", 1)[1].isdigit():
            continue
        if is_complete_checkpoint(path):
            found.append((int(name.rsplit("-", 1)[1]), path))
        elif remove_incomplete:
            shutil.rmtree(path)
    return max(found)[1] if found else None


@dataclass
class GenerationExample:
    """One validation recording: audio, registered speakers (or None) and the reference turns."""

    audio: object
    turns: Sequence[Mapping]
    speakers: Mapping | None = None
    session_id: str = ""


class SpeakerLMTrainer(Trainer):
    r"""`Trainer` with SpeakerLM's schedule, complete-only checkpoints and transcript validation.

    Args:
        warmup_start_lr: learning rate at the first warm-up step (the paper warms up from 1e-5
            to a 5e-5 peak, i.e. `learning_rate`).
        generation_examples: validation recordings that `evaluate` transcribes and scores.
        task / timestamps: what the validation prompts ask for.
        generation_batch_size / max_new_tokens: generation settings of the validation.
        ctc_weight: weight of an auxiliary CTC loss that makes the projected audio tokens, scored
            against the LLM's own input embeddings (no new parameters; the pad token is the blank),
            spell the target's text tokens. It lets an encoder and LLM trained from scratch align
            audio with words in minutes instead of hours; 0 (the default, and the paper's recipe)
            turns it off. It applies to plain-transcript samples only (ASR targets, or SDR stages'
            ASR batches); samples whose target has role labels or timestamps are left out.
        ctc_only: train the CTC loss alone (weight `ctc_weight`), without running the LLM: an
            acoustic round for an audio encoder trained from scratch (the counterpart of a
            pretrained encoder's own ASR training). Every sample counts, role-labelled and
            timestamped targets by their spoken words (turns in order, labels and times removed),
            so whole multi-speaker recordings train the encoder on long, noisy, overlapped audio.
        ctc_spoken: alongside the LLM's loss, score CTC on every sample by its spoken words (as
            `ctc_only` does) instead of on plain transcripts only: a round that lets the LLM adapt
            to the audio tokens of an encoder trained with `ctc_only` keeps that encoder spelling
            whole recordings.
    """

    def __init__(
        self,
        *args,
        warmup_start_lr: float = 1e-5,
        generation_examples: Sequence[GenerationExample] = (),
        task: str = "sdr",
        timestamps: bool = False,
        generation_batch_size: int = 4,
        max_new_tokens: int = 256,
        ctc_weight: float = 0.0,
        ctc_only: bool = False,
        ctc_spoken: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if ctc_weight < 0:
            raise ValueError(f"ctc_weight must be >= 0, got {ctc_weight}")
        if ctc_only and not ctc_weight:
            raise ValueError("ctc_only trains the CTC loss alone: it needs ctc_weight > 0")
        if ctc_spoken and not ctc_weight:
            raise ValueError("ctc_spoken scores CTC on every sample: it needs ctc_weight > 0")
        self.ctc_weight = ctc_weight
        self.ctc_only = ctc_only
        self.ctc_spoken = ctc_spoken
        if ctc_weight and hasattr(getattr(self.model, "config", None), "audio_ctc"):
            # The checkpoints' audio tokens now spell transcripts: decoding may follow them.
            self.model.config.audio_ctc = True
        self.warmup_start_lr = warmup_start_lr
        self.generation_examples = list(generation_examples)
        self.task = task
        self.timestamps = timestamps
        self.generation_batch_size = generation_batch_size
        self.max_new_tokens = max_new_tokens

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.ctc_weight or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        unwrapped = self.accelerator.unwrap_model(model)
        if self.ctc_only:
            tokens, token_lengths, _ = unwrapped.encode_audio(
                inputs["input_features"], inputs.get("input_features_mask")
            )
            loss = self.ctc_weight * self.audio_ctc_loss(
                unwrapped, tokens, token_lengths, inputs["labels"], spoken=True
            )
            return (loss, None) if return_outputs else loss
        captured = []
        handle = unwrapped.audio_projector.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        finally:
            handle.remove()
        if captured:
            tokens, token_lengths = captured[-1]
            loss = loss + self.ctc_weight * self.audio_ctc_loss(
                unwrapped, tokens, token_lengths, inputs["labels"], spoken=self.ctc_spoken
            )
        return (loss, outputs) if return_outputs else loss

    def ctc_token_sets(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids left out of CTC targets (special tokens), and ids that mark a target as not plain text
        (any token with ':' or '[': role labels and timestamps)."""
        if getattr(self, "_ctc_token_sets", None) is None:
            tokenizer = self.processing_class.tokenizer
            special = sorted(set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder))
            texts = {
                i: tokenizer.convert_tokens_to_string([token]) for token, i in tokenizer.get_vocab().items()
            }
            structural = [i for i, text in texts.items() if ":" in text or "[" in text]
            self._ctc_token_sets = (torch.tensor(special), torch.tensor(sorted(structural)))
        return tuple(t.to(device) for t in self._ctc_token_sets)

    def audio_ctc_loss(self, model, tokens, token_lengths, labels, spoken: bool = False) -> torch.Tensor:
        """CTC of the audio tokens' scores against the input embeddings, on the labels' text tokens.

        Plain transcripts only, unless `spoken`: then a target with role labels or timestamps
        counts by its spoken words (`spoken_tokens`)."""
        special, structural = self.ctc_token_sets(labels.device)
        keep = (labels != -100) & ~torch.isin(labels, special)
        plain = ~torch.isin(labels, structural).any(-1)
        if spoken:
            targets = [
                labels[i][keep[i]] if plain[i] else self.spoken_tokens(labels[i][keep[i]])
                for i in range(labels.shape[0])
            ]
            rows = torch.tensor([i for i, t in enumerate(targets) if t.numel()], dtype=torch.long)
            targets = [targets[i] for i in rows.tolist()]
        else:
            # A target with a role label or a timestamp is not spoken text.
            rows = plain.nonzero().flatten()
            targets = [labels[i][keep[i]] for i in rows]
        if not rows.numel():
            return tokens.sum() * 0.0
        rows = rows.to(tokens.device)
        log_probs = model.audio_ctc_log_probs(tokens[rows]).transpose(0, 1)
        return torch.nn.functional.ctc_loss(
            log_probs,
            torch.cat(targets),
            token_lengths[rows],
            torch.tensor([t.numel() for t in targets], device=labels.device),
            blank=self.processing_class.tokenizer.pad_token_id,
            reduction="mean",
            zero_infinity=True,
        )

    def spoken_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """The spoken words of a role-labelled (and maybe timestamped) target as text tokens: its
        turns in order, joined by spaces, tokenized as a plain transcript."""
        tokenizer = self.processing_class.tokenizer
        text = " ".join(turn["text"] for turn in parse_role_transcript(tokenizer.decode(ids.tolist())))
        spoken = tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []
        return torch.tensor(spoken, dtype=ids.dtype, device=ids.device)

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            warmup = self.args.get_warmup_steps(num_training_steps)
            start = (
                min(1.0, self.warmup_start_lr / self.args.learning_rate) if self.args.learning_rate else 1.0
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: warmup_cosine_factor(step, warmup, num_training_steps, start)
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        # Written last: a checkpoint without it was interrupted and is never resumed from.
        marker = os.path.join(folder, COMPLETE_MARKER)
        with open(marker + ".tmp", "w", encoding="utf-8") as file:
            json.dump({"global_step": self.state.global_step}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(marker + ".tmp", marker)

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        metrics = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.generation_examples:
            scores = self.transcription_scores(self.generation_examples)
            scores = {f"{metric_key_prefix}_{k}": v for k, v in scores.items()}
            self.log(scores)
            metrics.update(scores)
        return metrics

    @torch.no_grad()
    def transcribe(self, examples: Sequence[GenerationExample]) -> list[list[dict]]:
        """Greedy transcripts of the examples, as turns, in batches."""
        model = self.model
        processor = self.processing_class
        was_training = model.training
        model.eval()
        results = []
        try:
            for start in range(0, len(examples), self.generation_batch_size):
                batch = examples[start : start + self.generation_batch_size]
                inputs = processor(
                    [e.audio for e in batch],
                    speakers=[e.speakers for e in batch],
                    task=self.task,
                    timestamps=self.timestamps,
                ).to(model.device)
                generated = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
                results.extend(processor.post_process(generated[:, inputs["input_ids"].shape[1] :]))
        finally:
            model.train(was_training)
        return results

    def transcription_scores(self, examples: Sequence[GenerationExample]) -> dict[str, float]:
        """CER, cpCER and Δcp (with saCER and Δsa over the registered examples), pooled over examples."""
        hypotheses = self.transcribe(examples)
        keys = [example.session_id or f"session{i}" for i, example in enumerate(examples)]
        references = {key: list(example.turns) for key, example in zip(keys, examples, strict=True)}
        transcripts = dict(zip(keys, hypotheses, strict=True))
        report = score_sessions(references, transcripts, mode="cp")
        scores = {"cer": report.cer.rate}
        if self.task == "sdr":
            scores.update(cpcer=report.attributed.rate, delta_cp=report.delta)
            registered = [key for key, example in zip(keys, examples, strict=True) if example.speakers]
            if registered:
                by_name = score_sessions(
                    {k: references[k] for k in registered}, {k: transcripts[k] for k in registered}, mode="sa"
                )
                scores.update(sacer=by_name.attributed.rate, delta_sa=by_name.delta)
        return {k: (float("nan") if v is None else float(v)) for k, v in scores.items()}
