"""Meeting corpora as distributed (AliMeeting, AISHELL-4, AISHELL-5, any TextGrid folder) -> sessions.

A session is one recording with its annotated utterances (speaker, start, end, raw text) and the
audio files that make its 16 kHz mono signal. Speaker labels are made unique within the corpus
(`Session.utterances[i].speaker`): AliMeeting's `SPKnnnn` ids already are (one person keeps
their id across meetings); corpora whose tier names are local to a meeting get the session id as
a prefix (`<session>-<tier>`).

Layouts read (`root` may be the corpus folder or the split's folder itself):

- AliMeeting (OpenSLR 119): `{Train,Eval,Test}_Ali_far/audio_dir/<session>_<array>.wav`
  (8-channel array; one channel is used, `channel=0` by default) with
  `{split}_Ali_far/textgrid_dir/<session>.TextGrid` (one tier per speaker, named `SPKnnnn`
  or `<session>_<gender>_SPKnnnn`); `{split}_Ali_near/audio_dir/<session>_<gender>_SPKnnnn.wav`
  (one headset each) with a TextGrid of the same stem. Near-field sessions are the sum of their
  headsets. Eval and Test may sit inside an `{split}_Ali/` folder.
- AISHELL-4 (OpenSLR 111): `<part>/wav/<session>.flac` (8-channel array) with
  `<part>/TextGrid/<session>.TextGrid`, parts `train_L`, `train_M`, `train_S`, `test`.
  Tier names are local to a meeting.
- AISHELL-5 (our reading of its README; the corpus is not distributed through OpenSLR with a
  documented file list): `<split>/<session>/DA0k.wav` + `DA0k.TextGrid` (headset and transcript
  of seat k), `DX0kC01.wav` (far-field microphone k, one file per microphone, `channel` picks
  k-1), `DX05C01`/`DX06C01` (loudspeaker references, ignored). Transcripts come from the `DA0k`
  TextGrids (tier name as speaker, else the seat); when a session has none, from a `DX0kC01`
  TextGrid. Near-field sessions are the sum of the `DA0k` headsets. Tier names are taken as
  local to the session.
- Any folder of `<session>.wav|flac` with `<session>.TextGrid` (in-house data), see
  `textgrid_folder_sessions`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLING_RATE, read_channel, read_mixdown
from .textgrid import TextGrid, read_textgrid

__all__ = [
    "ALIMEETING_MARKUP",
    "CORPORA",
    "Utterance",
    "Session",
    "strip_markup",
    "alimeeting_sessions",
    "aishell4_sessions",
    "aishell5_sessions",
    "textgrid_folder_sessions",
    "utterances_from_textgrid",
]

# Annotation tags of AliMeeting / AISHELL-4 transcripts (noise, silence, unclear speech), which
# the M2MeT baseline removes before scoring; everything else (punctuation included) is kept.
ALIMEETING_MARKUP = ("<sil>", "<%>", "<->", "<$>", "<#>", "<_>", "<space>")
AUDIO_SUFFIXES = (".wav", ".flac")
_SPEAKER_ID = re.compile(r"SPK\d+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Utterance:
    """One annotated interval of a session: times in seconds from the session's start."""

    speaker: str
    start: float
    end: float
    text: str


@dataclass
class Session:
    """A recording with its utterances; `load_audio()` gives its 16 kHz mono signal.

    `audio` holds one file (whose `channel` is read; None mixes all channels down) or several
    time-aligned files that are summed (close-talk headsets).
    """

    corpus: str
    id: str
    audio: tuple[Path, ...]
    utterances: list[Utterance]
    channel: int | None = 0
    markup: tuple[str, ...] = ALIMEETING_MARKUP
    duration: float | None = field(default=None, compare=False)

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})

    def load_audio(self, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
        if len(self.audio) == 1:
            return read_channel(self.audio[0], self.channel, sampling_rate)
        return read_mixdown(self.audio, self.channel, sampling_rate)


def strip_markup(text: str, markup: Sequence[str] = ALIMEETING_MARKUP) -> str:
    """`text` without the corpus's annotation tags, whitespace runs collapsed to one space."""
    for tag in markup:
        text = text.replace(tag, " ")
    return _WHITESPACE.sub(" ", text).strip()


def utterances_from_textgrid(
    grid: TextGrid, speaker: str | None = None, speaker_of_tier=None
) -> list[Utterance]:
    """The non-empty intervals of every interval tier, with `speaker` (or the tier's speaker) as label."""
    utterances = []
    for tier in grid.tiers:
        if tier.kind != "IntervalTier":
            continue
        label = speaker or (speaker_of_tier(tier.name) if speaker_of_tier else tier.name.strip())
        for interval in tier.intervals:
            if interval.text.strip() and interval.end > interval.start:
                utterances.append(Utterance(label, interval.start, interval.end, interval.text))
    return sorted(utterances, key=lambda u: (u.start, u.end, u.speaker))


def _alimeeting_speaker(name: str) -> str:
    """`SPK8004`, `R8001_M8004_F_SPK8004` or `F_SPK8004` -> `SPK8004` (the corpus-wide id)."""
    found = _SPEAKER_ID.findall(name)
    return found[-1].upper() if found else name.strip()


def _split_dir(root: Path, split: str, mic: str) -> Path:
    name = f"{split}_Ali_{mic}"
    for candidate in (root / name, root / f"{split}_Ali" / name, root):
        if (candidate / "audio_dir").is_dir() and (candidate / "textgrid_dir").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no AliMeeting {split} {mic}-field data under {str(root)!r}: expected "
        f"{name}/audio_dir and {name}/textgrid_dir (or {split}_Ali/{name}/...)"
    )


def _session_of_stem(stem: str) -> str:
    """`R8001_M8004_MS801` or `R8001_M8004_F_SPK8004` -> `R8001_M8004`."""
    return "_".join(stem.split("_")[:2])


def alimeeting_sessions(
    root: str | os.PathLike, split: str = "Train", mic: str = "far", channel: int | None = 0
) -> list[Session]:
    """AliMeeting sessions of one split (`Train`, `Eval`, `Test`) and microphone (`far`, `near`)."""
    if mic not in ("far", "near"):
        raise ValueError(f"AliMeeting mic {mic!r} is not 'far' or 'near'")
    folder = _split_dir(Path(root), split, mic)
    wavs = sorted((folder / "audio_dir").glob("*.wav"))
    grids = sorted((folder / "textgrid_dir").glob("*.TextGrid"))
    if not grids:
        raise FileNotFoundError(f"no TextGrid files in {str(folder / 'textgrid_dir')!r}")
    sessions = []
    if mic == "far":
        for grid_path in grids:
            session = grid_path.stem
            audio = [w for w in wavs if w.stem == session or w.stem.startswith(session + "_")]
            if len(audio) != 1:
                raise FileNotFoundError(
                    f"AliMeeting session {session!r}: expected one far-field wav in "
                    f"{str(folder / 'audio_dir')!r}, found {[w.name for w in audio]}"
                )
            utterances = utterances_from_textgrid(
                read_textgrid(grid_path), speaker_of_tier=_alimeeting_speaker
            )
            sessions.append(Session("alimeeting", session, (audio[0],), utterances, channel))
        return sessions
    by_session: dict[str, list[Path]] = {}
    for grid_path in grids:
        by_session.setdefault(_session_of_stem(grid_path.stem), []).append(grid_path)
    for session, session_grids in sorted(by_session.items()):
        audio, utterances = [], []
        for grid_path in session_grids:
            wav = folder / "audio_dir" / f"{grid_path.stem}.wav"
            if not wav.is_file():
                raise FileNotFoundError(
                    f"AliMeeting near-field TextGrid {grid_path.name!r} has no wav {str(wav)!r}"
                )
            audio.append(wav)
            speaker = _alimeeting_speaker(grid_path.stem)
            utterances += utterances_from_textgrid(read_textgrid(grid_path), speaker=speaker)
        utterances.sort(key=lambda u: (u.start, u.end, u.speaker))
        sessions.append(Session("alimeeting", session, tuple(audio), utterances, channel))
    return sessions


def _local_speaker(session: str):
    return lambda tier: f"{session}-{tier.strip()}"


def aishell4_sessions(
    root: str | os.PathLike,
    parts: Sequence[str] = ("train_L", "train_M", "train_S"),
    channel: int | None = 0,
) -> list[Session]:
    """AISHELL-4 sessions of the given parts (`train_L`, `train_M`, `train_S`, `test`)."""
    root = Path(root)
    folders = [root] if (root / "wav").is_dir() else [root / part for part in parts]
    sessions = []
    for folder in folders:
        if not (folder / "wav").is_dir() or not (folder / "TextGrid").is_dir():
            raise FileNotFoundError(f"no AISHELL-4 data in {str(folder)!r}: expected wav/ and TextGrid/")
        for audio in sorted(p for p in (folder / "wav").iterdir() if p.suffix in AUDIO_SUFFIXES):
            grid_path = folder / "TextGrid" / f"{audio.stem}.TextGrid"
            if not grid_path.is_file():
                raise FileNotFoundError(
                    f"AISHELL-4 recording {audio.name!r} has no TextGrid {str(grid_path)!r}"
                )
            grid = read_textgrid(grid_path)
            utterances = utterances_from_textgrid(grid, speaker_of_tier=_local_speaker(audio.stem))
            sessions.append(Session("aishell4", audio.stem, (audio,), utterances, channel))
    return sessions


def aishell5_sessions(
    root: str | os.PathLike, split: str = "dev", mic: str = "far", channel: int = 0
) -> list[Session]:
    """AISHELL-5 sessions of one split folder (`train`, `dev`/`Dev`, `Eval1`, ...); see the module doc."""
    if mic not in ("far", "near"):
        raise ValueError(f"AISHELL-5 mic {mic!r} is not 'far' or 'near'")
    if not 0 <= channel <= 3:
        raise ValueError(f"AISHELL-5 has far-field microphones DX01C01-DX04C01; channel {channel} is not 0-3")
    root = Path(root)
    folder = next(
        (
            c
            for c in (root / split, root / split.capitalize(), root / split.lower(), root)
            if _has_sessions(c)
        ),
        None,
    )
    if folder is None:
        raise FileNotFoundError(
            f"no AISHELL-5 sessions (folders with DA0*.wav) for split {split!r} under {str(root)!r}"
        )
    sessions = []
    for session_dir in sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("DA0*.wav"))):
        session = f"{folder.name}-{session_dir.name}"
        grids = (
            sorted(session_dir.glob("DA0*.TextGrid")) or sorted(session_dir.glob("DX0[1-4]C01.TextGrid"))[:1]
        )
        if not grids:
            raise FileNotFoundError(f"AISHELL-5 session {str(session_dir)!r} has no TextGrid")
        utterances = []
        for grid_path in grids:
            grid = read_textgrid(grid_path)
            if grid_path.stem.startswith("DA"):
                # A seat's TextGrid: its one named tier is the speaker, else the seat stands for them.
                named = [t.name.strip() for t in grid.tiers if t.kind == "IntervalTier" and t.name.strip()]
                found = utterances_from_textgrid(
                    grid, speaker=named[0] if len(named) == 1 else grid_path.stem
                )
            else:
                found = utterances_from_textgrid(grid)
            utterances += [Utterance(f"{session}-{u.speaker}", u.start, u.end, u.text) for u in found]
        utterances.sort(key=lambda u: (u.start, u.end, u.speaker))
        if mic == "far":
            audio = (session_dir / f"DX0{channel + 1}C01.wav",)
            if not audio[0].is_file():
                raise FileNotFoundError(f"AISHELL-5 session {str(session_dir)!r} has no {audio[0].name}")
            sessions.append(Session("aishell5", session, audio, utterances, None))
        else:
            sessions.append(
                Session("aishell5", session, tuple(sorted(session_dir.glob("DA0*.wav"))), utterances, None)
            )
    return sessions


def _has_sessions(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and any(p.glob("DA0*.wav")) for p in folder.iterdir())


def textgrid_folder_sessions(
    audio_dir: str | os.PathLike,
    textgrid_dir: str | os.PathLike | None = None,
    corpus: str = "custom",
    channel: int | None = 0,
    global_speaker_ids: bool = False,
    markup: Sequence[str] = ALIMEETING_MARKUP,
) -> list[Session]:
    """In-house data: `<session>.wav|flac` with `<session>.TextGrid` (one tier per speaker).

    With `global_speaker_ids` the tier names identify a person across sessions; otherwise they are
    prefixed with the session id.
    """
    audio_dir = Path(audio_dir)
    textgrid_dir = audio_dir if textgrid_dir is None else Path(textgrid_dir)
    sessions = []
    for grid_path in sorted(textgrid_dir.glob("*.TextGrid")):
        audio = [audio_dir / f"{grid_path.stem}{suffix}" for suffix in AUDIO_SUFFIXES]
        audio = [a for a in audio if a.is_file()]
        if not audio:
            raise FileNotFoundError(
                f"TextGrid {grid_path.name!r} has no audio {grid_path.stem}.wav/.flac in {str(audio_dir)!r}"
            )
        naming = None if global_speaker_ids else _local_speaker(grid_path.stem)
        utterances = utterances_from_textgrid(read_textgrid(grid_path), speaker_of_tier=naming)
        sessions.append(Session(corpus, grid_path.stem, (audio[0],), utterances, channel, tuple(markup)))
    if not sessions:
        raise FileNotFoundError(f"no TextGrid files in {str(textgrid_dir)!r}")
    return sessions


CORPORA = ("alimeeting", "aishell4", "aishell5", "textgrid")
