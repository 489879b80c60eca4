"""The data collator: stored (Match-Regist) samples -> SpeakerLM model inputs with labels.

Each batch: decode the audio, draw the registration of every sample (`RegistrationSampler`),
relabel the turns (registered names, or `spkK` for No-Regist), format the role transcript
(`format_role_transcript`; the timestamped variant with probability `timestamps`) and let the
processor build the prompts, labels (-100 on prompt and padding), padded audio features and
enrollment inputs. Registered speakers come as pool clips (the model's frozen extractor embeds
them in the forward pass) or precomputed embeddings, both as the processor takes them.

Randomness: a generator seeded with `seed` and the DataLoader worker id, so batches are the same
for a seed and a number of workers (collate functions run in the workers).

With the HF `Trainer`: set `remove_unused_columns=False` (the collator needs `audio`, `turns`,
`enrollment`) and, for iterable datasets, `accelerator_config={"dispatch_batches": False}`:
accelerate's batch dispatcher slices every tensor to the per-process batch size along its first
dimension, which for `enrollment_features` (pieces) and `speaker_embeddings` (speakers) is not
the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import BatchFeature

from ..processing_speakerlm import format_role_transcript
from .audio import decode_audio
from .registration import Registration, RegistrationSampler, present_speakers

__all__ = ["SpeakerLMDataCollator", "relabel_turns"]


def relabel_turns(turns: Sequence[Mapping], labels: Mapping[str, str]) -> list[dict]:
    """Turns sorted by start time with each stored speaker replaced by its label."""
    ordered = sorted(turns, key=lambda t: (t["start"], t["end"]))
    return [{**turn, "speaker": labels[turn["speaker"]]} for turn in ordered]


class SpeakerLMDataCollator:
    """`collator(features) -> BatchFeature` of model inputs and labels, for `Trainer` or a DataLoader.

    Args:
        processor: a `SpeakerLMProcessor`.
        sampler: draws the registration mode; None keeps every sample No-Regist.
        task: "sdr" (transcript by roles) or "asr" (plain transcript: the `text` column, else the
            turns' texts joined in time order).
        timestamps: probability (or bool) of the timestamped target and instruction, per batch.
        asr_probability: with task "sdr", probability that a batch is plain transcription instead
            (its turns' texts joined in time order), so that SDR training keeps the ASR task.
        seed: seed of the collator's draws (combined with the DataLoader worker id).
    """

    def __init__(
        self,
        processor,
        sampler: RegistrationSampler | None = None,
        task: str = "sdr",
        timestamps: bool | float = False,
        seed: int = 0,
        audio_column: str = "audio",
        text_column: str = "text",
        asr_probability: float = 0.0,
    ):
        if task not in ("sdr", "asr"):
            raise ValueError(f"task {task!r} is not 'sdr' or 'asr'")
        probability = float(timestamps)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"timestamps must be a bool or a probability in [0, 1], got {timestamps!r}")
        if not 0.0 <= asr_probability <= 1.0:
            raise ValueError(f"asr_probability must be in [0, 1], got {asr_probability!r}")
        self.asr_probability = asr_probability
        self.processor = processor
        self.sampler = sampler
        self.task = task
        self.timestamp_probability = probability
        self.seed = seed
        self.audio_column = audio_column
        self.text_column = text_column
        self._rng: np.random.Generator | None = None
        self._worker: int | None = None

    def generator(self) -> np.random.Generator:
        """This process's generator: seeded by `seed` and the DataLoader worker id."""
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        if self._rng is None or self._worker != worker:
            self._rng = np.random.default_rng([self.seed, worker + 1])
            self._worker = worker
        return self._rng

    def registrations(self, features: Sequence[Mapping], rng: np.random.Generator) -> list[Registration]:
        if self.sampler is None:
            return [
                Registration("no", {s: f"spk{i}" for i, s in enumerate(present_speakers(f["turns"]))}, {})
                for f in features
            ]
        modes = self.sampler.batch_modes(len(features), rng)
        return [self.sampler.register(f, mode, rng) for f, mode in zip(features, modes, strict=True)]

    def __call__(self, features: Sequence[Mapping]) -> BatchFeature:
        if not features:
            raise ValueError("the collator got an empty batch")
        rng = self.generator()
        audio = [
            decode_audio(f[self.audio_column], f"audio of sample {f.get('id', i)!r}")
            for i, f in enumerate(features)
        ]
        if self.task == "asr" or (self.asr_probability and rng.random() < self.asr_probability):
            return self.processor(audio, text=[self.asr_target(f) for f in features], task="asr")
        timestamps = bool(rng.random() < self.timestamp_probability)
        registrations = self.registrations(features, rng)
        targets = [
            format_role_transcript(relabel_turns(f["turns"], r.labels), timestamps=timestamps)
            for f, r in zip(features, registrations, strict=True)
        ]
        speakers = [self.decoded_speakers(r.speakers) or None for r in registrations]
        return self.processor(audio, speakers=speakers, text=targets, timestamps=timestamps)

    def asr_target(self, feature: Mapping) -> str:
        if feature.get(self.text_column) is not None:
            return str(feature[self.text_column])
        ordered = sorted(feature["turns"], key=lambda t: (t["start"], t["end"]))
        return " ".join(t["text"].strip() for t in ordered)

    @staticmethod
    def decoded_speakers(speakers: Mapping[str, object]) -> dict[str, object]:
        """Registered clips decoded to arrays; embeddings passed through."""
        return {
            name: [decode_audio(clip, f"enrollment clip of {name!r}") for clip in value]
            if isinstance(value, list)
            else value
            for name, value in speakers.items()
        }
