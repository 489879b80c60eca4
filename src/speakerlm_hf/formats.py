"""Transcript writers: turns `{"speaker", "text", "start"?, "end"?}` as JSON, TXT, SRT, WebVTT, RTTM, STM and SegLST.

    write_transcript(turns, "out/meeting.srt", "srt", session_id="meeting")

JSON and TXT take turns with or without times; the other formats need times (transcribe with
`return_timestamps=True`). Each format has `format_<name>(turns, ...) -> str` and
`write_<name>(turns, path, ...) -> Path`; what they write is read back by `speakerlm score`
(JSON, TXT, STM, SegLST) and by meeteval (SegLST, RTTM, and STM written with `label=None`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "FORMATS",
    "EXTENSIONS",
    "parse_formats",
    "format_json",
    "format_txt",
    "format_srt",
    "format_vtt",
    "format_rttm",
    "format_stm",
    "format_seglst",
    "write_json",
    "write_txt",
    "write_srt",
    "write_vtt",
    "write_rttm",
    "write_stm",
    "write_seglst",
    "write_transcript",
]

FORMATS = ("json", "txt", "srt", "vtt", "rttm", "stm", "seglst")
EXTENSIONS = {
    "json": ".json",
    "txt": ".txt",
    "srt": ".srt",
    "vtt": ".vtt",
    "rttm": ".rttm",
    "stm": ".stm",
    "seglst": ".seglst.json",
}
# NIST's STM label field: overall category, focus condition, speaker sex (unknown here).
STM_LABEL = "<o,f0,unknown>"
_SPACE = re.compile(r"\s+")

Turns = Iterable[Mapping]


def parse_formats(spec: str | Sequence[str]) -> list[str]:
    """`"srt,vtt"`, `["srt", "vtt"]` or `"all"` -> the list of format names, checked, without repeats."""
    items = spec.split(",") if isinstance(spec, str) else [part for item in spec for part in item.split(",")]
    names: list[str] = []
    for item in (item.strip().lower() for item in items):
        if not item:
            continue
        chosen = list(FORMATS) if item == "all" else [item]
        for name in chosen:
            if name not in FORMATS:
                raise ValueError(
                    f"unknown output format {name!r}; expected some of {', '.join(FORMATS)} or all"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"no output format given; expected some of {', '.join(FORMATS)} or all")
    return names


def _one_line(text: str) -> str:
    return _SPACE.sub(" ", str(text)).strip()


def _field(value: str) -> str:
    """A whitespace-free field for the column formats (RTTM, STM): spaces become underscores."""
    return _SPACE.sub("_", str(value).strip()) or "<NA>"


def _timed(turns: Turns, format: str) -> list[tuple[float, float, str, str]]:
    """(start, end, speaker, text) in time order; every turn must have times."""
    timed = []
    for position, turn in enumerate(turns):
        start, end = turn.get("start"), turn.get("end")
        if start is None or end is None:
            raise ValueError(
                f"turn {position} has no start/end time; the {format} format needs turn times "
                "(transcribe with return_timestamps=True)"
            )
        start, end = float(start), float(end)
        if not 0 <= start <= end:
            raise ValueError(f"turn {position} has the times {start}-{end}; expected 0 <= start <= end")
        timed.append((start, end, str(turn["speaker"]), _one_line(turn["text"])))
    return sorted(timed, key=lambda item: (item[0], item[1]))


def _clock(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{fraction:03d}"


def format_json(turns: Turns) -> str:
    """A JSON list of the turns as they are (what `speakerlm score` reads as one session)."""
    return json.dumps([dict(turn) for turn in turns], ensure_ascii=False, indent=2) + "\n"


def format_txt(turns: Turns, timestamps: bool | None = None) -> str:
    """The role transcript: `label: text` per turn, `[start-end] ` first when `timestamps`.

    `timestamps=None` writes times when every turn has them.
    """
    turns = list(turns)
    if timestamps is None:
        timestamps = bool(turns) and all(
            t.get("start") is not None and t.get("end") is not None for t in turns
        )
    lines = []
    for turn in turns:
        prefix = f"[{float(turn['start']):.2f}-{float(turn['end']):.2f}] " if timestamps else ""
        lines.append(f"{prefix}{turn['speaker']}: {_one_line(turn['text'])}")
    return "".join(f"{line}\n" for line in lines)


def format_srt(turns: Turns) -> str:
    """SubRip cues, one per turn: `Speaker: text`."""
    cues = [
        f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{speaker}: {text}\n"
        for number, (start, end, speaker, text) in enumerate(_timed(turns, "srt"), start=1)
    ]
    return "\n".join(cues)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_vtt(turns: Turns) -> str:
    """WebVTT cues with the speaker as a voice span: `<v Speaker>text`."""
    cues = [
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n<v {_vtt_escape(speaker)}>{_vtt_escape(text)}\n"
        for start, end, speaker, text in _timed(turns, "vtt")
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def format_rttm(turns: Turns, session_id: str) -> str:
    """RTTM `SPEAKER` lines (10 fields): who spoke when, without words."""
    return "".join(
        f"SPEAKER {_field(session_id)} 1 {start:.3f} {end - start:.3f} <NA> <NA> {_field(speaker)} <NA> <NA>\n"
        for start, end, speaker, _ in _timed(turns, "rttm")
    )


def format_stm(turns: Turns, session_id: str, label: str | None = STM_LABEL) -> str:
    """STM lines: `session channel speaker start end [<label>] text`.

    meeteval reads the label as a word; write with `label=None` for it.
    """
    prefix = f"{label} " if label else ""
    return "".join(
        f"{_field(session_id)} 1 {_field(speaker)} {start:.3f} {end:.3f} {prefix}{text}".rstrip() + "\n"
        for start, end, speaker, text in _timed(turns, "stm")
    )


def format_seglst(turns: Turns, session_id: str) -> str:
    """meeteval's SegLST JSON: `[{"session_id", "speaker", "start_time", "end_time", "words"}, ...]`."""
    entries = [
        {"session_id": session_id, "speaker": speaker, "start_time": start, "end_time": end, "words": text}
        for start, end, speaker, text in _timed(turns, "seglst")
    ]
    return json.dumps(entries, ensure_ascii=False, indent=2) + "\n"


def _write(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(turns: Turns, path: str | os.PathLike) -> Path:
    return _write(path, format_json(turns))


def write_txt(turns: Turns, path: str | os.PathLike, timestamps: bool | None = None) -> Path:
    return _write(path, format_txt(turns, timestamps))


def write_srt(turns: Turns, path: str | os.PathLike) -> Path:
    return _write(path, format_srt(turns))


def write_vtt(turns: Turns, path: str | os.PathLike) -> Path:
    return _write(path, format_vtt(turns))


def write_rttm(turns: Turns, path: str | os.PathLike, session_id: str | None = None) -> Path:
    return _write(path, format_rttm(turns, session_id or _session(path)))


def write_stm(
    turns: Turns, path: str | os.PathLike, session_id: str | None = None, label: str | None = STM_LABEL
) -> Path:
    return _write(path, format_stm(turns, session_id or _session(path), label))


def write_seglst(turns: Turns, path: str | os.PathLike, session_id: str | None = None) -> Path:
    return _write(path, format_seglst(turns, session_id or _session(path)))


def _session(path: str | os.PathLike) -> str:
    """A session id from a file name: the name without the format's extension."""
    name = Path(path).name
    for extension in sorted(EXTENSIONS.values(), key=len, reverse=True):
        if name.endswith(extension):
            return name[: -len(extension)] or name
    return Path(path).stem


_WRITERS: dict[str, Callable[..., Path]] = {
    "json": lambda turns, path, session_id: write_json(turns, path),
    "txt": lambda turns, path, session_id: write_txt(turns, path),
    "srt": lambda turns, path, session_id: write_srt(turns, path),
    "vtt": lambda turns, path, session_id: write_vtt(turns, path),
    "rttm": write_rttm,
    "stm": write_stm,
    "seglst": write_seglst,
}


def write_transcript(
    turns: Turns, path: str | os.PathLike, format: str, session_id: str | None = None
) -> Path:
    """Write `turns` to `path` in one of `FORMATS`; `session_id` defaults to the file name without extension."""
    if format not in _WRITERS:
        raise ValueError(f"unknown output format {format!r}; expected one of {', '.join(FORMATS)}")
    return _WRITERS[format](list(turns), path, session_id)
