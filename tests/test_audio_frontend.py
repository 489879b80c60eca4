"""The torch/numpy front ends against kaldi-native-fbank and funasr's WavFrontend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speakerlm_hf.audio_frontend import (
    apply_cmvn,
    apply_lfr,
    kaldi_fbank,
    load_kaldi_cmvn,
    num_fbank_frames,
    num_lfr_frames,
    num_sensevoice_frames,
    parse_kaldi_cmvn,
    resample,
    sensevoice_features,
    speaker_features,
)

knf = pytest.importorskip("kaldi_native_fbank")


def speech_like(num_samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """Voiced harmonics under formant peaks, a gliding pitch, a syllable envelope, noise and a silent gap."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    f0 = rng.uniform(100, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = rng.uniform([400, 1100, 2300], [800, 1800, 3200])
    signal = np.zeros(num_samples)
    for k in range(1, 40):
        freq = k * f0
        gain = sum(np.exp(-(((freq - f) / 150.0) ** 2)) for f in formants) + 0.02
        signal += np.where(freq < 0.45 * sample_rate, gain, 0.0) * np.sin(k * phase) / k
    envelope = np.sin(np.pi * rng.uniform(3, 5) * t + rng.uniform(0, np.pi)) ** 2
    signal = signal * envelope + 0.02 * rng.standard_normal(num_samples)
    if num_samples > sample_rate:
        gap = slice(num_samples // 2, num_samples // 2 + sample_rate // 4)
        signal[gap] = 0.0
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


def knf_fbank(waveform: np.ndarray, sample_rate: int, window: str, snip_edges: bool = True) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.snip_edges = snip_edges
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(sample_rate, waveform)
    fbank.input_finished()
    return np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)], dtype=np.float32)


def write_am_mvn(path, shift: np.ndarray, scale: np.ndarray) -> None:
    def numbers(values: np.ndarray) -> str:
        return " ".join(f"{v:.6f}" for v in values)

    dim = len(shift)
    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {numbers(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {numbers(scale)} ]\n</Nnet>\n"
    )


# Measured worst case over these cases: 5.3e-4, in bins 70-90 dB below the frame's peak, where
# kaldi-native-fbank's float32 FFT is that far from the exact value (ours is within 1e-6 of it, below).
@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("window", ["povey", "hamming", "hanning", "hann", "rectangular", "sine", "blackman"])
@pytest.mark.parametrize("snip_edges", [True, False])
def test_kaldi_fbank_matches_kaldi_native_fbank(sample_rate, window, snip_edges):
    # 3D-Speaker feeds [-1, 1] audio to the Povey fbank; SenseVoice feeds int16-range audio.
    gain = np.float32(1.0 if window == "povey" else 32768.0)
    waveform = speech_like(int(1.37 * sample_rate), sample_rate, seed=sample_rate) * gain
    expected = knf_fbank(waveform, sample_rate, window, snip_edges)
    actual = kaldi_fbank(waveform, sample_rate=sample_rate, window=window, snip_edges=snip_edges)
    assert actual.dtype == torch.float32
    assert actual.shape == expected.shape
    assert np.abs(actual.numpy() - expected).max() <= 1e-3


def float64_kaldi_fbank(waveform: np.ndarray, sample_rate: int, window: str) -> np.ndarray:
    """Kaldi's fbank written out step by step in float64 (snip_edges, 25/10 ms, 80 bins, 20 Hz..Nyquist)."""
    size, shift = int(0.025 * sample_rate), int(0.010 * sample_rate)
    n_fft = 1 << (size - 1).bit_length()
    i = np.arange(size)
    a = 2 * np.pi / (size - 1)
    windows = {
        "povey": (0.5 - 0.5 * np.cos(a * i)) ** 0.85,
        "hamming": 0.54 - 0.46 * np.cos(a * i),
        "blackman": 0.42 - 0.5 * np.cos(a * i) + 0.08 * np.cos(2 * a * i),
    }

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    mel_low, mel_high = mel(20.0), mel(sample_rate / 2)
    delta = (mel_high - mel_low) / 81
    banks = np.zeros((n_fft // 2, 80))
    for b in range(80):
        left, center, right = (mel_low + (b + j) * delta for j in range(3))
        for k in range(n_fft // 2):
            m = mel(sample_rate / n_fft * k)
            if left < m < right:
                banks[k, b] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    rows = []
    for start in range(0, len(waveform) - size + 1, shift):
        frame = waveform[start : start + size].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.concatenate([[frame[0] * 0.03], frame[1:] - 0.97 * frame[:-1]])
        power = np.abs(np.fft.rfft(frame * windows[window].astype(np.float32), n_fft)[: n_fft // 2]) ** 2
        rows.append(np.log(np.maximum(power @ banks, np.finfo(np.float32).eps)))
    return np.array(rows)


@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("window", ["povey", "hamming", "blackman"])
def test_kaldi_fbank_matches_exact_float64_computation(sample_rate, window):
    waveform = speech_like(sample_rate, sample_rate, seed=11) * np.float32(32768)
    expected = float64_kaldi_fbank(waveform, sample_rate, window)
    actual = kaldi_fbank(waveform, sample_rate=sample_rate, window=window).numpy()
    assert np.abs(actual - expected).max() < 1e-5  # measured about 1e-6


def test_kaldi_fbank_accepts_tensors_and_short_input():
    waveform = speech_like(4000, 16000, seed=1)
    from_numpy = kaldi_fbank(waveform)
    from_tensor = kaldi_fbank(torch.from_numpy(waveform).double())
    assert torch.equal(from_numpy, from_tensor)
    assert kaldi_fbank(waveform[:399]).shape == (0, 80)
    assert kaldi_fbank(waveform[:400]).shape == (1, 80)


def test_dither_is_reproducible_with_a_generator():
    waveform = speech_like(8000, 16000, seed=2) * np.float32(32768)
    first = kaldi_fbank(waveform, dither=1.0, generator=torch.Generator().manual_seed(0))
    second = kaldi_fbank(waveform, dither=1.0, generator=torch.Generator().manual_seed(0))
    clean = kaldi_fbank(waveform)
    assert torch.equal(first, second)
    loud = clean > 5.0
    assert 0 < (first - clean)[loud].abs().max() < 0.05


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_num_fbank_frames_counts_actual_frames(snip_edges, sample_rate):
    waveform = np.random.default_rng(3).standard_normal(3 * sample_rate).astype(np.float32)
    lengths = list(range(0, 700, 7)) + [1599, 1600, 1601, 16000, 16159, 16160, 16161, 3 * sample_rate]
    for length in lengths:
        if not snip_edges and length == 0:
            continue
        frames = kaldi_fbank(waveform[:length], sample_rate=sample_rate, snip_edges=snip_edges).shape[0]
        assert num_fbank_frames(length, sample_rate, snip_edges=snip_edges) == frames, length


def test_num_lfr_frames_counts_actual_frames():
    for num_frames in range(0, 200):
        stacked = apply_lfr(torch.zeros(num_frames, 2), lfr_m=7, lfr_n=6)
        assert stacked.shape == (num_lfr_frames(num_frames, 6), 14)


@pytest.mark.parametrize("lfr_m,lfr_n", [(7, 6), (5, 3), (4, 2), (3, 5), (1, 2)])
def test_apply_lfr_matches_funasr(lfr_m, lfr_n):
    wav_frontend = pytest.importorskip("funasr.frontends.wav_frontend")
    generator = torch.Generator().manual_seed(lfr_m * 10 + lfr_n)
    for num_frames in range(1, 50):
        features = torch.randn(num_frames, 3, generator=generator)
        expected = wav_frontend.apply_lfr(features.clone(), lfr_m, lfr_n)
        assert torch.equal(apply_lfr(features, lfr_m, lfr_n), expected), num_frames


def test_cmvn_parsing_matches_funasr(tmp_path):
    wav_frontend = pytest.importorskip("funasr.frontends.wav_frontend")
    rng = np.random.default_rng(4)
    path = tmp_path / "am.mvn"
    write_am_mvn(path, rng.normal(-8, 3, 560), rng.uniform(0.1, 0.6, 560))
    shift, scale = load_kaldi_cmvn(str(path))
    expected = wav_frontend.load_cmvn(str(path))
    assert torch.equal(torch.tensor([shift, scale], dtype=torch.float32), expected)
    features = torch.randn(9, 560)
    assert torch.allclose(
        apply_cmvn(features, torch.tensor(shift), torch.tensor(scale)),
        wav_frontend.apply_cmvn(features.clone(), expected),
    )


# Measured worst case: 6.6e-6 of the feature scale (max |feature|; 6.9e-5 absolute), which is
# kaldi-native-fbank's float32 rounding inside funasr.
def test_sensevoice_features_match_funasr_wav_frontend(tmp_path):
    wav_frontend = pytest.importorskip("funasr.frontends.wav_frontend")
    rng = np.random.default_rng(5)
    path = tmp_path / "am.mvn"
    write_am_mvn(path, rng.normal(-8, 3, 560), rng.uniform(0.1, 0.6, 560))
    frontend = wav_frontend.WavFrontend(
        cmvn_file=str(path),
        fs=16000,
        window="hamming",
        n_mels=80,
        frame_length=25,
        frame_shift=10,
        lfr_m=7,
        lfr_n=6,
        dither=0.0,
    )
    shift, scale = load_kaldi_cmvn(str(path))
    # Under 400 samples funasr shrinks the frame to the clip; 13-18 fbank frames cover every
    # residue of T mod 6 at the LFR right edge; the rest are ordinary clip lengths.
    lengths = [2, 250, 399, 400, 401, 559] + [400 + 160 * (t - 1) for t in range(13, 19)] + [16000, 48037]
    for seed, length in enumerate(lengths):
        waveform = speech_like(length, 16000, seed=seed)
        expected, expected_lengths = frontend(torch.from_numpy(waveform)[None], torch.tensor([length]))
        actual = sensevoice_features(waveform, shift, scale)
        assert actual.shape == expected[0].shape == (int(expected_lengths[0]), 560), length
        error = (actual - expected[0]).abs().max() / expected[0].abs().max()
        assert error <= 1e-4, (length, float(error))
    from_tensors = sensevoice_features(torch.from_numpy(waveform), torch.tensor(shift), torch.tensor(scale))
    assert torch.equal(from_tensors, actual)


def test_num_sensevoice_frames_counts_actual_rows():
    waveform = speech_like(16000, 16000, seed=9)
    for length in [0, 1, 2, 100, 399, 400, 401, 1360, 1361, 2320, 2479, 2480, 16000]:
        rows = sensevoice_features(waveform[:length], [0.0] * 560, [1.0] * 560).shape[0]
        assert num_sensevoice_frames(length) == rows, length


def test_sensevoice_features_of_empty_audio_are_empty():
    assert sensevoice_features(np.zeros(0, np.float32), [0.0] * 560, [1.0] * 560).shape == (0, 560)


def test_speaker_features_are_mean_normalised_kaldi_fbank():
    waveform = speech_like(3 * 16000, 16000, seed=6)
    features = speaker_features(waveform)
    reference = knf_fbank(waveform, 16000, "povey")
    reference -= reference.mean(axis=0, keepdims=True)
    assert features.shape == (298, 80)
    assert features.mean(dim=0).abs().max() < 1e-5
    assert np.abs(features.numpy() - reference).max() <= 1e-3


def sine(freq: float, sample_rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(sample_rate * seconds)) / sample_rate).astype(np.float32)


@pytest.mark.parametrize("orig_sr", [44100, 48000, 22050, 8000, 16001])
def test_resample_keeps_frequency_and_amplitude(orig_sr):
    out = resample(0.8 * sine(1000.0, orig_sr), orig_sr, 16000)
    assert out.dtype == np.float32
    assert out.shape == (-(-orig_sr * 16000 // orig_sr),)
    expected = 0.8 * np.sin(2 * np.pi * 1000.0 * np.arange(out.shape[0]) / 16000)
    inner = slice(800, -800)  # away from the zero padding at both ends
    assert np.abs(out - expected)[inner].max() < 1e-4  # measured <= 1.7e-5


@pytest.mark.parametrize("orig_sr,freq", [(48000, 12000.0), (44100, 9000.0), (48000, 8600.0)])
def test_resample_suppresses_aliasing(orig_sr, freq):
    # Each tone lies above the 8 kHz Nyquist frequency of the output and would fold back into it.
    out = resample(sine(freq, orig_sr), orig_sr, 16000)
    residual_db = 20 * np.log10(np.sqrt(2 * np.mean(out[800:-800] ** 2)))
    assert residual_db < -70  # measured -99, -86 and -84 dB


def test_resample_identity_and_empty():
    waveform = speech_like(1000, 16000, seed=7)
    np.testing.assert_array_equal(resample(waveform, 16000, 16000), waveform)
    assert resample(np.zeros(0, np.float32), 44100, 16000).shape == (0,)


def test_malformed_inputs_raise_value_errors():
    good = speech_like(1600, 16000, seed=8)
    with pytest.raises(ValueError, match="1-D"):
        kaldi_fbank(np.stack([good, good]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        kaldi_fbank(np.where(np.arange(1600) == 5, np.nan, good))
    with pytest.raises(ValueError, match="NaN or infinite"):
        speaker_features(np.where(np.arange(1600) == 5, np.inf, good))
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 10), np.float32), 44100, 16000)
    with pytest.raises(ValueError, match="unknown window 'kaiser'"):
        kaldi_fbank(good, window="kaiser")
    with pytest.raises(ValueError, match="positive integers"):
        resample(good, 0, 16000)
    with pytest.raises(ValueError, match="no <AddShift>"):
        parse_kaldi_cmvn("<Nnet>\n<Rescale> 2 2\n<LearnRateCoef> 0 [ 1 1 ]\n</Nnet>")
    with pytest.raises(ValueError, match="no <Rescale>"):
        parse_kaldi_cmvn("<Nnet>\n<AddShift> 2 2\n<LearnRateCoef> 0 [ 1 1 ]\n</Nnet>")
    with pytest.raises(ValueError, match="must both be"):
        apply_cmvn(torch.zeros(3, 4), torch.zeros(5), torch.ones(5))
