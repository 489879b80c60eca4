"""Audio front ends for SpeakerLM in plain torch/numpy: Kaldi fbank, LFR, CMVN and resampling.

Two chains are built from these parts:

* ``sensevoice_features``: the SenseVoice encoder input (funasr ``WavFrontend`` with a Hamming
  window, LFR m=7 n=6 and the ``am.mvn`` CMVN).
* ``speaker_features``: the 3D-Speaker embedding-extractor input (Kaldi fbank, Povey window,
  utterance mean removed).

The fbank follows Kaldi's ``compute-fbank-feats`` (as kaldi-native-fbank does). Its spectrum is
computed in float64, so it stays within about 1e-6 (log-mel) of the exact result; the float32
Kaldi implementations are themselves up to ~1e-3 off in bins far below a frame's peak. This
module is shipped as Hub remote code, so it imports only torch and numpy.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "apply_cmvn",
    "apply_lfr",
    "kaldi_fbank",
    "load_kaldi_cmvn",
    "num_fbank_frames",
    "num_lfr_frames",
    "num_sensevoice_frames",
    "parse_kaldi_cmvn",
    "resample",
    "sensevoice_features",
    "speaker_features",
]

WINDOW_TYPES = ("povey", "hamming", "hann", "hanning", "rectangular", "sine", "blackman")
# funasr scales [-1, 1] audio to the int16 range before the fbank (``upsacle_samples``).
INT16_SCALE = 32768.0
_FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _as_waveform(waveform: np.ndarray | torch.Tensor, name: str = "waveform") -> torch.Tensor:
    """Return ``waveform`` as a 1-D float32 tensor, rejecting other shapes and non-finite values."""
    if isinstance(waveform, torch.Tensor):
        tensor = waveform.detach()
    else:
        array = np.asarray(waveform)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D (mono samples), got shape {tuple(tensor.shape)}")
    tensor = tensor.to(torch.float32)
    # A float64 sum of finite float32 values cannot overflow, so it is non-finite exactly when a
    # sample is; one reduction is much cheaper than an elementwise isfinite mask.
    if not math.isfinite(float(tensor.sum(dtype=torch.float64))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


def _kaldi_samples(sample_rate: float, milliseconds: float) -> int:
    """Samples in ``milliseconds``, computed in float32 as Kaldi's ``WindowSize``/``WindowShift`` do."""
    product = np.float32(sample_rate) * np.float32(0.001) * np.float32(milliseconds)
    return int(product)


def _frame_geometry(sample_rate: float, frame_length_ms: float, frame_shift_ms: float) -> tuple[int, int]:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    window_size = _kaldi_samples(sample_rate, frame_length_ms)
    window_shift = _kaldi_samples(sample_rate, frame_shift_ms)
    if window_size < 1 or window_shift < 1:
        raise ValueError(
            f"frame_length_ms={frame_length_ms} and frame_shift_ms={frame_shift_ms} at {sample_rate} Hz "
            f"give a window of {window_size} and a shift of {window_shift} samples; both must be >= 1"
        )
    return window_size, window_shift


def num_fbank_frames(
    num_samples: int,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    snip_edges: bool = True,
) -> int:
    """Number of fbank frames Kaldi produces for ``num_samples`` samples."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    window_size, window_shift = _frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
    if snip_edges:
        return 0 if num_samples < window_size else 1 + (num_samples - window_size) // window_shift
    return (num_samples + window_shift // 2) // window_shift


@lru_cache(maxsize=32)
def _window(window: str, window_size: int) -> torch.Tensor:
    """Kaldi's analysis windows (``FeatureWindowFunction``), computed in float64 then cast."""
    i = np.arange(window_size, dtype=np.float64)
    # Kaldi divides by (N - 1); a one-sample window is all ones for every type.
    a = 2.0 * math.pi / (window_size - 1) if window_size > 1 else 0.0
    if window == "povey":
        values = (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    elif window == "hamming":
        values = 0.54 - 0.46 * np.cos(a * i)
    elif window == "hanning":
        values = 0.5 - 0.5 * np.cos(a * i)
    elif window == "hann":
        # kaldi-native-fbank's "hann" is the periodic form (divides by N, not N - 1).
        values = 0.5 - 0.5 * np.cos(2.0 * math.pi * i / window_size)
    elif window == "sine":
        values = np.sin(0.5 * a * i)
    elif window == "blackman":
        values = 0.42 - 0.5 * np.cos(a * i) + 0.08 * np.cos(2.0 * a * i)
    else:
        values = np.ones(window_size)
    if window_size == 1:
        values = np.ones(1)
    return torch.from_numpy(values.astype(np.float32))


def _mel_scale(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


@lru_cache(maxsize=16)
def _mel_matrix(
    sample_rate: float, n_fft: int, num_mel_bins: int, low_freq: float, high_freq: float
) -> torch.Tensor:
    """Kaldi's triangular mel filters as a dense ``(n_fft // 2 + 1, num_mel_bins)`` matrix.

    Kaldi leaves the Nyquist bin out of every filter, so its row is zero.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0.0 else nyquist + high_freq
    if not (0.0 <= low_freq < nyquist and low_freq < high <= nyquist):
        raise ValueError(
            f"mel band [{low_freq}, {high_freq}] Hz is invalid for sample_rate {sample_rate} "
            f"(need 0 <= low_freq < high <= {nyquist}; high_freq <= 0 counts back from Nyquist)"
        )
    mel_low, mel_high = _mel_scale(low_freq), _mel_scale(high)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    left = mel_low + delta * np.arange(num_mel_bins)[None, :]
    center, right = left + delta, left + 2.0 * delta
    mel = _mel_scale(sample_rate / n_fft * np.arange(n_fft // 2))[:, None]
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    weights = np.where(mel <= center, rising, falling)
    weights = np.where((mel > left) & (mel < right), weights, 0.0)
    matrix = np.zeros((n_fft // 2 + 1, num_mel_bins), dtype=np.float32)
    matrix[: n_fft // 2] = weights
    return torch.from_numpy(matrix)


def _reflect_indices(indices: np.ndarray, num_samples: int) -> np.ndarray:
    """Fold out-of-range sample indices back into the signal the way Kaldi's ``ExtractWindow`` does."""
    indices = indices.copy()
    while True:
        low, high = indices < 0, indices >= num_samples
        if not (low.any() or high.any()):
            return indices
        indices[low] = -indices[low] - 1
        indices[high] = 2 * num_samples - 1 - indices[high]


def _frames(samples: torch.Tensor, window_size: int, window_shift: int, snip_edges: bool) -> torch.Tensor:
    """``(num_frames, window_size)`` view (snip_edges) or copy (reflected edges) of the frames."""
    num_samples = samples.shape[0]
    if snip_edges:
        return samples.unfold(0, window_size, window_shift)
    num_frames = (num_samples + window_shift // 2) // window_shift
    first = window_shift // 2 - window_size // 2
    span = np.arange(first, first + (num_frames - 1) * window_shift + window_size)
    padded = samples[torch.from_numpy(_reflect_indices(span, num_samples)).to(samples.device)]
    return padded.unfold(0, window_size, window_shift)


def kaldi_fbank(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window: str = "povey",
    dither: float = 0.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    snip_edges: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    energy_floor: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kaldi-compatible log-mel filter bank of a mono waveform, ``(num_frames, num_mel_bins)`` float32.

    Same processing as ``compute-fbank-feats`` with ``use_energy=false``, ``use_power=true``,
    ``use_log_fbank=true`` and ``round_to_power_of_two=true``. The waveform is used at the scale
    given (Kaldi tools expect int16-range samples; 3D-Speaker feeds [-1, 1]). ``energy_floor``
    only affects the energy coefficient, which this fbank does not output; it is accepted for
    signature parity with Kaldi. Returns an empty ``(0, num_mel_bins)`` tensor when the waveform
    is shorter than one frame.
    """
    del energy_floor
    if window not in WINDOW_TYPES:
        raise ValueError(f"unknown window {window!r}; expected one of {', '.join(WINDOW_TYPES)}")
    if num_mel_bins < 1:
        raise ValueError(f"num_mel_bins must be >= 1, got {num_mel_bins}")
    samples = _as_waveform(waveform)
    window_size, window_shift = _frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
    n_fft = 1 << (window_size - 1).bit_length()
    mel_matrix = _mel_matrix(float(sample_rate), n_fft, int(num_mel_bins), float(low_freq), float(high_freq))

    num_frames = num_fbank_frames(samples.shape[0], sample_rate, frame_length_ms, frame_shift_ms, snip_edges)
    if num_frames == 0:
        return torch.zeros((0, num_mel_bins), dtype=torch.float32, device=samples.device)
    frames = _frames(samples, window_size, window_shift, snip_edges)[:num_frames]
    if dither != 0.0:
        noise = torch.randn(frames.shape, generator=generator, dtype=torch.float32, device="cpu")
        frames = frames + dither * noise.to(frames.device)

    # One zero-padded FFT buffer filled in place: fresh full-size temporaries cost more than the math.
    # float64 because float32 rounding in the FFT is relative to the whole frame's energy, and
    # costs bins 60-80 dB below it (pre-emphasised low bins, gaps between formants) 1e-3 in log.
    buffer = frames.new_empty((num_frames, n_fft), dtype=torch.float64)
    buffer[:, window_size:] = 0.0
    body = buffer[:, :window_size]
    if preemphasis != 0.0:
        # Kaldi pre-emphasises the first sample against itself.
        body[:, 1:] = frames[:, 1:]
        body[:, 1:].sub_(frames[:, :-1], alpha=preemphasis)
        body[:, 0] = frames[:, 0]
        body[:, 0].mul_(1.0 - preemphasis)
    else:
        body.copy_(frames)
    if remove_dc_offset:
        # Pre-emphasis is linear, so removing the mean first equals removing (1 - c) * mean after.
        body.sub_(frames.mean(dim=1, keepdim=True, dtype=torch.float64), alpha=1.0 - preemphasis)
    body.mul_(_window(window, window_size).to(body.device))

    spectrum = torch.view_as_real(torch.fft.rfft(buffer, dim=1))
    power = torch.mul(spectrum[..., 0], spectrum[..., 0])
    power.addcmul_(spectrum[..., 1], spectrum[..., 1])
    # A sum of non-negative terms loses nothing notable in float32.
    mel_energies = power.to(torch.float32) @ mel_matrix.to(power.device)
    return mel_energies.clamp_min_(_FLOAT32_EPS).log_()


def num_lfr_frames(num_frames: int, lfr_n: int) -> int:
    """Frames after low-frame-rate stacking with stride ``lfr_n`` (funasr: ``ceil(T / lfr_n)``)."""
    if num_frames < 0 or lfr_n < 1:
        raise ValueError(f"need num_frames >= 0 and lfr_n >= 1, got {num_frames} and {lfr_n}")
    return -(-num_frames // lfr_n)


@lru_cache(maxsize=64)
def _lfr_indices(num_frames: int, lfr_m: int, lfr_n: int) -> torch.Tensor:
    starts = torch.arange(num_lfr_frames(num_frames, lfr_n)) * lfr_n - (lfr_m - 1) // 2
    # Clamping repeats the first frame on the left and the last frame on the right, which is
    # what funasr's padding amounts to.
    return (starts[:, None] + torch.arange(lfr_m)[None, :]).clamp_(0, num_frames - 1)


def apply_lfr(features: torch.Tensor, lfr_m: int, lfr_n: int) -> torch.Tensor:
    """Low-frame-rate stacking: each output frame concatenates ``lfr_m`` frames, every ``lfr_n``.

    ``(T, D) -> (ceil(T / lfr_n), D * lfr_m)``. Frame ``i`` stacks input frames
    ``i * lfr_n - (lfr_m - 1) // 2 + j`` for ``j < lfr_m``, with indices before the start taken as
    the first frame and past the end as the last frame (funasr's ``apply_lfr``).
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (frames, dim), got shape {tuple(features.shape)}")
    if lfr_m < 1 or lfr_n < 1:
        raise ValueError(f"lfr_m and lfr_n must be >= 1, got {lfr_m} and {lfr_n}")
    num_frames, dim = features.shape
    if num_frames == 0:
        return features.new_zeros((0, dim * lfr_m))
    indices = _lfr_indices(num_frames, lfr_m, lfr_n).to(features.device)
    return features[indices].reshape(indices.shape[0], dim * lfr_m)


def _bracketed_values(tokens: list[str], start: int, tag: str) -> list[float]:
    """The numbers between the first ``[`` and ``]`` after ``tokens[start]``."""
    try:
        open_at = tokens.index("[", start)
        close_at = tokens.index("]", open_at)
        return [float(token) for token in tokens[open_at + 1 : close_at]]
    except ValueError as error:
        raise ValueError(f"cmvn {tag} has no well-formed [ ... ] list of numbers: {error}") from None


def parse_kaldi_cmvn(text: str) -> tuple[list[float], list[float]]:
    """``(shift, scale)`` from the text of a Kaldi nnet ``am.mvn`` (``<AddShift>``/``<Rescale>``).

    Features are normalised as ``(x + shift) * scale``.
    """
    tokens = text.split()
    values = {}
    for tag in ("<AddShift>", "<Rescale>"):
        if tag not in tokens:
            raise ValueError(f"cmvn text has no {tag} component; expected a Kaldi nnet am.mvn file")
        values[tag] = _bracketed_values(tokens, tokens.index(tag), tag)
    shift, scale = values["<AddShift>"], values["<Rescale>"]
    if not shift or len(shift) != len(scale):
        raise ValueError(
            f"cmvn <AddShift> has {len(shift)} values and <Rescale> {len(scale)}; need equal, > 0"
        )
    if not all(math.isfinite(v) for v in shift + scale):
        raise ValueError("cmvn <AddShift>/<Rescale> contain NaN or infinite values")
    return shift, scale


def load_kaldi_cmvn(path: str) -> tuple[list[float], list[float]]:
    """``(shift, scale)`` read from a Kaldi nnet ``am.mvn`` file at ``path``."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return parse_kaldi_cmvn(text)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def apply_cmvn(features: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(features + shift) * scale`` over the last dimension, as Kaldi's AddShift + Rescale."""
    shift = torch.as_tensor(shift, dtype=features.dtype, device=features.device)
    scale = torch.as_tensor(scale, dtype=features.dtype, device=features.device)
    if shift.shape != (features.shape[-1],) or scale.shape != (features.shape[-1],):
        raise ValueError(
            f"cmvn shift {tuple(shift.shape)} and scale {tuple(scale.shape)} must both be "
            f"({features.shape[-1]},) to match the features"
        )
    return (features + shift) * scale


def sensevoice_features(
    waveform: np.ndarray | torch.Tensor,
    cmvn_shift: torch.Tensor | list[float],
    cmvn_scale: torch.Tensor | list[float],
    lfr_m: int = 7,
    lfr_n: int = 6,
    num_mel_bins: int = 80,
    sample_rate: int = 16000,
) -> torch.Tensor:
    """SenseVoice encoder input for a [-1, 1] waveform: ``(ceil(T / lfr_n), num_mel_bins * lfr_m)``.

    int16 scaling, Hamming-window fbank (dither 0), LFR stacking, then CMVN, as funasr's
    ``WavFrontend`` at inference.
    """
    samples = _as_waveform(waveform)
    if samples.shape[0] == 0:
        return torch.zeros((0, num_mel_bins * lfr_m), dtype=torch.float32, device=samples.device)
    # funasr shortens the frame to the whole clip when the clip is under 25 ms, giving one frame.
    frame_length_ms = min(25.0, samples.shape[0] / sample_rate * 1000.0)
    fbank = kaldi_fbank(
        samples * INT16_SCALE,
        sample_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        frame_length_ms=frame_length_ms,
        window="hamming",
    )
    return apply_cmvn(apply_lfr(fbank, lfr_m, lfr_n), cmvn_shift, cmvn_scale)


def num_sensevoice_frames(num_samples: int, sample_rate: int = 16000, lfr_n: int = 6) -> int:
    """Rows ``sensevoice_features`` returns for ``num_samples`` samples.

    Unlike ``num_lfr_frames(num_fbank_frames(n), lfr_n)`` this counts the one frame funasr makes
    from a clip shorter than 25 ms.
    """
    num_frames = num_fbank_frames(num_samples, sample_rate)
    if num_frames == 0 and num_samples > 0:
        num_frames = 1
    return num_lfr_frames(num_frames, lfr_n)


def speaker_features(
    waveform: np.ndarray | torch.Tensor, sample_rate: int = 16000, num_mel_bins: int = 80
) -> torch.Tensor:
    """3D-Speaker embedding-extractor input: Povey-window fbank of the [-1, 1] waveform minus its time mean."""
    fbank = kaldi_fbank(waveform, sample_rate=sample_rate, num_mel_bins=num_mel_bins)
    return fbank - fbank.mean(dim=0, keepdim=True)


# Resampling: a Kaiser-windowed sinc low-pass evaluated on the polyphase grid of orig/new.
_ZERO_CROSSINGS = 24
_ROLLOFF = 0.94
_KAISER_BETA = 8.0
# Above this many matrix entries the polyphase matmul is replaced by a gather.
_MAX_POLYPHASE_MATRIX = 1 << 22


@lru_cache(maxsize=16)
def _polyphase_filters(orig: int, new: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-phase taps ``(new, 2K+1)``, per-phase input offsets ``(new,)`` and the half width ``K``.

    Output ``q * new + j`` sits at input position ``q * orig + j * orig / new``; its taps cover
    input samples ``q * orig + offset[j] + k`` for ``k`` in ``[-K, K]``.
    """
    cutoff = 0.5 * _ROLLOFF * min(1.0, new / orig)  # cycles per input sample
    half_width = _ZERO_CROSSINGS / (2.0 * cutoff)  # in input samples
    k_max = int(math.ceil(half_width))
    phases = np.arange(new)
    offsets = (phases * orig) // new
    fractions = (phases * orig - offsets * new) / new
    tau = np.arange(-k_max, k_max + 1)[None, :] - fractions[:, None]
    inside = np.abs(tau) <= half_width
    ratio = np.clip(tau / half_width, -1.0, 1.0)
    kaiser = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    taps = np.where(inside, 2.0 * cutoff * np.sinc(2.0 * cutoff * tau) * kaiser, 0.0)
    return torch.from_numpy(taps.astype(np.float32)), torch.from_numpy(offsets), k_max


def _polyphase_group(orig: int, width: int) -> int:
    """Phase periods per matmul row: enough that a row's input span is not mostly filter overlap."""
    return max(1, -(-(width - 1) // orig))


@lru_cache(maxsize=16)
def _polyphase_matrix(orig: int, new: int) -> torch.Tensor:
    """Banded ``(group * orig + 2K, group * new)`` matrix mapping one row of input to its outputs."""
    taps, offsets, _ = _polyphase_filters(orig, new)
    width = taps.shape[1]
    group = _polyphase_group(orig, width)
    matrix = torch.zeros(group * orig + width - 1, group * new)
    period = torch.arange(group)[:, None, None]
    rows = period * orig + offsets[None, :, None] + torch.arange(width)[None, None, :]
    columns = (period * new + torch.arange(new)[None, :, None]).expand_as(rows)
    matrix[rows, columns] = taps.expand_as(rows)
    return matrix


def _resample_gather(
    padded: torch.Tensor, taps: torch.Tensor, offsets: torch.Tensor, orig: int, length: int
) -> torch.Tensor:
    """Output by output in chunks, for rate pairs whose phase matrix would be too large."""
    new, width = taps.shape
    out = torch.empty(length)
    chunk = max(1, (1 << 22) // width)
    span = torch.arange(width)
    for begin in range(0, length, chunk):
        index = torch.arange(begin, min(begin + chunk, length))
        phase = index % new
        starts = (index // new) * orig + offsets[phase]
        out[begin : begin + index.shape[0]] = (padded[starts[:, None] + span] * taps[phase]).sum(dim=1)
    return out


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of a mono waveform, returned as 1-D float32 of ``ceil(n * target / orig)``.

    A Kaiser-windowed sinc low-pass (24 zero crossings, cut-off at 94% of the lower Nyquist
    frequency, about 80 dB stop-band) evaluated on the exact polyphase grid.
    """
    if int(orig_sr) != orig_sr or int(target_sr) != target_sr or orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} and {target_sr}")
    samples = _as_waveform(waveform).cpu()
    if orig_sr == target_sr:
        return samples.numpy().copy()
    divisor = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // divisor, int(target_sr) // divisor
    length = -(-samples.shape[0] * new // orig)
    if length == 0:
        return np.zeros(0, dtype=np.float32)
    taps, offsets, k_max = _polyphase_filters(orig, new)
    width = taps.shape[1]
    group = _polyphase_group(orig, width)
    row_length, row_outputs = group * orig + width - 1, group * new
    num_rows = -(-length // row_outputs)
    # K zeros on the left put tap k=-K of output 0 at index 0; zeros on the right cover the reach
    # of the last row.
    padded = torch.zeros(max((num_rows - 1) * group * orig + row_length, k_max + samples.shape[0]))
    padded[k_max : k_max + samples.shape[0]] = samples
    if row_length * row_outputs <= _MAX_POLYPHASE_MATRIX:
        rows = padded.as_strided((num_rows, row_length), (group * orig, 1))
        out = (rows @ _polyphase_matrix(orig, new)).reshape(-1)[:length]
    else:
        out = _resample_gather(padded, taps, offsets, orig, length)
    return out.numpy()
