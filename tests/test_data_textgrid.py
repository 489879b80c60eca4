"""Praat TextGrid reading: long and short formats, encodings, escapes, point tiers, clear errors."""

import codecs

import pytest

from speakerlm_hf.data.corpora import strip_markup, utterances_from_textgrid
from speakerlm_hf.data.textgrid import parse_textgrid, read_textgrid

LONG = """File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 12.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "SPK8004"
        xmin = 0
        xmax = 12.5
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 1.25
            text = ""
        intervals [2]:
            xmin = 1.25
            xmax = 4.5
            text = "好嗯，咱们今天 [1] 讨论 ""新品"" <sil>"
        intervals [3]:
            xmin = 4.5
            xmax = 12.5
            text = "second line
continues here"
    item [2]:
        class = "TextTier"
        name = "events"
        xmin = 0
        xmax = 12.5
        points: size = 1
        points [1]:
            number = 3.5
            mark = "door"
"""

SHORT = """File type = "ooTextFile"
Object class = "TextGrid"

0
12.5
<exists>
2
"IntervalTier"
"SPK8004"
0
12.5
3
0
1.25
""
1.25
4.5
"好嗯，咱们今天 [1] 讨论 ""新品"" <sil>"
4.5
12.5
"second line
continues here"
"TextTier"
"events"
0
12.5
1
3.5
"door"
"""


def check_grid(grid):
    assert (grid.start, grid.end) == (0.0, 12.5)
    assert [t.name for t in grid.tiers] == ["SPK8004", "events"]
    intervals = grid.tier("SPK8004").intervals
    assert [(i.start, i.end) for i in intervals] == [(0.0, 1.25), (1.25, 4.5), (4.5, 12.5)]
    assert intervals[1].text == '好嗯，咱们今天 [1] 讨论 "新品" <sil>'
    assert intervals[2].text == "second line\ncontinues here"
    point = grid.tier("events")
    assert point.kind == "TextTier" and (point.intervals[0].start, point.intervals[0].text) == (3.5, "door")


@pytest.mark.parametrize("text", [LONG, SHORT], ids=["long", "short"])
def test_long_and_short_formats_read_the_same(text):
    check_grid(parse_textgrid(text))


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-16-le", b""),
    ],
)
def test_encodings(tmp_path, encoding, bom):
    path = tmp_path / "a.TextGrid"
    path.write_bytes(bom + LONG.encode(encoding))
    check_grid(read_textgrid(path))


def test_utterances_skip_empty_intervals_and_point_tiers():
    utterances = utterances_from_textgrid(parse_textgrid(LONG))
    assert [(u.speaker, u.start, u.end) for u in utterances] == [
        ("SPK8004", 1.25, 4.5),
        ("SPK8004", 4.5, 12.5),
    ]


def test_markup_is_stripped_and_the_rest_kept():
    assert strip_markup('好嗯，咱们 <sil>今天<%> 讨论<space>"新品"  <#>') == '好嗯，咱们 今天 讨论 "新品"'
    assert strip_markup("<%>") == ""


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.TextGrid"):
        read_textgrid(tmp_path / "missing.TextGrid")
    binary = tmp_path / "b.TextGrid"
    binary.write_bytes(b"ooBinaryFile\x08TextGrid")
    with pytest.raises(ValueError, match="binary TextGrid"):
        read_textgrid(binary)
    truncated = tmp_path / "t.TextGrid"
    truncated.write_text(LONG[: LONG.index("intervals [3]")], encoding="utf-8")
    with pytest.raises(ValueError, match=r"t\.TextGrid.*ends before"):
        read_textgrid(truncated)
    with pytest.raises(ValueError, match="not a TextGrid|holds a Praat 'Sound'"):
        parse_textgrid('File type = "ooTextFile"\nObject class = "Sound"\n0\n1\n')
