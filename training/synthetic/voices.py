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

espeak-ng ships about a hundred variants, so a model trained on them hears a hundred timbres.
`make_random_speakers` draws speakers whose variant is generated instead (`random_variant`: a
formant table, pitch range, voicing, breath, roughness, flutter, echo and synthesiser of its own,
within the ranges the stock variants span): as many distinct timbres as speakers. The variant's
text travels with the speaker (`Speaker.variant_spec`) and is installed into a private espeak-ng
data folder of its own (`espeak_path`: links to the system's data plus the one generated file), so
nothing is written to the system's espeak-ng data.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

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
    # The text of a generated variant file (`random_variant`); empty for espeak-ng's own variants.
    variant_spec: str = ""

    @property
    def combination(self) -> tuple[str, str]:
        return (self.voice, self.variant)

    def espeak_args(self, pitch_offset: int = 0, rate_factor: float = 1.0) -> list[str]:
        """espeak-ng options for this speaker; the offsets give per-utterance prosody jitter."""
        pitch = int(np.clip(self.pitch + pitch_offset, 0, 99))
        rate = int(round(self.rate * rate_factor))
        path = [f"--path={espeak_path(self.variant, self.variant_spec)}"] if self.variant_spec else []
        return [
            *path,
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


RANDOM_VARIANT_PREFIX = "rv"


def random_variant(rng: np.random.Generator) -> tuple[str, str]:
    """A new espeak-ng voice variant: (name, text of its variant file), drawn from `rng`.

    Male or female pitch range; one vocal-tract scale for the first five formants, each then
    moved on its own (up to -12/+30%, as far as the most extreme stock variants go), with random
    heights and widths: the formants are what tell espeak-ng's variants apart most. Sometimes
    lowered voicing, louder or softer consonants, roughness, flutter, breath noise, an echo, or
    the Klatt synthesiser. The name is a hash of the text, so equal variants share a name and
    different ones never do.
    """

    def draw(low: float, high: float) -> int:
        return int(round(rng.uniform(low, high)))

    female = bool(rng.random() < 0.5)
    base = draw(140, 210) if female else draw(65, 115)
    lines = [f"gender {'female' if female else 'male'}", f"pitch {base} {base + draw(40, 110)}"]
    scale = rng.uniform(1.0, 1.2) if female else rng.uniform(0.85, 1.05)
    for formant in range(9):
        if 1 <= formant <= 5:
            frequency = 100 * scale * rng.uniform(0.88, 1.3 if formant <= 3 else 1.15)
        else:
            frequency = 100 * rng.uniform(0.9, 1.15)
        height = rng.uniform(60, 160) if formant <= 3 else rng.uniform(20, 130)
        lines.append(f"formant {formant} {round(frequency)} {round(height)} {draw(60, 160)}")
    if rng.random() < 0.3:
        lines.append(f"voicing {draw(35, 100)}")
    if rng.random() < 0.4:
        lines.append(f"consonants {draw(50, 150)} {draw(20, 150)}")
    if rng.random() < 0.35:
        lines.append(f"roughness {draw(0, 5)}")
    if rng.random() < 0.35:
        lines.append(f"flutter {draw(0, 20)}")
    if rng.random() < 0.3:
        lines.append("breath " + " ".join(str(draw(0, 14)) for _ in range(8)))
    if rng.random() < 0.35:
        lines.append(f"echo {draw(10, 150)} {draw(5, 60)}")
    if rng.random() < 0.3:
        lines.append(f"klatt {int(rng.choice([1, 2, 3, 4, 5, 6]))}")
    body = "\n".join(lines) + "\n"
    name = RANDOM_VARIANT_PREFIX + hashlib.sha1(body.encode()).hexdigest()[:12]
    return name, f"language variant\nname {name}\n{body}"


def make_random_speakers(num_speakers: int, split: str, seed: int) -> list[Speaker]:
    """`num_speakers` speakers of `split` with generated variants (`random_variant`) over
    espeak-ng's English accent voices, deterministic for `seed`; prosody and timbre chain are
    drawn as for `make_speakers`. Ids look like "train-r3-0007" (split, seed, index)."""
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    voices = english_voices()
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 11])
    speakers = []
    for index in range(num_speakers):
        voice = voices[int(rng.integers(len(voices)))]
        variant, spec = random_variant(rng)
        speaker = _draw_speaker(rng, f"{split}-r{seed}-{index:04d}", split, voice, variant)
        speakers.append(dataclasses.replace(speaker, variant_spec=spec))
    return speakers


@functools.lru_cache(maxsize=1)
def espeak_data() -> Path:
    """The installed espeak-ng's data folder ("Data at:" of `espeak-ng --version`)."""
    match = re.search(r"Data at:\s*(\S.*)$", espeak_version())
    folder = Path(match.group(1).strip()) if match else None
    if folder is None or not folder.is_dir():
        raise RuntimeError(f"cannot find espeak-ng's data folder in {espeak_version()!r}")
    return folder


def _link(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target)
    except FileExistsError:  # another worker made it
        pass


def espeak_path(variant: str, spec: str) -> str:
    """A folder for espeak-ng's `--path` whose voices include the generated `variant` (file text
    `spec`): a private `espeak-ng-data` of links to the system's files and language voices, its
    variant folder holding this one variant. One folder per variant: espeak-ng lists every voice
    file of its data when it looks one up and stops at 350, so a shared folder of thousands of
    generated variants would silently fall back to another voice. Built in the temporary folder;
    safe for parallel workers (files are written whole, then renamed into place)."""
    if not re.fullmatch(rf"{RANDOM_VARIANT_PREFIX}[0-9a-f]{{12}}", variant):
        raise ValueError(
            f"generated variant names look like {RANDOM_VARIANT_PREFIX}<12 hex digits>, got {variant!r}"
        )
    system = espeak_data()
    user = os.getuid() if hasattr(os, "getuid") else 0
    digest = hashlib.sha1(f"{system}|{espeak_version()}".encode()).hexdigest()[:10]
    root = Path(tempfile.gettempdir()) / f"speakerlm-espeak-{user}-{digest}" / variant
    data = root / "espeak-ng-data"
    own = data / "voices" / "!v"
    file = own / variant
    if file.is_file() and file.read_text() == spec:
        return str(root)
    own.mkdir(parents=True, exist_ok=True)
    for entry in system.iterdir():
        if entry.name != "voices":
            _link(entry, data / entry.name)
    for entry in (system / "voices").iterdir():
        if entry.name != "!v":
            _link(entry, data / "voices" / entry.name)
    partial = own / f".{variant}.{os.getpid()}"
    partial.write_text(spec)
    os.replace(partial, file)
    return str(root)
