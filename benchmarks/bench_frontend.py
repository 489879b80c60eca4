"""Real-time factor of the audio front ends (seconds of audio per second of compute).

    python benchmarks/bench_frontend.py [--threads 2] [--repeats 7]

Each figure is one call on one clip; the best of ``--repeats`` runs is reported (the least
disturbed by other processes), with the median beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from speakerlm_hf.audio_frontend import resample, sensevoice_features, speaker_features


def seconds_per_call(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best, median) wall-clock seconds of ``function()`` after one warm-up call."""
    function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings), statistics.median(timings)


def report(name: str, audio_seconds: float, timing: tuple[float, float]) -> None:
    best, median = timing
    print(
        f"{name:34s} {audio_seconds:5.0f} s audio  {best * 1e3:8.2f} ms  "
        f"{audio_seconds / best:8.0f}x real time  (median {audio_seconds / median:6.0f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    rng = np.random.default_rng(0)
    shift = rng.normal(-8.0, 3.0, 560).tolist()
    scale = rng.uniform(0.1, 0.6, 560).tolist()
    for seconds in (10, 60):
        waveform = (0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32)
        report(
            "sensevoice_features (16 kHz)",
            seconds,
            seconds_per_call(lambda w=waveform: sensevoice_features(w, shift, scale), args.repeats),
        )
        report(
            "speaker_features (16 kHz)",
            seconds,
            seconds_per_call(lambda w=waveform: speaker_features(w), args.repeats),
        )
    for orig_sr in (44100, 48000, 8000):
        seconds = 60
        waveform = (0.1 * rng.standard_normal(orig_sr * seconds)).astype(np.float32)
        report(
            f"resample {orig_sr / 1000:g} kHz -> 16 kHz",
            seconds,
            seconds_per_call(lambda w=waveform, sr=orig_sr: resample(w, sr, 16000), args.repeats),
        )


if __name__ == "__main__":
    main()
