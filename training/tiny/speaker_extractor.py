"""Train SpeakerLM-Tiny's speaker-embedding extractor on the synthetic corpus's speakers, then freeze it.

A small CAM++ (default) or ERes2NetV2 learns the corpus's train speakers with an additive-angular-
margin softmax (AAM, scale 32, margin 0.2 reached after a linear warm-up) plus an angular
prototypical loss on same-speaker crop pairs, which teaches distances long before every speaker's
AAM row is trained. Crops are random 2-3 s stretches of a speaker's speech, augmented with
coloured noise, synthetic reverberation and random gain so that the model generalises to unseen
voices. A few train speakers are held out to log an EER on voices the model never saw; the
corpus's test split is left for `eval_speaker_extractor`. The frozen extractor is written with
`save_pretrained` to `--out`; the HF `Trainer` keeps resumable checkpoints in `--out/checkpoints`
(a rerun resumes from the newest). README.md beside this file has the measured run.

    python -m training.tiny.speaker_extractor --corpus /work/data/synthetic-en \
        --out /work/data/speaker_extractor --steps 300 --batch-size 64 --crop-seconds 2.0 2.5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from speakerlm_hf.audio_frontend import speaker_features
from speakerlm_hf.configuration_speaker_encoders import CAMPPlusConfig, ERes2NetV2Config
from speakerlm_hf.data.audio import SAMPLING_RATE
from speakerlm_hf.data.shards import decode_prepared_row, load_prepared
from speakerlm_hf.data.simulation import coloured_noise, fft_convolve, synthetic_rir
from training.tiny.eval_speaker_extractor import (
    EXTRACTOR_CLASSES,
    LOOK_ALIKE_PITCH,
    SpeakerUtterances,
    all_pair_trials,
    compute_eer,
    embed_waveforms,
    load_extractor,
    load_speaker_metadata,
    load_speaker_utterances,
    look_alikes,
    pcm16,
)

# Sizes measured on 2 busy CPU cores (2 s crops, forward + backward, batch 64): this CAM++ (1.2 M
# parameters) runs ~50 crops/s, the ERes2NetV2 below (1.6 M) 4-10 crops/s: its 2-D convolutions at the
# full 80-bin resolution dominate. One residual block per front-end stage (CAM++ has two) doubles speed.
TINY_CONFIGS: dict[str, dict] = {
    "campplus": {
        "embedding_size": 192,
        "head_channels": 16,
        "head_blocks_per_stage": 1,
        "init_channels": 64,
        "growth_rate": 24,
        "block_layers": [6, 12, 8],
    },
    "eres2netv2": {"embedding_size": 192, "m_channels": 16, "num_blocks": [2, 2, 2, 2]},
}
CONFIG_CLASSES = {"campplus": CAMPPlusConfig, "eres2netv2": ERes2NetV2Config}


def build_extractor(arch: str = "campplus", **overrides) -> PreTrainedModel:
    """A freshly initialised tiny extractor of `arch` ("campplus" or "eres2netv2"); `overrides` change its config."""
    if arch not in TINY_CONFIGS:
        raise ValueError(f"arch must be one of {list(TINY_CONFIGS)}, got {arch!r}")
    config = CONFIG_CLASSES[arch](**{**TINY_CONFIGS[arch], **overrides})
    return EXTRACTOR_CLASSES[config.model_type](config)


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): the target logit is s * cos(theta + m).

    `margin` is a plain attribute so a warm-up can raise it during training.
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 32.0, margin: float = 0.2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of embeddings (B, E) against class labels (B,)."""
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        m = self.margin
        sine = torch.sqrt(1.0 - cosine**2)
        with_margin = cosine * math.cos(m) - sine * math.sin(m)
        # past theta = pi - m, cos(theta + m) rises again; keep the penalty monotonic there
        with_margin = torch.where(
            cosine > math.cos(math.pi - m), with_margin, cosine - math.sin(math.pi - m) * m
        )
        is_target = F.one_hot(labels, cosine.shape[1]).bool()
        logits = self.scale * torch.where(is_target, with_margin, cosine)
        return F.cross_entropy(logits, labels), logits


class AngularPrototypical(nn.Module):
    """Angular prototypical loss over a batch of (anchor, positive) crop pairs of distinct speakers.

    Each anchor must pick its own speaker's positive among all positives of the batch by a scaled
    cosine (learned `w * cos + b`, as Chung et al. 2020). Unlike a softmax over all train speakers,
    it needs no per-speaker weights, so it teaches relative distances from the first steps, when
    every speaker's classifier row has been seen only a few times.
    """

    def __init__(self, init_w: float = 10.0, init_b: float = -5.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(init_w))
        self.b = nn.Parameter(torch.tensor(init_b))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of embeddings (2P, E) laid out as P consecutive same-speaker pairs."""
        anchors, positives = F.normalize(embeddings, dim=-1).view(-1, 2, embeddings.shape[-1]).unbind(1)
        pair_labels = labels.view(-1, 2)[:, 0]
        logits = self.w.clamp(min=1e-6) * anchors @ positives.T + self.b
        # another pair of the same speaker (random sampling can repeat one) is not a negative
        same = (pair_labels[:, None] == pair_labels[None, :]) & ~torch.eye(
            len(pair_labels), dtype=torch.bool, device=logits.device
        )
        logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(pair_labels), device=logits.device))


class SpeakerClassifier(nn.Module):
    """Extractor + AAM head (+ optional angular prototypical loss on pairs): only the extractor is kept."""

    def __init__(
        self,
        extractor: PreTrainedModel,
        num_speakers: int,
        scale: float,
        margin: float,
        prototypical_weight: float = 0.0,
    ):
        super().__init__()
        self.extractor = extractor
        self.head = AAMSoftmax(extractor.config.embedding_size, num_speakers, scale, margin)
        self.prototypical_weight = prototypical_weight
        self.prototypical = AngularPrototypical() if prototypical_weight > 0 else None

    def forward(self, input_features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        embeddings = self.extractor(input_features)
        loss, logits = self.head(embeddings, labels)
        if self.prototypical is not None:
            loss = loss + self.prototypical_weight * self.prototypical(embeddings, labels)
        return {"loss": loss, "logits": logits}


@dataclass(frozen=True)
class AugmentConfig:
    """Waveform augmentation of a training crop; ranges are sampled uniformly."""

    noise_probability: float = 0.6
    snr_range: tuple[float, float] = (5.0, 25.0)
    noise_exponent_range: tuple[float, float] = (0.0, 2.0)
    reverb_probability: float = 0.3
    rt60_range: tuple[float, float] = (0.15, 0.6)
    drr_range: tuple[float, float] = (0.0, 10.0)
    gain_db_range: tuple[float, float] = (-12.0, 6.0)


def augment(waveform: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Reverberate, add noise and scale a float32 [-1, 1] waveform (same length, clipped)."""
    x = waveform.astype(np.float32)
    speech_rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-8
    if rng.random() < config.reverb_probability:
        rir = synthetic_rir(
            rng, float(rng.uniform(*config.rt60_range)), float(rng.uniform(*config.drr_range))
        )
        x = fft_convolve(x, rir)[: x.size]
        x *= speech_rms / (float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-8)
    if rng.random() < config.noise_probability:
        snr_db = float(rng.uniform(*config.snr_range))
        noise = coloured_noise(rng, x.size, float(rng.uniform(*config.noise_exponent_range)))
        x = x + noise * (speech_rms * 10.0 ** (-snr_db / 20.0))
    x = x * 10.0 ** (float(rng.uniform(*config.gain_db_range)) / 20.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def speaker_crop(
    data: SpeakerUtterances, by_speaker: list[np.ndarray], index: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """`length` samples of utterance `index`'s speaker, starting in it and continued by the speaker's others.

    `by_speaker` is `data.indices_by_speaker()`, computed once by the caller.
    Utterances are 2.7 s on average, so a 3 s crop often joins two sentences of one voice, as a turn
    of several sentences does.
    """
    pieces = [data.waveforms[index]]
    total = pieces[0].size
    same = by_speaker[int(data.labels[index])]
    while total < length:
        pieces.append(data.waveforms[int(rng.choice(same))])
        total += pieces[-1].size
    clip = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    start = int(rng.integers(0, clip.size - length + 1))
    return clip[start : start + length].astype(np.float32) / 32768.0


class CropStream(torch.utils.data.IterableDataset):
    """Endless crops of the longest training length with their speaker label.

    With `pairs`, crops come two by two from one speaker (different utterances where it has
    several), so an even batch holds whole pairs for the prototypical loss. With `kin` (each
    speaker label's look-alikes, `look_alikes`) and `group` > 1, speakers come `group` at a time:
    a random one, then up to `group - 1` of its look-alikes, filled up with random others, so the
    batch's other speakers are the hardest negatives there are (the prototypical loss compares
    each crop with every speaker of its batch).
    """

    def __init__(
        self,
        data: SpeakerUtterances,
        max_seconds: float,
        seed: int,
        pairs: bool = False,
        kin: Sequence[np.ndarray] | None = None,
        group: int = 1,
    ):
        super().__init__()
        self.data = data
        self.length = int(max_seconds * SAMPLING_RATE)
        self.seed = seed
        self.pairs = pairs
        self.epoch = 0
        self.by_speaker = data.indices_by_speaker()
        self.kin = kin
        self.group = group if kin is not None else 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _speakers(self, label: int, rng: np.random.Generator) -> list[int]:
        """`label` and the speakers drawn to share its batch with it."""
        labels = [label]
        if self.group > 1:
            others = self.kin[label]
            if others.size:
                labels += rng.choice(others, min(self.group - 1, others.size), replace=False).tolist()
            while len(labels) < min(self.group, len(self.by_speaker)):
                other = int(rng.integers(len(self.by_speaker)))
                if other not in labels:
                    labels.append(other)
        return labels

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, worker.id if worker else 0])
        while True:
            first = int(rng.integers(len(self.data)))
            for label in self._speakers(int(self.data.labels[first]), rng):
                index = first if label == self.data.labels[first] else int(rng.choice(self.by_speaker[label]))
                indices = [index]
                if self.pairs:
                    others = self.by_speaker[label][self.by_speaker[label] != index]
                    indices.append(int(rng.choice(others)) if others.size else index)
                for i in indices:
                    yield {
                        "waveform": speaker_crop(self.data, self.by_speaker, i, self.length, rng),
                        "label": label,
                    }


class CropCollator:
    """Cuts every crop of a batch to one random length, augments it and computes `speaker_features`."""

    def __init__(self, crop_seconds: tuple[float, float], augment_config: AugmentConfig | None, seed: int):
        self.crop_seconds = crop_seconds
        self.augment_config = augment_config
        self.rng = np.random.default_rng([seed, 7])

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        length = int(self.rng.uniform(*self.crop_seconds) * SAMPLING_RATE)
        features = []
        for item in items:
            waveform = item["waveform"]
            start = int(self.rng.integers(0, waveform.size - length + 1))
            crop = waveform[start : start + length]
            if self.augment_config is not None:
                crop = augment(crop, self.rng, self.augment_config)
            features.append(speaker_features(crop))
        return {
            "input_features": torch.stack(features),
            "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
        }


class MarginWarmup(TrainerCallback):
    """Raises the AAM margin linearly from 0 to `margin` over the first `warmup_steps` steps."""

    def __init__(self, head: AAMSoftmax, margin: float, warmup_steps: int):
        self.head, self.margin, self.warmup_steps = head, margin, warmup_steps

    def on_step_begin(self, args, state, control, **kwargs):
        fraction = 1.0 if self.warmup_steps <= 0 else min(1.0, state.global_step / self.warmup_steps)
        self.head.margin = self.margin * fraction


class HeldOutEER(TrainerCallback):
    """Every `every` steps, logs the EER over all utterance pairs of the held-out speakers."""

    def __init__(
        self, extractor: PreTrainedModel, data: SpeakerUtterances | None, every: int, log_file: Path
    ):
        self.extractor, self.data, self.every, self.log_file = extractor, data, every, log_file
        self.history: list[dict] = []

    def measure(self, step: int) -> float | None:
        if self.data is None or self.every <= 0:
            return None
        embeddings = embed_waveforms(self.extractor, [self.data.waveform(i) for i in range(len(self.data))])
        eer = compute_eer(*all_pair_trials(embeddings, self.data.labels))
        self.history.append({"step": step, "held_out_eer": eer})
        with self.log_file.open("a") as handle:
            handle.write(json.dumps(self.history[-1]) + "\n")
        print(f"step {step}: held-out speaker EER {eer:.4f}", file=sys.stderr, flush=True)
        return eer

    def on_step_end(self, args, state, control, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0:
            self.measure(state.global_step)


class LossLog(TrainerCallback):
    """Keeps every logged training loss (and writes it to `log_file`)."""

    def __init__(self, log_file: Path):
        self.log_file = log_file
        self.losses: list[tuple[int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))
            with self.log_file.open("a") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run with `threads` intra-op threads, restoring the previous number afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def split_held_out(
    data: SpeakerUtterances, num_speakers: int, seed: int, max_utterances: int = 400
) -> tuple[SpeakerUtterances, SpeakerUtterances | None]:
    """(train, held out): `num_speakers` random speakers' utterances (at most `max_utterances`) leave train."""
    if num_speakers <= 0:
        return data, None
    if num_speakers >= len(data.speakers):
        raise ValueError(
            f"--held-out-speakers {num_speakers} leaves no train speaker of {len(data.speakers)}"
        )
    rng = np.random.default_rng([seed, 11])
    held = set(rng.choice(len(data.speakers), num_speakers, replace=False).tolist())
    is_held = np.isin(data.labels, list(held))
    held_indices = np.flatnonzero(is_held)[:max_utterances]
    return data.subset(np.flatnonzero(~is_held)), data.subset(held_indices)


def solo_spans(turns: Sequence[dict], min_seconds: float = 1.0) -> list[tuple[int, float, float]]:
    """(turn index, start, end) of every stretch of at least `min_seconds` where a turn's speaker is
    heard alone: the turn minus every other speaker's turns."""
    spans = []
    for index, turn in enumerate(turns):
        pieces = [(float(turn["start"]), float(turn["end"]))]
        for other in turns:
            if other["speaker"] == turn["speaker"]:
                continue
            a, b = float(other["start"]), float(other["end"])
            pieces = [
                piece
                for start, end in pieces
                for piece in ((start, min(end, a)), (max(start, b), end))
                if piece[1] > piece[0]
            ]
        spans += [(index, start, end) for start, end in pieces if end - start >= min_seconds]
    return spans


def load_meeting_speech(path: str | Path, min_seconds: float = 1.0) -> SpeakerUtterances:
    """Single-speaker speech cut from rendered meetings (a prepared folder, shard or glob, as
    `training.tiny.meetings` writes them): each turn's stretches where no one else speaks
    (`solo_spans`), with the meeting's noise and room, and every enrollment clip. Speakers are
    named as in the meetings, so a stock corpus speaker keeps its corpus name."""
    waveforms: list[np.ndarray] = []
    names: list[str] = []
    shortest = min_seconds * SAMPLING_RATE
    for row in load_prepared(str(path), "train", streaming=False):
        meeting = decode_prepared_row(row)
        audio, turns = meeting["audio"], meeting["turns"]
        pieces = [
            (
                turns[index]["speaker"],
                audio[int(round(start * SAMPLING_RATE)) : int(round(end * SAMPLING_RATE))],
            )
            for index, start, end in solo_spans(turns, min_seconds)
        ]
        pieces += [(speaker, clip) for speaker, clips in meeting["enrollment"].items() for clip in clips]
        for speaker, samples in pieces:
            if samples.size >= shortest:
                waveforms.append(pcm16(samples))
                names.append(str(speaker))
    if not waveforms:
        raise ValueError(
            f"no single-speaker speech of {min_seconds} s or more in the meetings of {str(path)!r}"
        )
    return SpeakerUtterances.from_named(waveforms, names)


def merge_utterances(*parts: SpeakerUtterances) -> SpeakerUtterances:
    """One `SpeakerUtterances` of all `parts`; a speaker name in several parts is one speaker."""
    return SpeakerUtterances.from_named(
        [w for part in parts for w in part.waveforms],
        [part.speakers[int(label)] for part in parts for label in part.labels],
    )


def speaker_centroids(
    extractor: PreTrainedModel, data: SpeakerUtterances, seed: int, per_speaker: int = 3, seconds: float = 4.0
) -> torch.Tensor:
    """Mean L2-normalised embedding (speakers, E) of up to `per_speaker` random utterances per speaker.

    Each utterance is cut to its first `seconds`, to keep this to a minute or two on a CPU.
    """
    rng = np.random.default_rng([seed, 23])
    samples = int(seconds * SAMPLING_RATE)
    centroids = []
    for indices in data.indices_by_speaker():
        chosen = rng.choice(indices, min(per_speaker, len(indices)), replace=False)
        embeddings = embed_waveforms(extractor, [data.waveform(int(i))[:samples] for i in chosen])
        centroids.append(F.normalize(embeddings.mean(0), dim=-1))
    return torch.stack(centroids)


def train_extractor(
    corpus: str | Path,
    out: str | Path,
    steps: int = 1200,
    arch: str = "campplus",
    batch_size: int = 128,
    crop_seconds: tuple[float, float] = (2.0, 3.0),
    learning_rate: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 100,
    scale: float = 32.0,
    margin: float = 0.2,
    margin_warmup_steps: int | None = None,
    prototypical_weight: float = 1.0,
    augment_config: AugmentConfig | None = AugmentConfig(),
    held_out_speakers: int = 64,
    eval_every: int = 200,
    save_every: int = 200,
    logging_steps: int = 10,
    max_utterances: int | None = None,
    threads: int = 2,
    seed: int = 0,
    config_overrides: dict | None = None,
    init_from: str | Path | None = None,
    data_seed: int | None = None,
    meetings: Sequence[str | Path] = (),
    look_alike_group: int = 1,
) -> tuple[PreTrainedModel, dict]:
    """Train, save the frozen extractor to `out` with `save_pretrained`; returns it and a summary (also in `out`).

    `margin_warmup_steps` defaults to a fifth of `steps`; `augment_config=None` trains on clean crops;
    `prototypical_weight` > 0 adds the angular prototypical loss on same-speaker crop pairs (then
    `batch_size` must be even). `init_from` continues a trained extractor (its folder, or a SpeakerLM
    checkpoint's speaker encoder) instead of starting from scratch; its AAM rows start at the train
    speakers' mean embeddings, so the first steps refine the embedding space rather than scramble it.
    `seed` also picks the held-out speakers; `data_seed` (default: `seed`) alone draws the crops, so
    a continued run keeps the first run's held-out speakers while hearing new crops.
    `meetings` adds the single-speaker speech of rendered meetings (`load_meeting_speech`): turns
    with the meetings' noise, rooms and neighbours, and the speakers of `--random-voices`; the
    held-out corpus speakers' meeting speech is left out of training.
    `look_alike_group` > 1 fills each batch with groups of that many speakers, a random one and its
    look-alikes (`look_alikes`: the same espeak variant with another base voice and a similar
    pitch, read from the corpus's and the meetings' speaker lists), as hard negatives;
    `batch_size` must then hold whole groups (of pairs, with the prototypical loss).
    """
    if init_from is not None and config_overrides:
        raise ValueError("config_overrides cannot change an extractor given by init_from")
    if prototypical_weight > 0 and batch_size % 2:
        raise ValueError(f"batch_size must be even for the pair loss, got {batch_size}")
    crops_per_group = look_alike_group * (2 if prototypical_weight > 0 else 1)
    if look_alike_group < 1 or batch_size % crops_per_group:
        raise ValueError(
            f"batch_size {batch_size} must hold whole groups of {crops_per_group} crops "
            f"(look_alike_group {look_alike_group})"
        )
    with _torch_threads(threads):
        torch.manual_seed(seed)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        data = load_speaker_utterances(corpus, "train", max_utterances)
        train_data, held_out = split_held_out(data, held_out_speakers, seed)
        if meetings:
            held = set(held_out.speakers) if held_out else set()
            speech = [load_meeting_speech(folder) for folder in meetings]
            train_data = merge_utterances(
                train_data,
                *(
                    part.subset(
                        [i for i, label in enumerate(part.labels) if part.speakers[label] not in held]
                    )
                    for part in speech
                ),
            )
        print(
            f"{len(train_data)} train utterances of {len(train_data.speakers)} speakers "
            f"({time.perf_counter() - started:.0f} s to load); "
            f"{len(held_out) if held_out else 0} held-out utterances",
            file=sys.stderr,
            flush=True,
        )
        if init_from is None:
            extractor = build_extractor(arch, **(config_overrides or {}))
        else:
            extractor = load_extractor(init_from).train()
            extractor.requires_grad_(True)
            arch = extractor.config.model_type
        model = SpeakerClassifier(extractor, len(train_data.speakers), scale, margin, prototypical_weight)
        if init_from is not None:
            with torch.no_grad():
                model.head.weight.copy_(speaker_centroids(extractor, train_data, seed))
        kin = None
        if look_alike_group > 1:
            kin = look_alikes(train_data.speakers, load_speaker_metadata(corpus, *meetings))
            print(
                f"{sum(others.size > 0 for others in kin)} of {len(kin)} train speakers have look-alikes",
                file=sys.stderr,
                flush=True,
            )
        num_parameters = sum(p.numel() for p in extractor.parameters())
        crop_seed = seed if data_seed is None else data_seed
        warmup = steps // 5 if margin_warmup_steps is None else margin_warmup_steps
        loss_log = LossLog(out / "train_log.jsonl")
        eer_log = HeldOutEER(extractor, held_out, eval_every, out / "held_out_eer.jsonl")
        args = TrainingArguments(
            output_dir=str(out / "checkpoints"),
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            lr_scheduler_type="cosine",
            max_grad_norm=5.0,
            logging_steps=logging_steps,
            save_steps=save_every,
            save_total_limit=2,
            save_strategy="steps" if save_every > 0 else "no",
            report_to="none",
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            ignore_data_skip=True,
            seed=seed,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=CropStream(
                train_data,
                crop_seconds[1],
                crop_seed,
                pairs=prototypical_weight > 0,
                kin=kin,
                group=look_alike_group,
            ),
            data_collator=CropCollator(crop_seconds, augment_config, crop_seed),
            callbacks=[MarginWarmup(model.head, margin, warmup), eer_log, loss_log],
        )
        resume = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
        train_started = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        train_seconds = time.perf_counter() - train_started
        extractor.eval()
        for parameter in extractor.parameters():
            parameter.requires_grad_(False)
        extractor.save_pretrained(out)
        final_eer = (
            eer_log.measure(steps) if not eer_log.history or eer_log.history[-1]["step"] != steps else None
        )
        summary = {
            "arch": arch,
            "config": extractor.config.to_dict(),
            "parameters": num_parameters,
            "train_speakers": len(train_data.speakers),
            "train_utterances": len(train_data),
            "held_out_speakers": len(held_out.speakers) if held_out else 0,
            "steps": steps,
            "batch_size": batch_size,
            "crop_seconds": list(crop_seconds),
            "resumed_from": resume,
            "init_from": str(init_from) if init_from is not None else None,
            "meetings": [str(folder) for folder in meetings],
            "data_seed": crop_seed,
            "train_seconds": round(train_seconds, 1),
            "losses": loss_log.losses,
            "held_out_eer": eer_log.history,
            "final_held_out_eer": final_eer
            if final_eer is not None
            else (eer_log.history or [{}])[-1].get("held_out_eer"),
            "augment": asdict(augment_config) if augment_config else None,
            "aam": {"scale": scale, "margin": margin, "margin_warmup_steps": warmup},
            "prototypical_weight": prototypical_weight,
            "look_alike_group": look_alike_group,
            "optimizer": {
                "name": "adamw",
                "lr": learning_rate,
                "weight_decay": weight_decay,
                "warmup": warmup_steps,
            },
        }
        (out / "training_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        return extractor, summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.tiny.speaker_extractor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", required=True, help="synthetic corpus folder (its train split is used)")
    parser.add_argument("--out", required=True, help="folder for the saved extractor, logs and checkpoints")
    parser.add_argument("--arch", choices=sorted(TINY_CONFIGS), default="campplus")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--crop-seconds", type=float, nargs=2, default=(2.0, 3.0), metavar=("MIN", "MAX"))
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=100, help="learning-rate warm-up")
    parser.add_argument("--scale", type=float, default=32.0, help="AAM scale")
    parser.add_argument("--margin", type=float, default=0.2, help="AAM margin after warm-up")
    parser.add_argument("--margin-warmup-steps", type=int, default=None, help="default: steps / 5")
    parser.add_argument(
        "--prototypical-weight",
        type=float,
        default=1.0,
        help="weight of the angular prototypical loss on same-speaker crop pairs (0: AAM only)",
    )
    parser.add_argument("--no-augment", action="store_true", help="train on clean crops")
    parser.add_argument(
        "--held-out-speakers", type=int, default=64, help="train speakers kept out for EER logs"
    )
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument(
        "--max-utterances", type=int, default=None, help="read only the first N train utterances"
    )
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init-from",
        default=None,
        help="continue a trained extractor: its folder, or a SpeakerLM checkpoint (its speaker encoder)",
    )
    parser.add_argument(
        "--data-seed", type=int, default=None, help="seed of the crops alone (default: --seed)"
    )
    parser.add_argument(
        "--meetings",
        nargs="+",
        default=[],
        help="rendered meeting folders (or shards/globs) whose single-speaker speech is added to training",
    )
    parser.add_argument(
        "--look-alike-group",
        type=int,
        default=1,
        help="speakers drawn together into a batch, a random one and its look-alikes (same espeak "
        f"variant, another base voice, pitch within {LOOK_ALIKE_PITCH}) as hard negatives; 1: all at random",
    )
    parser.add_argument(
        "--config", default=None, help="JSON of extractor config overrides, e.g. '{\"m_channels\": 8}'"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps <= 0:
        raise SystemExit(f"--steps must be positive, got {args.steps}")
    if not 0 < args.crop_seconds[0] <= args.crop_seconds[1]:
        raise SystemExit(f"--crop-seconds must be 0 < MIN <= MAX, got {args.crop_seconds}")
    _, summary = train_extractor(
        args.corpus,
        args.out,
        steps=args.steps,
        arch=args.arch,
        batch_size=args.batch_size,
        crop_seconds=tuple(args.crop_seconds),
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        scale=args.scale,
        margin=args.margin,
        margin_warmup_steps=args.margin_warmup_steps,
        prototypical_weight=args.prototypical_weight,
        augment_config=None if args.no_augment else AugmentConfig(),
        held_out_speakers=args.held_out_speakers,
        eval_every=args.eval_every,
        save_every=args.save_every,
        logging_steps=args.logging_steps,
        max_utterances=args.max_utterances,
        threads=args.threads,
        seed=args.seed,
        config_overrides=json.loads(args.config) if args.config else None,
        init_from=args.init_from,
        data_seed=args.data_seed,
        meetings=args.meetings,
        look_alike_group=args.look_alike_group,
    )
    print(json.dumps({k: summary[k] for k in ("parameters", "steps", "train_seconds", "final_held_out_eer")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
