"""Readers that turn transcript files into sessions: ``{session_id: [Turn, ...]}``.

Formats:

- ``json``: our turn lists, ``[{"speaker", "text", "start"?, "end"?}, ...]`` (one session, named
  by the file stem unless turns carry ``session_id``) or ``{"session_id": [turns...], ...}``.
- ``seglst``: meeteval's SegLST JSON, ``[{"session_id", "speaker", "words", "start_time",
  "end_time"}, ...]``; a ``.json`` file is read as SegLST when its entries have ``words``.
- ``stm``: ``session channel speaker start end [<label>] text`` per line, ``;`` comments.
- ``alimeeting``: ``session text_0$text_1$...`` per line, one ``$``-separated field per
  speaker (AliMeeting / M2MeT cpCER files); speakers are named ``0``, ``1``, ...
- ``role``: the SDR model's output, one turn per line, ``<label>: <text>`` or
  ``[12.3-15.8] <label>: <text>``; one session per file, named by the file stem.
- ``rttm``: NIST RTTM, ``SPEAKER session channel start duration <NA> <NA> speaker <NA> <NA>``;
  who spoke when without text (for DER; the text-based metrics see no characters).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .turns import Turn, as_turns

__all__ = [
    "FORMATS",
    "Sessions",
    "parse_role_transcript",
    "read_role_transcript",
    "read_json",
    "read_stm",
    "read_alimeeting",
    "read_rttm",
    "detect_format",
    "load_sessions",
]

Sessions = dict[str, list[Turn]]
FORMATS = ("auto", "json", "seglst", "stm", "alimeeting", "role", "rttm")

_NUMBER = r"\d+(?:\.\d*)?"
_ROLE_LINE = re.compile(
    rf"^\s*(?:\[\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\s*\]\s*)?"
    r"(?P<label>[^:\[\]<>]*[^:\[\]<>\s])\s*:(?P<text>.*)$"
)
_STM_LABEL = re.compile(r"^<[^>\s]*>\s*")
# Written by the CLI; never read back as a transcript when a folder is loaded.
SCORE_SUFFIX = ".score.json"


def parse_role_transcript(text: str, strict: bool = True) -> list[Turn]:
    """Turns from the model's transcript by roles (one ``[start-end] label: text`` per line).

    With ``strict`` a line that is neither empty nor a turn raises ``ValueError``; otherwise it
    is taken as the continuation of the previous turn (and dropped, with a warning, when no
    turn precedes it).
    """
    turns: list[Turn] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _ROLE_LINE.match(line)
        if match is None:
            if strict:
                raise ValueError(
                    f"line {number} of the transcript is not '<label>: <text>' or "
                    f"'[start-end] <label>: <text>': {line!r}"
                )
            if turns:
                last = turns[-1]
                turns[-1] = Turn(last.speaker, f"{last.text} {line.strip()}", last.start, last.end)
            else:
                warnings.warn(f"dropped line {number} before the first turn: {line!r}", stacklevel=2)
            continue
        start, end = match["start"], match["end"]
        turns.append(
            Turn(
                speaker=match["label"].strip(),
                text=match["text"].strip(),
                start=None if start is None else float(start),
                end=None if end is None else float(end),
            )
        )
    return turns


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from None


def read_role_transcript(path: str | Path, strict: bool = True) -> Sessions:
    """One session, named by the file stem, from a transcript-by-roles text file."""
    path = Path(path)
    try:
        return {path.stem: parse_role_transcript(_read_text(path), strict=strict)}
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _group(turns: Iterable[Turn], default_session: str) -> Sessions:
    sessions: Sessions = {}
    for turn in turns:
        sessions.setdefault(turn.session_id or default_session, []).append(turn)
    return sessions


def _seglst_turns(entries: list[dict[str, Any]], path: Path) -> list[Turn]:
    turns = []
    for position, entry in enumerate(entries):
        missing = [key for key in ("session_id", "speaker", "words") if key not in entry]
        if missing:
            raise ValueError(f"{path}: SegLST entry {position} lacks {missing}: {entry!r}")
        words = entry["words"]
        start, end = entry.get("start_time"), entry.get("end_time")
        turns.append(
            Turn(
                speaker=str(entry["speaker"]),
                text=words if isinstance(words, str) else " ".join(map(str, words)),
                start=None if start is None else float(start),
                end=None if end is None else float(end),
                session_id=str(entry["session_id"]),
            )
        )
    return turns


def read_json(path: str | Path) -> Sessions:
    """Sessions from our JSON turn lists or from meeteval's SegLST JSON (told apart by keys)."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    try:
        if isinstance(data, dict):
            return {str(session): as_turns(turns) for session, turns in data.items()}
        if not isinstance(data, list):
            raise ValueError(
                f"expected a list of turns or a {{session_id: turns}} object, got {type(data).__name__}"
            )
        if data and all(isinstance(entry, dict) and "words" in entry for entry in data):
            return _group(_seglst_turns(data, path), path.stem)
        if not data:
            return {path.stem: []}
        return _group(as_turns(data), path.stem)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def read_stm(path: str | Path) -> Sessions:
    """Sessions from an STM file; the channel and the optional ``<label>`` field are ignored."""
    path = Path(path)
    turns = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            raise ValueError(
                f"{path}:{number}: an STM line needs 'session channel speaker start end text': {line!r}"
            )
        session, _, speaker, start, end = fields[:5]
        try:
            start_time, end_time = float(start), float(end)
        except ValueError:
            raise ValueError(f"{path}:{number}: start/end are not numbers: {line!r}") from None
        text = _STM_LABEL.sub("", fields[5]) if len(fields) == 6 else ""
        turns.append(Turn(speaker, text, start_time, end_time, session))
    return _group(turns, path.stem)


def read_alimeeting(path: str | Path) -> Sessions:
    """Sessions from an AliMeeting ``session text_0$text_1$...`` file (speakers ``0``, ``1``, ...)."""
    path = Path(path)
    sessions: Sessions = {}
    for line in _read_text(path).splitlines():
        fields = line.strip().split(maxsplit=1)
        if not fields:
            continue
        session = fields[0]
        if session in sessions:
            raise ValueError(f"{path}: session {session!r} appears on more than one line")
        texts = fields[1].split("$") if len(fields) == 2 else []
        sessions[session] = [Turn(str(k), text.strip(), session_id=session) for k, text in enumerate(texts)]
    return sessions


def read_rttm(path: str | Path) -> Sessions:
    """Sessions from an RTTM file: its ``SPEAKER`` lines as turns without text (other types are skipped)."""
    path = Path(path)
    turns = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith(";") or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(
                f"{path}:{number}: an RTTM SPEAKER line needs 'SPEAKER session channel start duration "
                f"<NA> <NA> speaker ...': {line!r}"
            )
        try:
            start, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(f"{path}:{number}: start/duration are not numbers: {line!r}") from None
        if not start >= 0 or not duration >= 0:
            raise ValueError(f"{path}:{number}: start and duration must be >= 0: {line!r}")
        turns.append(Turn(fields[7], "", start, start + duration, fields[1]))
    return _group(turns, path.stem)


def detect_format(path: str | Path) -> str:
    """The format of one file from its extension, and for text files from its lines."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".stm":
        return "stm"
    if suffix == ".rttm":
        return "rttm"
    lines = [line for line in _read_text(path).splitlines() if line.strip()]
    # An empty file is a model output with no turn, not an AliMeeting file without sessions.
    if not lines or any(_ROLE_LINE.match(line) for line in lines):
        return "role"
    return "alimeeting"


_READERS = {
    "json": read_json,
    "seglst": read_json,
    "stm": read_stm,
    "alimeeting": read_alimeeting,
    "role": read_role_transcript,
    "rttm": read_rttm,
}


def _load_file(path: Path, format: str) -> Sessions:
    return _READERS[detect_format(path) if format == "auto" else format](path)


def load_sessions(path: str | Path, format: str = "auto") -> Sessions:
    """Sessions from a file, or from every file in a folder (``.json``, ``.stm``, ``.rttm``,
    ``.txt`` or no extension; hidden files and ``*.score.json`` outputs are skipped)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such transcript file or folder: {path}")
    if path.is_file():
        return _load_file(path, format)
    files = sorted(
        child
        for child in path.iterdir()
        if child.is_file()
        and not child.name.startswith(".")
        and not child.name.endswith(SCORE_SUFFIX)
        and child.suffix.lower() in (".json", ".stm", ".rttm", ".txt", "")
    )
    if not files:
        raise ValueError(f"{path} holds no transcript file (.json, .stm, .rttm, .txt or no extension)")
    sessions: Sessions = {}
    for file in files:
        for session, turns in _load_file(file, format).items():
            if session in sessions:
                raise ValueError(
                    f"session {session!r} appears in more than one file of {path} (again in {file.name})"
                )
            sessions[session] = turns
    return sessions
