"""Render text in a synthetic speaker's voice: espeak-ng | sox, then trim and level in numpy.

espeak-ng writes 22.05 kHz 16-bit WAV to a pipe; sox applies the speaker's timbre chain and
resamples to 16 kHz float32 on another pipe (no temporary files). The result is trimmed to the
first and last frame within `TRIM_DB` of the loudest frame (plus `TRIM_PAD_S`), so utterance
boundaries are tight, scaled to the speaker's level, and quantised to 16-bit values so that what
is stored as 16-bit FLAC is exactly what was measured. Everything is deterministic.
"""

from __future__ import annotations

import subprocess

import numpy as np

from .voices import Speaker, require_tool

SAMPLE_RATE = 16_000
TRIM_DB = -50.0
TRIM_FRAME_S = 0.005
TRIM_PAD_S = 0.01
PEAK_LIMIT = 0.98


def _run_pipeline(spoken: str, espeak_args: list[str], sox_effects: list[str]) -> np.ndarray:
    espeak = subprocess.Popen(
        [require_tool("espeak-ng"), *espeak_args, "--stdout"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sox = subprocess.Popen(
        [
            require_tool("sox"),
            "-D",
            "-V1",
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-e",
            "floating-point",
            "-b",
            "32",
            "-c",
            "1",
            "-",
            *sox_effects,
            "rate",
            "-h",
            str(SAMPLE_RATE),
        ],
        stdin=espeak.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert espeak.stdout is not None and espeak.stdin is not None
    espeak.stdout.close()  # sox owns the read end now, so espeak sees a closed pipe if sox dies
    espeak.stdin.write(spoken.encode("utf-8"))
    espeak.stdin.close()
    raw, sox_err = sox.communicate()
    espeak_err = espeak.stderr.read() if espeak.stderr else b""
    espeak.wait()
    if espeak.returncode != 0 or sox.returncode != 0:
        raise RuntimeError(
            f"synthesis of {spoken!r} with espeak-ng {' '.join(espeak_args)} failed: "
            f"{espeak_err.decode(errors='replace')} {sox_err.decode(errors='replace')}".strip()
        )
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def trim_silence(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    threshold_db: float = TRIM_DB,
    pad_s: float = TRIM_PAD_S,
) -> np.ndarray:
    """Cut leading and trailing frames quieter than `threshold_db` below the loudest frame."""
    frame = max(1, int(round(TRIM_FRAME_S * sample_rate)))
    num_frames = len(audio) // frame
    if num_frames == 0:
        return audio
    energy = (audio[: num_frames * frame].reshape(num_frames, frame).astype(np.float64) ** 2).mean(axis=1)
    if energy.max() <= 0:
        return audio[:0]
    active = np.flatnonzero(energy >= energy.max() * 10 ** (threshold_db / 10))
    pad = int(round(pad_s * sample_rate))
    start = max(0, active[0] * frame - pad)
    end = min(len(audio), (active[-1] + 1) * frame + pad)
    return audio[start:end]


def set_level(audio: np.ndarray, level_db: float) -> np.ndarray:
    """Scale so the RMS of the louder half of 20 ms frames is `level_db` dBFS; cap the peak."""
    frame = int(0.02 * SAMPLE_RATE)
    num_frames = max(1, len(audio) // frame)
    energy = np.sort(
        (np.resize(audio, num_frames * frame).reshape(num_frames, frame).astype(np.float64) ** 2).mean(axis=1)
    )
    rms = np.sqrt(energy[num_frames // 2 :].mean())
    if rms <= 0:
        return audio
    gain = 10 ** (level_db / 20) / rms
    peak = float(np.abs(audio).max()) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return (audio * gain).astype(np.float32)


def quantize_pcm16(audio: np.ndarray) -> np.ndarray:
    """Round to the 16-bit grid (values k / 32768) so FLAC storage is lossless."""
    return (np.clip(np.round(audio * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def synthesize(spoken: str, speaker: Speaker, pitch_offset: int = 0, rate_factor: float = 1.0) -> np.ndarray:
    """16 kHz mono float32 audio of `spoken` in `speaker`'s voice, trimmed and levelled.

    `spoken` is the synthesiser input (e.g. `Sentence.spoken`); `pitch_offset` (espeak pitch
    units) and `rate_factor` vary the prosody of one utterance around the speaker's own.
    """
    if not spoken.strip():
        raise ValueError("synthesize needs non-empty text")
    audio = _run_pipeline(spoken, speaker.espeak_args(pitch_offset, rate_factor), speaker.sox_effects())
    audio = trim_silence(audio)
    if len(audio) == 0:
        raise RuntimeError(f"espeak-ng produced silence for {spoken!r} with speaker {speaker.id}")
    return quantize_pcm16(set_level(audio, speaker.level_db))


def utterance_jitter(rng: np.random.Generator) -> tuple[int, float]:
    """Per-utterance prosody variation around the speaker's own: (pitch offset, rate factor)."""
    return int(rng.integers(-4, 5)), round(float(rng.uniform(0.94, 1.06)), 3)
