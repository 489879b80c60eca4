"""Long recordings: streamed decoding, an energy voice-activity detector, and cutting into segments at pauses.

A recording of any length is read twice, block by block, and never held whole: the first pass
keeps only one energy value per 10-ms frame (1.1 M floats for 3 hours), from which speech regions
and segment bounds are found; the second pass yields the audio of one segment at a time,
resampled to 16 kHz.

Remote code: shipped to the Hub next to the model, so it imports only torch, numpy and the
standard library; `soundfile` is used when installed and the `ffmpeg` program otherwise.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .audio_frontend import resample
from .feature_extraction_speakerlm import SAMPLING_RATE, describe, load_waveform

FRAMES_PER_SECOND = 100
BLOCK_SECONDS = 10.0
MIN_DURATION = 0.1
# Native-rate samples read around a segment so that resampling has its filter's support at the edges.
RESAMPLE_CONTEXT_SECONDS = 0.05
SILENCE_DB = -120.0


@dataclass(frozen=True)
class VadConfig:
    """Settings of the energy voice-activity detector (times in seconds, levels in dB).

    A frame is speech when its smoothed power rises `margin_db` above the local noise floor (the
    quietest stretch within `noise_window`) and above `floor_db` (dBFS, so that digital silence and
    faint hiss are never speech). Speech regions shorter than `min_speech` are dropped, then each
    region is widened by `onset` before and `hangover` after, and regions closer than `min_pause`
    are joined.
    """

    margin_db: float = 6.0
    floor_db: float = -60.0
    smoothing: float = 0.05
    noise_window: float = 10.0
    noise_block: float = 0.5
    min_speech: float = 0.1
    onset: float = 0.1
    hangover: float = 0.2
    min_pause: float = 0.3


@dataclass(frozen=True)
class Segment:
    """A span of the recording, in seconds, transcribed as one model input."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class AudioSource:
    """A recording read block by block as float32 mono at its own sampling rate."""

    name: str
    sampling_rate: int

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        raise NotImplementedError


class ArraySource(AudioSource):
    """An in-memory waveform (already mono float32 at 16 kHz)."""

    def __init__(self, waveform: np.ndarray, name: str):
        self.waveform = waveform
        self.name = name
        self.sampling_rate = SAMPLING_RATE

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        size = max(1, int(block_seconds * self.sampling_rate))
        for start in range(0, self.waveform.size, size):
            yield self.waveform[start : start + size]


class SoundFileSource(AudioSource):
    """A file libsndfile decodes (WAV, FLAC, OGG, MP3, ...), any rate and channel count; channels are averaged."""

    def __init__(self, path: str, soundfile_module):
        self.path = path
        self.name = f"audio file {path!r}"
        self.soundfile = soundfile_module
        with soundfile_module.SoundFile(path) as handle:
            self.sampling_rate = int(handle.samplerate)

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        size = max(1, int(block_seconds * self.sampling_rate))
        try:
            with self.soundfile.SoundFile(self.path) as handle:
                for block in handle.blocks(blocksize=size, dtype="float32", always_2d=True):
                    yield block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        except (RuntimeError, TypeError, self.soundfile.LibsndfileError) as error:
            raise ValueError(f"{self.name} could not be decoded: {error}") from error


class FfmpegSource(AudioSource):
    """Any container and codec the `ffmpeg` program reads, decoded to 16 kHz mono through a pipe."""

    def __init__(self, path: str, executable: str):
        self.path = path
        self.name = f"audio file {path!r}"
        self.executable = executable
        self.sampling_rate = SAMPLING_RATE

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        size = max(1, int(block_seconds * self.sampling_rate)) * 4
        command = [
            self.executable, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", self.path,
            "-vn", "-ac", "1", "-ar", str(SAMPLING_RATE), "-f", "f32le", "pipe:1",
        ]  # fmt: skip
        # stderr goes to a file: a pipe nobody reads could fill up and stall ffmpeg.
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
            try:
                pending = b""
                while True:
                    data = process.stdout.read(size)
                    if not data:
                        break
                    data = pending + data
                    usable = len(data) - len(data) % 4
                    pending = data[usable:]
                    if usable:
                        yield np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)
                process.stdout.close()
                if process.wait() != 0:
                    errors.seek(0)
                    message = errors.read().decode("utf-8", "replace").strip().splitlines()
                    raise ValueError(
                        f"{self.name} could not be decoded by ffmpeg: {message[-1] if message else 'unknown error'}"
                    )
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()


def open_audio(audio: object, sampling_rate: int | None = None, name: str | None = None) -> AudioSource:
    """A streamed source for a file path; other inputs (arrays, `{"raw", "sampling_rate"}` dicts) are loaded.

    Files are decoded with soundfile when it can (WAV, FLAC, OGG, MP3), else by the `ffmpeg` program
    (M4A, AAC, OPUS in other containers, video files, ...).
    """
    if not isinstance(audio, (str, os.PathLike)):
        return ArraySource(load_waveform(audio, sampling_rate, SAMPLING_RATE, name), describe(audio, name))
    path = os.fspath(audio)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"audio file {path!r} is empty (0 bytes)")
    try:
        import soundfile
    except ImportError:
        soundfile = None
    problem = "the soundfile package is not installed"
    if soundfile is not None:
        try:
            return SoundFileSource(path, soundfile)
        except (RuntimeError, TypeError, soundfile.LibsndfileError) as error:
            problem = str(error)
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise ValueError(
            f"audio file {path!r} could not be decoded ({problem}); formats other than WAV, FLAC, OGG "
            "and MP3 need the ffmpeg program on PATH"
        )
    return FfmpegSource(path, executable)


def frame_energies(source: AudioSource) -> tuple[np.ndarray, float]:
    """Mean power of every 10-ms frame in dB (full scale = 0 dB) and the duration in seconds, in one streamed pass.

    Frame k covers native samples `[k * rate // 100, (k + 1) * rate // 100)`, so frame times stay
    exact at rates that are not a multiple of 100 Hz; a last partial frame counts as a frame.
    """
    rate = source.sampling_rate
    chunks: list[np.ndarray] = []
    pending = np.zeros(0, dtype=np.float64)
    frame, position = 0, 0  # the next frame to finish and the native sample where `pending` starts
    for block in source.blocks():
        if not np.isfinite(block).all():
            raise ValueError(f"{source.name} contains NaN or infinite samples")
        pending = np.concatenate([pending, block.astype(np.float64) ** 2])
        available = position + pending.size
        # Frames j-1 with j * rate // 100 <= available are complete.
        last = ((available + 1) * FRAMES_PER_SECOND - 1) // rate
        if last <= frame:
            continue
        bounds = (np.arange(frame, last + 1) * rate) // FRAMES_PER_SECOND - position
        sums = np.concatenate([[0.0], np.cumsum(pending)])
        chunks.append((sums[bounds[1:]] - sums[bounds[:-1]]) / np.diff(bounds))
        pending = pending[bounds[-1] :]
        position += int(bounds[-1])
        frame = last
    if pending.size:
        chunks.append(np.array([pending.mean()]))
    power = np.concatenate(chunks) if chunks else np.zeros(0)
    if power.size == 0:
        raise ValueError(f"{source.name} is empty (no samples)")
    duration = (position + pending.size) / rate
    if duration < MIN_DURATION:
        raise ValueError(
            f"{source.name} lasts {duration * 1000:.0f} ms; a recording needs at least {MIN_DURATION * 1000:.0f} ms"
        )
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(power), SILENCE_DB).astype(np.float32), duration


def _frames(seconds: float) -> int:
    return max(1, round(seconds * FRAMES_PER_SECOND))


def smoothed_energies(energies: np.ndarray, config: VadConfig = VadConfig()) -> np.ndarray:
    """Frame energies (dB) averaged in the power domain over `config.smoothing`."""
    width = _frames(config.smoothing)
    power = 10.0 ** (energies.astype(np.float64) / 10.0)
    kernel = np.ones(width) / width
    padded = np.pad(power, (width // 2, width - 1 - width // 2), mode="edge")
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(np.convolve(padded, kernel, mode="valid")), SILENCE_DB)


def noise_floor(smoothed: np.ndarray, config: VadConfig = VadConfig()) -> np.ndarray:
    """Local noise floor of every frame: the running minimum over `config.noise_window`.

    The minimum is taken over block minima (`config.noise_block`), which keeps the cost linear.
    """
    block = _frames(config.noise_block)
    count = -(-smoothed.size // block)
    minima = np.pad(smoothed, (0, count * block - smoothed.size), mode="edge").reshape(count, block).min(1)
    reach = max(1, round(config.noise_window / config.noise_block / 2))
    floor = minima.copy()
    for shift in range(1, reach + 1):
        floor[shift:] = np.minimum(floor[shift:], minima[:-shift])
        floor[:-shift] = np.minimum(floor[:-shift], minima[shift:])
    return np.repeat(floor, block)[: smoothed.size]


def mask_runs(mask: np.ndarray) -> np.ndarray:
    """(start, end) frame pairs, end exclusive, of the runs of True in a boolean mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def speech_regions(energies: np.ndarray, config: VadConfig = VadConfig()) -> list[tuple[int, int]]:
    """Speech regions as (start, end) frames, end exclusive, from 10-ms frame energies in dB."""
    smoothed = smoothed_energies(energies, config)
    threshold = np.maximum(noise_floor(smoothed, config) + config.margin_db, config.floor_db)
    runs = mask_runs(smoothed > threshold)
    runs = runs[runs[:, 1] - runs[:, 0] >= _frames(config.min_speech)]
    regions: list[tuple[int, int]] = []
    for start, end in runs.tolist():
        start = max(0, start - _frames(config.onset))
        end = min(energies.size, end + _frames(config.hangover))
        if regions and start - regions[-1][1] < _frames(config.min_pause):
            regions[-1] = (regions[-1][0], max(regions[-1][1], end))
        else:
            regions.append((start, end))
    return regions


def regions_mask(regions: Sequence[tuple[int, int]], num_frames: int) -> np.ndarray:
    """Boolean per-frame speech mask of (start, end) frame regions."""
    mask = np.zeros(num_frames, dtype=bool)
    for start, end in regions:
        mask[start:end] = True
    return mask


def plan_segments(
    regions: Sequence[tuple[int, int]],
    duration: float,
    smoothed: np.ndarray | None = None,
    max_duration: float = 50.0,
    min_duration: float = 25.0,
    pad: float = 0.2,
) -> list[Segment]:
    """Cut a recording into segments of at most `max_duration` seconds, at pauses between speech regions.

    A recording no longer than `max_duration` is one segment, whole, when it holds any speech. Longer
    ones are cut greedily: among the pauses that keep the segment within `max_duration`, the longest
    one that leaves at least `min_duration` is chosen (else the longest one at all), and the cut
    falls in its middle; a segment keeps at most `pad` of silence on each side of its speech. Speech
    running longer than `max_duration` without a pause is cut where the smoothed energy is lowest
    in its last 10 s. No speech at all gives no segments.
    """
    if not regions:
        return []
    if duration <= max_duration:
        return [Segment(0.0, duration)]
    num_frames = math.ceil(duration * FRAMES_PER_SECOND)
    max_frames = round(max_duration * FRAMES_PER_SECOND)
    if smoothed is None:
        smoothed = np.zeros(num_frames)
    min_frames = min(round(min_duration * FRAMES_PER_SECOND), max_frames)
    pad_frames = round(pad * FRAMES_PER_SECOND)
    min_piece = max(1, round(min(1.0, max_duration / 4) * FRAMES_PER_SECOND))
    pending = [tuple(region) for region in regions]
    bounds: list[tuple[int, int]] = []
    start = max(0, pending[0][0] - pad_frames)
    while pending:
        fitting = 0
        while fitting < len(pending) and pending[fitting][1] + pad_frames - start <= max_frames:
            fitting += 1
        if fitting == len(pending):
            bounds.append((start, min(num_frames, pending[-1][1] + pad_frames)))
            break
        if fitting == 0:
            # One region longer than a segment: cut it at its quietest frame near the limit.
            region_start, region_end = pending[0]
            low = max(start + max(min_frames, max_frames - 10 * FRAMES_PER_SECOND), region_start + 1)
            # Leave at least `min_piece` of the region for the next segment: a cut a few frames before
            # the recording's end would make a segment too short to transcribe.
            high = min(start + max_frames, region_end - min_piece)
            # The last of the quietest frames, so that the segment is as long as it may be.
            window = smoothed[low : high + 1][::-1]
            cut = high if low >= high else high - int(np.argmin(window))
            bounds.append((start, cut))
            pending[0] = (cut, region_end)
            start = cut
            continue
        # Pause k lies between pending[k] and pending[k + 1]; pauses before `fitting` keep the segment short enough.
        pauses = [(pending[k + 1][0] - pending[k][1], k) for k in range(fitting)]
        long_enough = [pause for pause in pauses if pending[pause[1]][1] - start >= min_frames]
        _, chosen = max(long_enough or pauses)
        cut = (pending[chosen][1] + pending[chosen + 1][0]) // 2
        bounds.append((start, min(cut, pending[chosen][1] + pad_frames)))
        start = max(cut, pending[chosen + 1][0] - pad_frames)
        pending = pending[chosen + 1 :]
    # The last frame may be partial: the last segment ends with the recording.
    return [Segment(a / FRAMES_PER_SECOND, min(b / FRAMES_PER_SECOND, duration)) for a, b in bounds]


def read_segments(source: AudioSource, segments: Sequence[Segment]) -> Iterator[np.ndarray]:
    """The 16 kHz float32 audio of each segment, in order, from one more streamed pass over the source.

    At most one segment (plus one block) is held at a time. Audio at other rates is resampled per
    segment from a span widened by the filter's reach, so the result equals resampling the whole
    recording up to float rounding (exactly, for a segment that is the whole recording).
    """
    rate = source.sampling_rate
    divisor = math.gcd(rate, SAMPLING_RATE)
    step, new = rate // divisor, SAMPLING_RATE // divisor  # native samples per `new` output samples
    context = 0 if rate == SAMPLING_RATE else math.ceil(RESAMPLE_CONTEXT_SECONDS * rate / step) * step
    spans = []
    for segment in segments:
        first, last = round(segment.start * SAMPLING_RATE), round(segment.end * SAMPLING_RATE)
        # Widened native span, starting on the polyphase grid so that output samples stay aligned.
        native_start = max(0, (first * step // new - context) // step * step)
        native_end = -(-last * step // new) + context
        spans.append((native_start, native_end, first - native_start * new // step, last - first))
    blocks = source.blocks()
    buffer, buffer_start = np.zeros(0, dtype=np.float32), 0
    exhausted = False
    for index, (native_start, native_end, offset, length) in enumerate(spans):
        while not exhausted and buffer_start + buffer.size < native_end:
            block = next(blocks, None)
            if block is None:
                exhausted = True
            else:
                buffer = np.concatenate([buffer, block.astype(np.float32, copy=False)])
        piece = buffer[native_start - buffer_start : native_end - buffer_start]
        if rate != SAMPLING_RATE:
            piece = resample(piece, rate, SAMPLING_RATE)
        yield np.ascontiguousarray(piece[offset : offset + length], dtype=np.float32)
        # Keep what the next span needs; never skip samples not read yet.
        keep_from = min(
            spans[index + 1][0] if index + 1 < len(spans) else native_end, buffer_start + buffer.size
        )
        if keep_from > buffer_start:
            buffer = buffer[keep_from - buffer_start :]
            buffer_start = keep_from
    blocks.close()


@dataclass
class SegmentPlan:
    """What the first pass finds: frame energies, speech frames and the segments to transcribe."""

    source: AudioSource
    duration: float
    energies: np.ndarray
    speech: np.ndarray
    segments: list[Segment]

    def speech_mask(self, segment: Segment) -> np.ndarray:
        """The speech frames (10 ms) of one segment."""
        return self.speech[round(segment.start * FRAMES_PER_SECOND) : round(segment.end * FRAMES_PER_SECOND)]


def segment_recording(
    audio: object,
    sampling_rate: int | None = None,
    max_duration: float = 50.0,
    min_duration: float = 25.0,
    vad: VadConfig = VadConfig(),
    name: str | None = None,
) -> SegmentPlan:
    """Open a recording, find its speech and plan its segments (the first, streamed pass)."""
    if not max_duration >= 1.0:
        raise ValueError(f"max_duration must be at least 1 s, got {max_duration}")
    source = open_audio(audio, sampling_rate, name)
    energies, duration = frame_energies(source)
    regions = speech_regions(energies, vad)
    smoothed = smoothed_energies(energies, vad)
    segments = plan_segments(regions, duration, smoothed, max_duration, min(min_duration, max_duration))
    return SegmentPlan(source, duration, energies, regions_mask(regions, energies.size), segments)


__all__ = [
    "VadConfig",
    "Segment",
    "SegmentPlan",
    "AudioSource",
    "open_audio",
    "frame_energies",
    "mask_runs",
    "speech_regions",
    "plan_segments",
    "read_segments",
    "segment_recording",
]
