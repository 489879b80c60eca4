"""Feature extraction for SpeakerLM: audio loading, SenseVoice features and enrollment features."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor

from .audio_frontend import num_sensevoice_frames, resample, sensevoice_features, speaker_features

SAMPLING_RATE = 16000


def describe(audio: object, name: str | None) -> str:
    """How error messages name an audio input."""
    if name:
        return name
    if isinstance(audio, (str, os.PathLike)):
        return f"audio file {os.fspath(audio)!r}"
    return "audio input"


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode an audio file into (samples, channels) float32 and its sampling rate."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file {path!r} does not exist")
    try:
        import soundfile
    except ImportError as error:
        raise ImportError(
            "reading audio files needs the `soundfile` package: pip install soundfile"
        ) from error
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for undecodable data
        raise ValueError(f"audio file {path!r} could not be decoded: {error}") from error
    return data, int(rate)


def to_float_mono(array: np.ndarray, what: str) -> np.ndarray:
    """Integer PCM or float, 1-D or 2-D (either orientation), to float32 mono."""
    array = np.asarray(array)
    if array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        # Signed PCM is centred on 0, unsigned (8-bit WAV) on half its range.
        middle = 0.0 if array.dtype.kind == "i" else (info.max + 1) / 2
        array = (array.astype(np.float64) - middle) / (-info.min if array.dtype.kind == "i" else middle)
    elif array.dtype.kind != "f":
        raise ValueError(f"{what} has dtype {array.dtype}; expected float or integer PCM samples")
    if array.ndim == 2:
        # Channels are the short axis: (channels, samples) or (samples, channels).
        array = array.mean(axis=0 if array.shape[0] <= array.shape[1] else 1)
    elif array.ndim != 1:
        raise ValueError(f"{what} has shape {array.shape}; expected (samples,) or (channels, samples)")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite samples")
    return array


def load_waveform(
    audio: object,
    sampling_rate: int | None = None,
    target_rate: int = SAMPLING_RATE,
    name: str | None = None,
) -> np.ndarray:
    """Any supported audio input as float32 mono at `target_rate`.

    Accepts a file path, a 1-D/2-D array or tensor (with `sampling_rate`, default `target_rate`),
    a `(array, sampling_rate)` pair, or a dict with `raw`/`array` and `sampling_rate`.
    """
    what = describe(audio, name)
    if isinstance(audio, (str, os.PathLike)):
        audio, sampling_rate = read_audio_file(audio)
    elif isinstance(audio, dict):
        if "sampling_rate" not in audio or not ({"raw", "array"} & audio.keys()):
            raise ValueError(f"{what} is a dict without 'raw'/'array' and 'sampling_rate'")
        sampling_rate = audio["sampling_rate"]
        audio = audio["raw"] if "raw" in audio else audio["array"]
    elif isinstance(audio, tuple) and len(audio) == 2 and np.isscalar(audio[1]):
        audio, sampling_rate = audio
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"{what} has type {type(audio).__name__}; expected a path, an array or a dict")
    sampling_rate = target_rate if sampling_rate is None else int(sampling_rate)
    if sampling_rate <= 0:
        raise ValueError(f"{what} has sampling rate {sampling_rate}; expected a positive rate")
    waveform = to_float_mono(audio, what)
    if waveform.size == 0:
        raise ValueError(f"{what} is empty")
    return resample(waveform, sampling_rate, target_rate) if sampling_rate != target_rate else waveform


class SpeakerLMFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns audio into SpeakerLM's two kinds of features.

    - `input_features`: Kaldi fbank (80 bins, Hamming window, 25/10 ms) -> LFR (7 frames stacked
      every 6) -> CMVN, the SenseVoice encoder's input, padded to the longest and masked by
      `input_features_mask`.
    - `enrollment_features`: mean-normalised 80-bin fbank of each 2-10 s enrollment piece, the
      speaker extractor's input.

    Args:
        cmvn_shift / cmvn_scale: the per-dimension shift and scale of SenseVoice's `am.mvn`
            (applied as `(x + shift) * scale`); identity when not given.
        max_duration: longest input accepted in seconds; longer recordings go through the pipeline,
            which cuts them into segments.
        min_enrollment_duration / max_enrollment_piece: enrollment clips shorter than the first are
            refused; longer than the second they are cut into equal pieces of at most that length.
        return_speaker_features: also return `speaker_features` (mean-normalised 80-bin fbank of
            the whole input, masked by `speaker_features_mask`), for models whose audio tokens
            carry the extractor's sliding-window embeddings (`audio_speaker_window` > 0).
    """

    model_input_names = ["input_features", "input_features_mask"]

    def __init__(
        self,
        feature_size: int = 560,
        sampling_rate: int = SAMPLING_RATE,
        padding_value: float = 0.0,
        num_mel_bins: int = 80,
        lfr_m: int = 7,
        lfr_n: int = 6,
        cmvn_shift: Sequence[float] | None = None,
        cmvn_scale: Sequence[float] | None = None,
        max_duration: float = 600.0,
        min_enrollment_duration: float = 1.0,
        max_enrollment_piece: float = 10.0,
        return_speaker_features: bool = False,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        if feature_size != num_mel_bins * lfr_m:
            raise ValueError(
                f"feature_size {feature_size} must equal num_mel_bins * lfr_m = {num_mel_bins * lfr_m}"
            )
        self.num_mel_bins = num_mel_bins
        self.lfr_m = lfr_m
        self.lfr_n = lfr_n
        for label, values in (("cmvn_shift", cmvn_shift), ("cmvn_scale", cmvn_scale)):
            if values is not None and len(values) != feature_size:
                raise ValueError(f"{label} has {len(values)} values; expected feature_size={feature_size}")
        self.cmvn_shift = [0.0] * feature_size if cmvn_shift is None else [float(v) for v in cmvn_shift]
        self.cmvn_scale = [1.0] * feature_size if cmvn_scale is None else [float(v) for v in cmvn_scale]
        self.max_duration = max_duration
        self.min_enrollment_duration = min_enrollment_duration
        self.max_enrollment_piece = max_enrollment_piece
        self.return_speaker_features = return_speaker_features

    def num_frames(self, num_samples: int) -> int:
        """Number of `input_features` frames for a waveform of `num_samples` samples at 16 kHz."""
        return num_sensevoice_frames(num_samples, self.sampling_rate, self.lfr_n)

    def load(self, audio: object, sampling_rate: int | None = None, name: str | None = None) -> np.ndarray:
        """Float32 mono waveform at the model's rate, with the duration checked."""
        waveform = load_waveform(audio, sampling_rate, self.sampling_rate, name)
        duration = waveform.size / self.sampling_rate
        if duration < 0.025:
            raise ValueError(
                f"{describe(audio, name)} is too short ({duration * 1000:.0f} ms); need at least 25 ms"
            )
        if duration > self.max_duration:
            raise ValueError(
                f"{describe(audio, name)} lasts {duration:.0f} s, over max_duration={self.max_duration:.0f} s; "
                "transcribe long recordings with the speaker-diarization-recognition pipeline"
            )
        return waveform

    def __call__(
        self,
        raw_speech: object | list,
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """`input_features` (batch, frames, 560) and `input_features_mask` (batch, frames)."""
        batch = raw_speech if isinstance(raw_speech, list) else [raw_speech]
        shift = torch.tensor(self.cmvn_shift)
        scale = torch.tensor(self.cmvn_scale)
        waveforms = [
            self.load(item, sampling_rate, f"audio input #{i}" if len(batch) > 1 else None)
            for i, item in enumerate(batch)
        ]
        features = [
            sensevoice_features(
                waveform,
                shift,
                scale,
                lfr_m=self.lfr_m,
                lfr_n=self.lfr_n,
                num_mel_bins=self.num_mel_bins,
                sample_rate=self.sampling_rate,
            )
            for waveform in waveforms
        ]
        padded, mask = pad_features(features, self.padding_value)
        data = {"input_features": padded, "input_features_mask": mask}
        if self.return_speaker_features:
            data["speaker_features"], data["speaker_features_mask"] = pad_features(
                [speaker_features(w, self.sampling_rate, self.num_mel_bins) for w in waveforms]
            )
        return BatchFeature(data, tensor_type=return_tensors)

    def enrollment_pieces(self, waveform: np.ndarray, what: str) -> list[np.ndarray]:
        """Cut an enrollment clip into equal pieces of at most `max_enrollment_piece` seconds."""
        duration = waveform.size / self.sampling_rate
        if duration < self.min_enrollment_duration:
            raise ValueError(
                f"{what} lasts {duration:.2f} s; an enrollment clip needs at least {self.min_enrollment_duration:g} s"
            )
        if float(np.abs(waveform).max()) < 1e-4:
            raise ValueError(f"{what} is silent; an enrollment clip must contain the speaker's voice")
        count = math.ceil(duration / self.max_enrollment_piece)
        return np.array_split(waveform, count)

    def enrollment_features(self, clips: Sequence[object], name: str) -> list[torch.Tensor]:
        """Mean-normalised fbank of every piece of a speaker's enrollment clips."""
        pieces = []
        for i, clip in enumerate(clips):
            what = (
                f"enrollment clip #{i} of speaker {name!r}"
                if len(clips) > 1
                else f"enrollment clip of {name!r}"
            )
            waveform = load_waveform(clip, None, self.sampling_rate, what)
            for piece in self.enrollment_pieces(waveform, what):
                pieces.append(speaker_features(piece, self.sampling_rate, self.num_mel_bins))
        return pieces


def pad_features(
    features: Sequence[torch.Tensor], padding_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (frames, dim) tensors into (batch, max_frames, dim) with a (batch, max_frames) mask."""
    longest = max(f.shape[0] for f in features)
    padded = features[0].new_full((len(features), longest, features[0].shape[1]), padding_value)
    mask = torch.zeros(len(features), longest, dtype=torch.long)
    for i, f in enumerate(features):
        padded[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = 1
    return padded, mask


__all__ = ["SpeakerLMFeatureExtractor", "load_waveform", "pad_features"]
