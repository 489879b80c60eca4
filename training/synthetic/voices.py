"""The espeak-ng English voice space and deterministic synthetic speakers.

A *voice combination* is (accent voice, variant), e.g. ("en-gb-scotland", "m3"). Both lists
are read from the installed espeak-ng and probed once: voices that fail to synthesise (MBROLA
voices without the mbrola binary) and combinations that sound exactly like an earlier one
(e.g. the variants "klatt" and "klatt6" equal "caleb") are dropped, as are the variants in
`EXCLUDED_VARIANTS`.

A *speaker* is a combination plus fixed prosody (pitch, rate, word gap), a fixed output level,
and a fixed sox "timbre" chain (speed factor, which shifts formants and pitch together like a
vocal-tract-length change, plus bass/treble tilt and one peaking EQ band). Test speakers use
combinations that no train speaker uses (`combination_split`): whole variants are held out and,
among the others, a hashed subset of combinations, so the test split measures unseen voices.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

import numpy as np

from .grammar import stable_hash

# Variants that are not a plausible meeting voice.
EXCLUDED_VARIANTS = {
    "whisper": "whispered (no voicing)",
    "whisperf": "whispered (no voicing)",
    "Demonic": "noise-like, extreme echo",
    "fast": "an espeak speed test, not a voice",
}
DEFAULT_VARIANT = "default"
# Fraction of variants whose every combination is test-only, and of the remaining combinations.
HELD_OUT_VARIANT_FRACTION = 0.1
HELD_OUT_COMBINATION_FRACTION = 0.06
_PROBE_TEXT = "the quick brown fox jumps over the lazy dog"
SPLIT_CODES = {"train": 0, "test": 1}

PITCH_RANGE = (20, 80)  # espeak-ng -p, 0..99
RATE_RANGE = (130, 190)  # espeak-ng -s, words per minute
WORD_GAP_RANGE = (0, 3)  # espeak-ng -g, units of 10 ms
LEVEL_DB_RANGE = (-28.0, -20.0)  # RMS of the voiced part, dBFS
SPEED_RANGE = (0.93, 1.07)  # sox speed factor
TILT_DB_RANGE = (-5.0, 5.0)  # sox bass / treble gain
EQ_FREQ_RANGE = (400.0, 3200.0)  # Hz, log-uniform
EQ_Q_RANGE = (0.7, 2.0)
EQ_GAIN_DB_RANGE = (-6.0, 6.0)


def require_tool(tool: str) -> str:
    """The path of an external program, or a clear error naming it."""
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed; the synthetic corpus needs espeak-ng and sox on PATH")
    return path


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """The installed espeak-ng version line (recorded in corpus manifests)."""
    out = subprocess.run([require_tool("espeak-ng"), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _voice_table(argument: str) -> list[tuple[str, str]]:
    """(language, file) rows of `espeak-ng --voices=<argument>`."""
    out = subprocess.run(
        [require_tool("espeak-ng"), f"--voices={argument}"], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines()[1:]:
        # Columns: Pty Language Age/Gender VoiceName File [Other languages]; a file name may
        # hold one space ("!v/Mr serious"), columns are separated by two or more spaces.
        fields = line.split(None, 4)
        if len(fields) == 5:
            rows.append((fields[1], re.split(r"\s{2,}|\s\(", fields[4].strip())[0]))
    return rows


def _probe(voice: str) -> str | None:
    """Hash of a fixed probe sentence in `voice`, or None when espeak-ng cannot speak it."""
    result = subprocess.run(
        [require_tool("espeak-ng"), "-v", voice, "--stdout", _PROBE_TEXT], capture_output=True
    )
    if result.returncode != 0 or len(result.stdout) < 1000:
        return None
    return hashlib.sha1(result.stdout).hexdigest()


@functools.lru_cache(maxsize=1)
def english_voices() -> tuple[str, ...]:
    """English accent voices that espeak-ng can speak here, without acoustic duplicates."""
    candidates = sorted(
        {
            language
            for language, file in _voice_table("en")
            if language.startswith("en") and not file.startswith("mb/")
        }
    )
    voices, seen = [], set()
    for voice in candidates:
        digest = _probe(voice)
        if digest is not None and digest not in seen:
            seen.add(digest)
            voices.append(voice)
    if not voices:
        raise RuntimeError("espeak-ng has no usable English voice")
    return tuple(voices)


@functools.lru_cache(maxsize=1)
def variants() -> tuple[str, ...]:
    """Voice variants ("m3", "f2", "klatt4", ...) usable here, `DEFAULT_VARIANT` first."""
    names = sorted({file.split("/", 1)[1] for _, file in _voice_table("variant") if file.startswith("!v/")})
    names = [n for n in names if " " not in n and n not in EXCLUDED_VARIANTS]
    kept, seen = [], set()
    for name in [DEFAULT_VARIANT, *names]:
        digest = _probe(voice_name("en-us", name))
        if digest is not None and digest not in seen:
            seen.add(digest)
            kept.append(name)
    return tuple(kept)


def voice_name(voice: str, variant: str) -> str:
    """The espeak-ng -v argument for a combination."""
    return voice if variant == DEFAULT_VARIANT else f"{voice}+{variant}"


def combination_split(voice: str, variant: str) -> str:
    """ "test" for held-out combinations, else "train"; fixed, independent of any seed."""
    if stable_hash("variant:" + variant) % 1000 < HELD_OUT_VARIANT_FRACTION * 1000:
        return "test"
    if stable_hash(f"combination:{voice}+{variant}") % 1000 < HELD_OUT_COMBINATION_FRACTION * 1000:
        return "test"
    return "train"


def voice_combinations(split: str | None = None) -> list[tuple[str, str]]:
    """All (voice, variant) combinations, or only those of `split` ("train"/"test")."""
    if split is not None and split not in SPLIT_CODES:
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    combos = [(v, w) for v in english_voices() for w in variants()]
    return [c for c in combos if split is None or combination_split(*c) == split]


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng voice combination plus fixed prosody and timbre."""

    id: str
    split: str
    voice: str
    variant: str
    pitch: int
    rate: int
    word_gap: int
    level_db: float
    speed: float
    bass_db: float
    treble_db: float
    eq_freq: float
    eq_q: float
    eq_gain_db: float

    @property
    def combination(self) -> tuple[str, str]:
        return (self.voice, self.variant)

    def espeak_args(self, pitch_offset: int = 0, rate_factor: float = 1.0) -> list[str]:
        """espeak-ng options for this speaker; the offsets give per-utterance prosody jitter."""
        pitch = int(np.clip(self.pitch + pitch_offset, 0, 99))
        rate = int(round(self.rate * rate_factor))
        return [
            "-v",
            voice_name(self.voice, self.variant),
            "-p",
            str(pitch),
            "-s",
            str(rate),
            "-g",
            str(self.word_gap),
        ]

    def sox_effects(self) -> list[str]:
        """The fixed sox timbre chain (before resampling to 16 kHz)."""
        return [
            "speed",
            f"{self.speed:.4f}",
            "bass",
            f"{self.bass_db:.2f}",
            "treble",
            f"{self.treble_db:.2f}",
            "equalizer",
            f"{self.eq_freq:.1f}",
            f"{self.eq_q:.3f}q",
            f"{self.eq_gain_db:.2f}",
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Speaker:
        return cls(**data)


def _draw_speaker(rng: np.random.Generator, speaker_id: str, split: str, voice: str, variant: str) -> Speaker:
    def uniform(bounds: tuple[float, float], decimals: int) -> float:
        return round(float(rng.uniform(*bounds)), decimals)

    return Speaker(
        id=speaker_id,
        split=split,
        voice=voice,
        variant=variant,
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
        word_gap=int(rng.integers(WORD_GAP_RANGE[0], WORD_GAP_RANGE[1] + 1)),
        level_db=uniform(LEVEL_DB_RANGE, 2),
        speed=uniform(SPEED_RANGE, 4),
        bass_db=uniform(TILT_DB_RANGE, 2),
        treble_db=uniform(TILT_DB_RANGE, 2),
        eq_freq=round(float(np.exp(rng.uniform(*np.log(EQ_FREQ_RANGE)))), 1),
        eq_q=uniform(EQ_Q_RANGE, 3),
        eq_gain_db=uniform(EQ_GAIN_DB_RANGE, 2),
    )


def make_speakers(num_speakers: int, split: str, seed: int) -> list[Speaker]:
    """`num_speakers` speakers of `split`, deterministic for `seed`.

    Combinations are dealt out in shuffled rounds, so every combination of the split is used
    once before any is used twice. Ids look like "train-s0-0007" (split, seed, index).
    """
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    combos = voice_combinations(split)
    if not combos:
        raise RuntimeError(f"no espeak-ng voice combination belongs to the {split} split")
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 7])
    speakers = []
    order: list[int] = []
    for index in range(num_speakers):
        if not order:
            order = list(rng.permutation(len(combos)))
        voice, variant = combos[order.pop()]
        speakers.append(_draw_speaker(rng, f"{split}-s{seed}-{index:04d}", split, voice, variant))
    return speakers
