"""The data collator: stored (Match-Regist) samples -> SpeakerLM model inputs with labels.

Each batch: decode the audio, draw the registration of every sample (`RegistrationSampler`),
relabel the turns (registered names, or `spkK` for No-Regist), format the role transcript
(`format_role_transcript`; the timestamped variant with probability `timestamps`) and let the
processor build the prompts, labels (-100 on prompt and padding), padded audio features and
enrollment inputs. Registered speakers come as pool clips (the model's frozen extractor embeds
them in the forward pass) or precomputed embeddings, both as the processor takes them.

Speed perturbation (`speed_perturbation=(low, high)`): each recording is played at a speed drawn
uniformly from the range (in steps of 1%; band-limited resampling), which moves its pitch and
formants as a different voice would and stretches its length; the turns' times are scaled with it
and so are the recording's enrollment clips, so the registered voices still match. Registered
speakers given as precomputed embeddings cannot follow: the collator refuses them with a
perturbation (Over-Regist's absent speakers from the bank are not in the recording and stay).

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
from .audio import decode_audio, speed_perturb
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
        speed_perturbation: None, or `(low, high)`: each recording's speed factor drawn uniformly
            from this range (0.5 <= low <= high <= 2), see the module's docstring.
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
        speed_perturbation: Sequence[float] | None = None,
    ):
        if speed_perturbation is not None:
            speed_perturbation = tuple(float(v) for v in speed_perturbation)
            if (
                len(speed_perturbation) != 2
                or not 0.5 <= speed_perturbation[0] <= speed_perturbation[1] <= 2.0
            ):
                raise ValueError(
                    f"speed_perturbation must be (low, high) with 0.5 <= low <= high <= 2, got {speed_perturbation!r}"
                )
        self.speed_perturbation = speed_perturbation
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
        factors = self.speed_factors(len(features), rng)
        audio = [speed_perturb(a, f) for a, f in zip(audio, factors, strict=True)]
        if self.task == "asr" or (self.asr_probability and rng.random() < self.asr_probability):
            return self.processor(audio, text=[self.asr_target(f) for f in features], task="asr")
        timestamps = bool(rng.random() < self.timestamp_probability)
        registrations = self.registrations(features, rng)
        targets = [
            format_role_transcript(
                relabel_turns(scaled_turns(f["turns"], factor), r.labels), timestamps=timestamps
            )
            for f, r, factor in zip(features, registrations, factors, strict=True)
        ]
        speakers = [
            self.decoded_speakers(r.speakers, factor, list(r.labels.values())) or None
            for r, factor in zip(registrations, factors, strict=True)
        ]
        return self.processor(audio, speakers=speakers, text=targets, timestamps=timestamps)

    def speed_factors(self, count: int, rng: np.random.Generator) -> list[float]:
        """Each recording's speed factor (1.0 without perturbation), on the 1% grid `speed_perturb` uses."""
        if self.speed_perturbation is None:
            return [1.0] * count
        low, high = self.speed_perturbation
        return [round(v * 100) / 100 for v in rng.uniform(low, high, size=count)]

    def asr_target(self, feature: Mapping) -> str:
        if feature.get(self.text_column) is not None:
            return str(feature[self.text_column])
        ordered = sorted(feature["turns"], key=lambda t: (t["start"], t["end"]))
        return " ".join(t["text"].strip() for t in ordered)

    @staticmethod
    def decoded_speakers(
        speakers: Mapping[str, object], factor: float = 1.0, present: Sequence[str] = ()
    ) -> dict[str, object]:
        """Registered clips decoded to arrays, at the recording's speed `factor`; embeddings passed through.

        The `present` names (speakers heard in the recording) must come as clips when `factor` is
        not 1: a precomputed embedding cannot follow the perturbation. Over-Regist's absent
        speakers (bank embeddings) are not in the recording and pass through.
        """
        decoded = {}
        for name, value in speakers.items():
            if isinstance(value, list):
                decoded[name] = [
                    speed_perturb(decode_audio(clip, f"enrollment clip of {name!r}"), factor)
                    for clip in value
                ]
                continue
            if factor != 1.0 and name in present:
                raise ValueError(
                    f"speed perturbation needs enrollment clips, but {name!r} is registered by a precomputed "
                    "embedding (train with enrollment='clips')"
                )
            decoded[name] = value
        return decoded


def scaled_turns(turns: Sequence[Mapping], factor: float) -> list[Mapping]:
    """Turns of a recording played `factor` times as fast: their times divided by `factor`."""
    if factor == 1.0:
        return list(turns)
    return [{**t, "start": t["start"] / factor, "end": t["end"] / factor} for t in turns]
