"""Stage-2 simulation: multi-speaker conversations built on the fly from a single-speaker ASR dataset.

Each sample is `duration` seconds (50 by default) of 2-4 speakers (`min_speakers`..`max_speakers`,
uniform) drawn from the source's speakers. Every chosen speaker talks at least once (the first
round visits them in random order). With `continue_probability` the previous speaker goes on
after a pause (`continue_gap_range`), as people do (AAB / ABB patterns: a model must not switch
label at every pause); otherwise the turn goes to another speaker. A turn starts a random gap (`gap_range`) after the latest end so far or, with
`overlap_probability`, overlaps it by a random amount (`overlap_range`, never covering either
utterance whole, never overlapping the same speaker). Utterances that no longer fit end the
conversation; the rest of the `duration` stays silent (or noisy). Turn times are exact: a turn
spans its utterance's samples in the mixture (`start = first sample / rate`).

Each speaker gets a level (`level_range`, dBFS RMS); optional reverberation convolves each
speaker's utterances with one room impulse response (from `rirs`, aligned on its peak so turn
times hold, or synthetic: exponentially decaying noise with an RT60 in `rt60_range` behind a
direct path); optional additive noise (from `noises`, else synthetic 1/f^beta noise with beta in
`noise_exponent_range`) at an SNR in `snr_range` against the speech. Enrollment clips of each
speaker are other utterances of theirs (never ones in the conversation), `enrollment_range`
long (longer ones cropped at random), stored like prepared rows' pools.

Samples come out in the prepared rows' form (`audio` as `{"array", "sampling_rate"}`, `turns`,
`enrollment`, `session`, `corpus="simulated"`), so the same collator serves both.

Determinism: sample `index` of shard `shard` uses `default_rng([seed, shard, index])`.
`simulate_conversations` returns an infinite `datasets.IterableDataset` with `num_shards`
shards; DataLoader workers (and distributed ranks) each take their own shards, so the stream is
the same for a seed and a number of workers, and the HF `Trainer` takes it as is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import datasets
import numpy as np

from .audio import SAMPLING_RATE, audio_duration, decode_audio

__all__ = [
    "SimulationConfig",
    "ConversationSimulator",
    "simulate_conversations",
    "synthetic_rir",
    "coloured_noise",
    "fft_convolve",
    "fast_fft_size",
]


RANGE_FIELDS = (
    "leading_silence",
    "gap_range",
    "continue_gap_range",
    "overlap_range",
    "level_range",
    "snr_range",
    "noise_exponent_range",
    "rt60_range",
    "drr_range",
    "enrollment_range",
)


@dataclass(frozen=True)
class SimulationConfig:
    min_speakers: int = 2
    max_speakers: int = 4
    duration: float = 50.0
    min_duration: float | None = None
    leading_silence: tuple[float, float] = (0.0, 1.0)
    gap_range: tuple[float, float] = (0.1, 1.5)
    overlap_probability: float = 0.1
    continue_probability: float = 0.3
    continue_gap_range: tuple[float, float] = (0.3, 1.5)
    overlap_range: tuple[float, float] = (0.2, 2.0)
    max_utterance: float = 20.0
    level_range: tuple[float, float] = (-32.0, -22.0)
    noise_probability: float = 0.0
    snr_range: tuple[float, float] = (5.0, 25.0)
    noise_exponent_range: tuple[float, float] = (0.0, 2.0)
    reverb_probability: float = 0.0
    rt60_range: tuple[float, float] = (0.15, 0.7)
    drr_range: tuple[float, float] = (0.0, 10.0)
    enrollment_clips: int = 2
    enrollment_range: tuple[float, float] = (2.0, 10.0)

    def __post_init__(self):
        if not 1 <= self.min_speakers <= self.max_speakers:
            raise ValueError(
                f"need 1 <= min_speakers <= max_speakers, got {self.min_speakers}, {self.max_speakers}"
            )
        if self.duration <= 0 or self.max_utterance <= 0:
            raise ValueError("duration and max_utterance must be positive")
        if self.min_duration is not None and not 0 < self.min_duration <= self.duration:
            raise ValueError(f"min_duration must be in (0, duration], got {self.min_duration}")
        for name in RANGE_FIELDS:
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} {getattr(self, name)} has its low end above its high end")
        for name in (
            "overlap_probability",
            "continue_probability",
            "noise_probability",
            "reverb_probability",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.gap_range[0] < 0 or self.overlap_range[0] < 0 or self.rt60_range[0] <= 0:
            raise ValueError("gaps and overlaps cannot be negative and RT60 must be positive")


def fast_fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: sizes pocketfft transforms fastest, with less padding than 2^k."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def fft_convolve(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Full linear convolution through a real FFT of a fast size."""
    length = signal.size + kernel.size - 1
    size = fast_fft_size(length)
    spectrum = np.fft.rfft(signal, size) * np.fft.rfft(kernel, size)
    return np.fft.irfft(spectrum, size)[:length].astype(np.float32)


def synthetic_rir(
    rng: np.random.Generator, rt60: float, drr_db: float, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """A direct path (1 at t=0) followed by noise decaying 60 dB in `rt60` s, `drr_db` below it in energy."""
    length = max(2, int(min(rt60, 1.5) * sampling_rate))
    t = np.arange(1, length) / sampling_rate
    tail = rng.standard_normal(length - 1) * np.exp(-6.9078 * t / rt60)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.sum(tail**2)), 1e-12))
    return np.concatenate([[1.0], tail]).astype(np.float32)


def coloured_noise(
    rng: np.random.Generator, length: int, exponent: float, period: int = 1 << 17
) -> np.ndarray:
    """Gaussian noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown), unit RMS.

    At most `period` samples (8 s at 16 kHz) are synthesised and repeated: stationary noise
    sounds the same, at a fraction of the cost of one long transform.
    """
    size = min(length, period)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    frequencies = np.arange(spectrum.size, dtype=np.float64)
    frequencies[0] = 1.0
    noise = np.fft.irfft(spectrum / frequencies ** (exponent / 2), size)
    noise = (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)
    return np.tile(noise, -(-length // size))[:length]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


@dataclass
class _Placed:
    speaker: str
    start: int
    waveform: np.ndarray
    text: str

    @property
    def end(self) -> int:
        return self.start + self.waveform.size


class ConversationSimulator:
    """Builds simulated conversations from `source` (see the module doc).

    Args:
        source: a map-style dataset of single-speaker utterances: a `datasets.Dataset` or any
            sequence of dicts with audio (any form `decode_audio` takes), text and speaker id.
        noises / rirs: optional sequences of noise recordings / room impulse responses (audio
            values, or dicts holding one under `audio_column`).
    """

    def __init__(
        self,
        source,
        config: SimulationConfig | None = None,
        seed: int = 0,
        audio_column: str = "audio",
        text_column: str = "text",
        speaker_column: str = "speaker",
        noises: Sequence | None = None,
        rirs: Sequence | None = None,
        sampling_rate: int = SAMPLING_RATE,
    ):
        self.config = config or SimulationConfig()
        self.seed = seed
        self.audio_column = audio_column
        self.text_column = text_column
        self.sampling_rate = sampling_rate
        if isinstance(source, datasets.Dataset):
            missing = {audio_column, text_column, speaker_column} - set(source.column_names)
            if missing:
                raise ValueError(f"the source dataset lacks the column(s) {sorted(missing)}")
            if isinstance(source.features[audio_column], datasets.Audio):
                # Decode with soundfile in the workers rather than through a decoding backend.
                source = source.cast_column(audio_column, datasets.Audio(decode=False))
            speakers = [str(s) for s in source[speaker_column]]
        else:
            speakers = [str(row[speaker_column]) for row in source]
        self.source = source
        by_speaker: dict[str, list[int]] = {}
        for index, speaker in enumerate(speakers):
            by_speaker.setdefault(speaker, []).append(index)
        self.by_speaker = {s: np.asarray(i, dtype=np.int64) for s, i in sorted(by_speaker.items())}
        self.speakers = list(self.by_speaker)
        if len(self.speakers) < self.config.max_speakers:
            raise ValueError(
                f"the source has {len(self.speakers)} speaker(s); conversations of up to "
                f"{self.config.max_speakers} speakers need at least that many"
            )
        self.noises = noises
        self.rirs = rirs
        self._durations: dict[int, float] = {}

    def _audio(self, value: object, what: str) -> np.ndarray:
        if isinstance(value, Mapping) and self.audio_column in value:
            value = value[self.audio_column]
        return decode_audio(value, what, self.sampling_rate)

    def load(self, index: int) -> tuple[np.ndarray, str]:
        row = self.source[int(index)]
        return self._audio(row[self.audio_column], f"source utterance {index}"), str(row[self.text_column])

    def simulate(self, rng: np.random.Generator, name: str = "sim") -> dict:
        """One conversation in the prepared rows' form."""
        config, rate = self.config, self.sampling_rate
        for attempt in range(5):
            # A drawn length too short for the drawn speakers is drawn again, then the longest is used.
            seconds = (
                config.duration
                if config.min_duration is None or attempt >= 3
                else rng.uniform(config.min_duration, config.duration)
            )
            total = round(seconds * rate)
            count = int(rng.integers(config.min_speakers, config.max_speakers + 1))
            chosen = [self.speakers[i] for i in rng.choice(len(self.speakers), size=count, replace=False)]
            queues, reserved = {}, {}
            for speaker in chosen:
                order = rng.permutation(self.by_speaker[speaker])
                keep = min(config.enrollment_clips, order.size - 1)
                queues[speaker] = list(order[: order.size - keep])
                reserved[speaker] = list(order[order.size - keep :])
            placed = self._place(chosen, queues, rng, total)
            if {p.speaker for p in placed} == set(chosen):
                break
        else:
            raise ValueError(
                f"could not fit one utterance of each of {count} speakers into {seconds:g} s in five "
                "tries; lower max_utterance or max_speakers, or raise duration"
            )
        mixture = self._mix(placed, chosen, rng, total)
        turns = [
            {"speaker": p.speaker, "start": p.start / rate, "end": p.end / rate, "text": p.text}
            for p in placed
        ]
        enrollment = []
        for speaker in chosen:
            clips = self._enrollment(reserved[speaker], rng)
            if clips:
                enrollment.append({"speaker": speaker, "clips": clips})
        return {
            "id": name,
            "corpus": "simulated",
            "session": name,
            "start": 0.0,
            "end": total / rate,
            "audio": {"array": mixture, "sampling_rate": rate},
            "turns": turns,
            "enrollment": enrollment,
        }

    def duration(self, index: int) -> float:
        """Seconds of a source utterance, from its header when it can be read without decoding (cached)."""
        index = int(index)
        if index not in self._durations:
            seconds = audio_duration(self.source[index][self.audio_column])
            if seconds is None:
                seconds = self.load(index)[0].size / self.sampling_rate
            self._durations[index] = seconds
        return self._durations[index]

    def _next_utterance(self, queue: list, limit: int) -> tuple[np.ndarray, str] | None:
        """The next queued utterance of at most `limit` samples (longer ones are passed over), or None."""
        while queue:
            index = queue.pop(0)
            # Skip on the header's length first: decoding is what costs.
            if self.duration(index) * self.sampling_rate > limit + 1:
                continue
            waveform, text = self.load(index)
            if 0 < waveform.size <= limit:
                return waveform, text
        return None

    def _place(self, chosen: list[str], queues: dict, rng: np.random.Generator, total: int) -> list[_Placed]:
        config, rate = self.config, self.sampling_rate
        longest = round(config.max_utterance * rate)
        placed: list[_Placed] = []
        cursor = round(rng.uniform(*config.leading_silence) * rate)
        free = dict.fromkeys(chosen, 0)
        first_round = list(rng.permutation(len(chosen)))
        misses = 0
        widest_gap = round(config.gap_range[1] * rate)
        while misses < 3:
            previous = placed[-1].speaker if placed else None
            continuing = (
                previous is not None and bool(queues[previous]) and rng.random() < config.continue_probability
            )
            if continuing:
                speaker = previous
                share = (
                    (total - cursor) // (len(first_round) + 1) - widest_gap if first_round else total - cursor
                )
                limit = min(longest, share)
            elif first_round:
                speaker = chosen[first_round.pop(0)]
                # Leave room for the speakers of the first round still to come.
                share = (total - cursor) // (len(first_round) + 1) - widest_gap
                limit = min(longest, share)
            else:
                others = [s for s in chosen if queues[s] and (not placed or s != placed[-1].speaker)]
                if not others:
                    break
                speaker = others[int(rng.integers(len(others)))]
                limit = min(longest, total - cursor)
            utterance = self._next_utterance(queues[speaker], limit)
            if utterance is None:
                misses += 1
                continue
            waveform, text = utterance
            if continuing:
                start = cursor + round(rng.uniform(*config.continue_gap_range) * rate)
            elif placed and rng.random() < config.overlap_probability:
                overlap = round(rng.uniform(*config.overlap_range) * rate)
                overlap = min(overlap, placed[-1].waveform.size - 1, waveform.size - 1)
                start = max(cursor - overlap, free[speaker])
            else:
                start = cursor + round(rng.uniform(*config.gap_range) * rate)
            if start + waveform.size > total:
                misses += 1
                continue
            placed.append(_Placed(speaker, start, waveform, text))
            cursor = max(cursor, start + waveform.size)
            free[speaker] = start + waveform.size
        return placed

    def _mix(
        self, placed: list[_Placed], chosen: list[str], rng: np.random.Generator, total: int
    ) -> np.ndarray:
        config = self.config
        levels = {s: 10.0 ** (rng.uniform(*config.level_range) / 20.0) for s in chosen}
        rirs = None
        if rng.random() < config.reverb_probability:
            rirs = {s: self._rir(rng) for s in chosen}
        mixture = np.zeros(total, dtype=np.float32)
        for p in placed:
            gain = levels[p.speaker] / max(_rms(p.waveform), 1e-8)
            wet = p.waveform if rirs is None else fft_convolve(p.waveform, rirs[p.speaker])
            stop = min(total, p.start + wet.size)
            mixture[p.start : stop] += gain * wet[: stop - p.start]
        if rng.random() < config.noise_probability:
            active = np.zeros(total, dtype=bool)
            for p in placed:
                active[p.start : p.end] = True
            speech_power = (
                float(np.mean(np.square(mixture[active], dtype=np.float64))) if active.any() else 1e-6
            )
            snr = rng.uniform(*config.snr_range)
            noise = self._noise(rng, total)
            mixture += noise * np.float32(
                np.sqrt(speech_power / 10.0 ** (snr / 10.0)) / max(_rms(noise), 1e-8)
            )
        peak = float(np.abs(mixture).max(initial=0.0))
        if peak > 0.99:
            mixture *= np.float32(0.99 / peak)
        return mixture

    def _rir(self, rng: np.random.Generator) -> np.ndarray:
        if self.rirs is None or len(self.rirs) == 0:
            rt60, drr = rng.uniform(*self.config.rt60_range), rng.uniform(*self.config.drr_range)
            return synthetic_rir(rng, rt60, drr, self.sampling_rate)
        index = int(rng.integers(len(self.rirs)))
        rir = self._audio(self.rirs[index], f"room impulse response {index}")
        peak = int(np.argmax(np.abs(rir)))
        rir = rir[peak:]  # the direct path at t=0, so turn times stay exact
        return rir / max(float(np.abs(rir[0])), 1e-8)

    def _noise(self, rng: np.random.Generator, length: int) -> np.ndarray:
        if self.noises is None or len(self.noises) == 0:
            return coloured_noise(rng, length, rng.uniform(*self.config.noise_exponent_range))
        index = int(rng.integers(len(self.noises)))
        noise = self._audio(self.noises[index], f"noise recording {index}")
        repeats = -(-length // noise.size) + 1
        offset = int(rng.integers(noise.size))
        return np.tile(noise, repeats)[offset : offset + length]

    def _enrollment(self, indices: list, rng: np.random.Generator) -> list[dict]:
        low, high = (round(x * self.sampling_rate) for x in self.config.enrollment_range)
        clips = []
        for index in indices:
            waveform, _ = self.load(index)
            if waveform.size < low:
                continue
            if waveform.size > high:
                offset = int(rng.integers(waveform.size - high + 1))
                waveform = waveform[offset : offset + high]
            clips.append({"array": waveform, "sampling_rate": self.sampling_rate})
        return clips

    def generate(self, shards: Sequence[int]) -> Iterator[dict]:
        """Endless samples of the given shards, round robin."""
        for index in itertools.count():
            for shard in shards:
                rng = np.random.default_rng([self.seed, int(shard), index])
                yield self.simulate(rng, f"sim-{self.seed}-{int(shard)}-{index}")

    def iterable_dataset(self, num_shards: int = 64) -> datasets.IterableDataset:
        """An infinite `datasets.IterableDataset` of conversations with `num_shards` shards."""
        return datasets.IterableDataset.from_generator(
            self.generate, gen_kwargs={"shards": list(range(num_shards))}
        )


def simulate_conversations(
    source,
    config: SimulationConfig | None = None,
    seed: int = 0,
    num_shards: int = 64,
    **options,
) -> datasets.IterableDataset:
    """`source` (single-speaker utterances) -> an infinite, seeded `IterableDataset` of conversations.

    `options` go to `ConversationSimulator` (column names, `noises`, `rirs`).
    """
    return ConversationSimulator(source, config, seed, **options).iterable_dataset(num_shards)
