"""A small reader for Praat TextGrid files, long ("ooTextFile") and short formats.

Both text formats hold the same values in the same order; the long one only adds labels
(`xmin =`, `intervals [3]:`). The reader therefore scans the file for values alone (quoted
strings, with `""` standing for one quote, numbers and the `<exists>`/`<absent>` flag),
skipping labels and `[n]` indices, and reads them in order. Encodings: UTF-8 (with or without a
byte-order mark) and UTF-16 (with a byte-order mark, or detected from its zero bytes); GB18030 is
tried last for legacy Chinese files. Binary TextGrids are refused with a clear message.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Interval", "Tier", "TextGrid", "parse_textgrid", "read_textgrid", "decode_textgrid_bytes"]

# A value of the file: a quoted string, an `[n]` index (skipped), a number or a flag.
_TOKEN = re.compile(
    r'"(?P<string>(?:[^"]|"")*)"'
    r"|(?P<index>\[\s*\d*\s*\])"
    r"|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<flag><exists>|<absent>)"
)


@dataclass(frozen=True)
class Interval:
    """One labelled stretch of a tier; `start == end` for the points of a point tier."""

    start: float
    end: float
    text: str


@dataclass
class Tier:
    name: str
    intervals: list[Interval] = field(default_factory=list)
    kind: str = "IntervalTier"


@dataclass
class TextGrid:
    start: float
    end: float
    tiers: list[Tier] = field(default_factory=list)

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(f"the TextGrid has no tier {name!r}; tiers: {[t.name for t in self.tiers]}")


def decode_textgrid_bytes(data: bytes, what: str = "TextGrid") -> str:
    """Text of a TextGrid file in any of the encodings Praat writes."""
    if data.startswith(b"ooBinaryFile"):
        raise ValueError(f"{what} is a binary TextGrid; save it as a text file from Praat")
    boms = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
    for bom, encoding in boms:
        if data.startswith(bom):
            return data.decode(encoding)
    head = data[:200]
    if head.count(b"\x00") > len(head) // 4:
        # UTF-16 without a byte-order mark: ASCII characters have their zero byte first or second.
        return data.decode("utf-16-be" if head[:1] == b"\x00" else "utf-16-le")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError as error:
            raise ValueError(f"{what} is neither UTF-8, UTF-16 nor GB18030 text: {error}") from error


def _values(text: str) -> list[object]:
    """The file's values in order: str for strings, float for numbers, bool for the tiers flag."""
    values: list[object] = []
    for match in _TOKEN.finditer(text):
        if match["string"] is not None:
            values.append(match["string"].replace('""', '"'))
        elif match["number"] is not None:
            values.append(float(match["number"]))
        elif match["flag"] is not None:
            values.append(match["flag"] == "<exists>")
    return values


class _Reader:
    def __init__(self, values: list[object], what: str):
        self.values = values
        self.position = 0
        self.what = what

    def take(self, kind: type, label: str) -> object:
        if self.position >= len(self.values):
            raise ValueError(f"{self.what} ends before its {label}")
        value = self.values[self.position]
        if not isinstance(value, kind):
            raise ValueError(
                f"{self.what}: expected the {label} ({kind.__name__}), found {value!r}; is it a TextGrid?"
            )
        self.position += 1
        return value


def parse_textgrid(text: str, what: str = "TextGrid") -> TextGrid:
    """Parse the text of a long- or short-format TextGrid."""
    reader = _Reader(_values(text), what)
    if reader.take(str, "file type") != "ooTextFile":
        raise ValueError(f"{what} is not a Praat text file (no 'ooTextFile' header)")
    object_class = reader.take(str, "object class")
    if not object_class.startswith("TextGrid"):
        raise ValueError(f"{what} holds a Praat {object_class!r}, not a TextGrid")
    grid = TextGrid(start=reader.take(float, "xmin"), end=reader.take(float, "xmax"))
    if reader.position < len(reader.values) and isinstance(reader.values[reader.position], bool):
        if not reader.take(bool, "tiers flag"):
            return grid
    for number in range(int(reader.take(float, "number of tiers"))):
        kind = reader.take(str, f"class of tier {number + 1}")
        name = reader.take(str, f"name of tier {number + 1}")
        reader.take(float, f"xmin of tier {name!r}")
        reader.take(float, f"xmax of tier {name!r}")
        tier = Tier(name=name, kind=kind)
        count = int(reader.take(float, f"size of tier {name!r}"))
        for _ in range(count):
            if kind == "IntervalTier":
                start = reader.take(float, f"interval start in tier {name!r}")
                end = reader.take(float, f"interval end in tier {name!r}")
            elif kind == "TextTier":
                start = end = reader.take(float, f"point time in tier {name!r}")
            else:
                raise ValueError(f"{what}: tier {name!r} has the unknown class {kind!r}")
            tier.intervals.append(Interval(start, end, reader.take(str, f"label in tier {name!r}")))
        grid.tiers.append(tier)
    return grid


def read_textgrid(path: str | os.PathLike) -> TextGrid:
    """Read a TextGrid file (long or short format, UTF-8 or UTF-16)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TextGrid file {str(path)!r} does not exist")
    what = f"TextGrid file {str(path)!r}"
    return parse_textgrid(decode_textgrid_bytes(path.read_bytes(), what), what)
