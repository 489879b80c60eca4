"""Audio I/O of the data layer: FLAC bytes for parquet, decoding of every stored form, channel reads."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile

from ..audio_frontend import resample
from ..feature_extraction_speakerlm import SAMPLING_RATE, load_waveform

__all__ = [
    "SAMPLING_RATE",
    "encode_flac",
    "decode_audio",
    "audio_duration",
    "read_channel",
    "read_mixdown",
    "speed_perturb",
]

# Samples read at a time from long multi-channel files, so only one channel is ever held whole.
_BLOCK = 1 << 20


def encode_flac(waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """16-bit FLAC bytes of a [-1, 1] float waveform (clipped)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(waveform, -1.0, 1.0), sampling_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(value: object, what: str = "audio", sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Float32 mono at `sampling_rate` from any stored or decoded form of a recording.

    Accepts encoded bytes (`{"bytes": ..., "path": ...}` as `datasets.Audio(decode=False)` gives, or
    raw `bytes`), decoded arrays (`{"array", "sampling_rate"}`, torchcodec decoders), file paths and
    plain arrays (taken to be at `sampling_rate`).
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(value), what, sampling_rate)
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return _decode_bytes(value["bytes"], what, sampling_rate)
        if value.get("array") is not None or value.get("raw") is not None:
            return load_waveform(dict(value), target_rate=sampling_rate, name=what)
        if value.get("path"):
            return load_waveform(value["path"], target_rate=sampling_rate, name=what)
        raise ValueError(f"{what} has neither bytes, an array nor a path: keys {sorted(value)}")
    if hasattr(value, "get_all_samples"):
        # A torchcodec AudioDecoder, what `datasets.Audio()` decodes to when torchcodec is installed.
        samples = value.get_all_samples()
        return load_waveform(samples.data.numpy(), samples.sample_rate, sampling_rate, what)
    return load_waveform(value, None, sampling_rate, what)


def audio_duration(value: object) -> float | None:
    """Seconds of a stored recording from its header or array shape, without decoding; None if unknown."""
    try:
        if isinstance(value, (bytes, bytearray)):
            return soundfile.info(io.BytesIO(value)).duration
        if isinstance(value, Mapping):
            if value.get("bytes") is not None:
                return soundfile.info(io.BytesIO(value["bytes"])).duration
            array = value.get("array") if value.get("array") is not None else value.get("raw")
            if array is not None and value.get("sampling_rate"):
                return max(np.shape(array)) / float(value["sampling_rate"])
            if value.get("path"):
                return soundfile.info(value["path"]).duration
        if isinstance(value, (str, os.PathLike)):
            return soundfile.info(os.fspath(value)).duration
    except (RuntimeError, TypeError, ValueError, soundfile.LibsndfileError):
        return None
    return None


def _decode_bytes(data: bytes, what: str, sampling_rate: int) -> np.ndarray:
    try:
        array, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for undecodable data
        raise ValueError(f"{what} could not be decoded: {error}") from error
    return load_waveform(array.T, rate, sampling_rate, what)


def read_channel(
    path: str | os.PathLike, channel: int | None = 0, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """One channel (or, with `channel=None`, the mean of all) of an audio file, float32 at `sampling_rate`.

    Long multi-channel files (an 8-channel array recording of half an hour) are read block by
    block so only the kept channel is ever held whole.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {str(path)!r} does not exist")
    info = soundfile.info(str(path))
    if channel is not None and not 0 <= channel < info.channels:
        raise ValueError(
            f"audio file {str(path)!r} has {info.channels} channel(s); channel {channel} does not exist"
        )
    pieces = []
    for block in soundfile.blocks(str(path), blocksize=_BLOCK, dtype="float32", always_2d=True):
        pieces.append(block[:, channel] if channel is not None else block.mean(axis=1))
    waveform = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    if info.samplerate != sampling_rate:
        waveform = resample(waveform, info.samplerate, sampling_rate)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def read_mixdown(
    paths: Sequence[str | os.PathLike], channel: int | None = 0, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """Sum of time-aligned recordings (close-talk headsets into one near-field mix), zero-padded to the longest.

    The sum is scaled down only when it would clip.
    """
    if not paths:
        raise ValueError("read_mixdown needs at least one audio file")
    tracks = [read_channel(path, channel, sampling_rate) for path in paths]
    mix = np.zeros(max(track.size for track in tracks), dtype=np.float32)
    for track in tracks:
        mix[: track.size] += track
    peak = float(np.abs(mix).max(initial=0.0))
    return mix / peak * 0.99 if peak > 0.99 else mix


def speed_perturb(waveform: np.ndarray, factor: float, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """`waveform` played `factor` times as fast (pitch and formants scaled by it, length by 1 / factor).

    Resampled band-limited from `sampling_rate * factor` to `sampling_rate`, so `factor` is rounded
    to a step of 1%.
    """
    steps = round(float(factor) * 100)
    if steps <= 0:
        raise ValueError(f"speed factor must be positive, got {factor!r}")
    if steps == 100:
        return np.asarray(waveform, dtype=np.float32)
    return resample(waveform, sampling_rate * steps // 100, sampling_rate)
