"""Scoring metrics: hand-computed CER, cpCER, saCER, tcpCER, Δ, pooling, speaker counts, empty references."""

import pytest

from speakerlm_hf.metrics import (
    ErrorCounts,
    SpeakerErrorCounts,
    Turn,
    cer,
    cp_cer,
    edit_counts,
    edit_distance,
    normalize_text,
    sa_cer,
    score_session,
    score_sessions,
    scoring_characters,
    speaker_texts,
    tcp_cer,
)

BACKENDS = ["rapidfuzz", "numpy"]


def turn(speaker, text, start=None, end=None):
    return {"speaker": speaker, "text": text, "start": start, "end": end}


def test_normalisation_chinese_and_english():
    assert normalize_text("ＡＢＣ，你好。\u3000世界！") == "abc你好 世界"
    assert scoring_characters("ＡＢＣ，你好。\u3000世界！") == "abc你好世界"
    assert normalize_text("  Hello,   WORLD!\n\tDon't stop. ") == "hello world dont stop"
    assert scoring_characters("Hello, World!") == "helloworld"
    assert scoring_characters("《三体》——刘慈欣“科幻”") == "三体刘慈欣科幻"
    assert scoring_characters("１２３ｘｙｚ") == "123xyz"
    assert scoring_characters("25℃，3㎏") == "253"  # letter-like symbols go as a whole
    assert scoring_characters("a\u200bb\u00a0c") == "abc"  # zero-width space, no-break space
    assert scoring_characters("，。！？、；：") == ""
    assert scoring_characters("\u01f0") == "\u01f0"  # folds to j + U+030C, composed again by NFKC


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("kitten", "sitting", ErrorCounts(2, 0, 1, 6)),
        # Two substitutions beat one deletion + one insertion at equal cost.
        ("ab", "ba", ErrorCounts(2, 0, 0, 2)),
        ("今天天气很好", "今天天很好啊", ErrorCounts(0, 1, 1, 6)),
        ("你好世界", "你好世界", ErrorCounts(0, 0, 0, 4)),
        ("你好", "", ErrorCounts(0, 2, 0, 2)),
        ("", "你好", ErrorCounts(0, 0, 2, 0)),
        ("", "", ErrorCounts(0, 0, 0, 0)),
    ],
)
def test_edit_counts_hand_computed(reference, hypothesis, expected, backend):
    counts = edit_counts(reference, hypothesis, backend=backend)
    assert counts == expected
    assert edit_distance(reference, hypothesis, backend=backend) == expected.errors


def test_error_counts_rates_and_empty_reference():
    assert ErrorCounts(1, 1, 1, 6).rate == pytest.approx(0.5)
    assert ErrorCounts(0, 0, 3, 0).rate is None  # meeteval: no error rate without a reference
    assert ErrorCounts(0, 0, 0, 0).rate is None
    assert (ErrorCounts(1, 0, 0, 4) + ErrorCounts(0, 0, 3, 6)).rate == pytest.approx(0.4)
    with pytest.raises(ValueError, match="exceed the reference length"):
        ErrorCounts(2, 2, 0, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cer_ignores_speakers_and_follows_time_order(backend):
    reference = [turn("B", "今天很好", 2.0, 3.0), turn("A", "你好，世界", 0.0, 1.0)]
    hypothesis = [turn("x", "你好世", 0.0, 1.0), turn("y", "今天很好啊", 2.0, 3.0)]
    # 你好世界今天很好 vs 你好世今天很好啊: delete 界, insert 啊.
    counts = cer(reference, hypothesis, backend=backend)
    assert counts == ErrorCounts(0, 1, 1, 8)
    assert counts.rate == pytest.approx(0.25)
    assert cer("Hello, World", "hello word") == ErrorCounts(0, 1, 0, 10)


def test_speaker_texts_time_order_and_silent_speakers():
    turns = [turn("A", "二", 5.0, 6.0), turn("B", "，。", 1.0, 2.0), turn("A", "一", 0.0, 1.0)]
    assert speaker_texts(turns) == {"A": "一二"}
    # Without times on every turn, list order is time order.
    assert speaker_texts([turn("A", "二", 5.0, 6.0), turn("A", "一")]) == {"A": "二一"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_cp_and_sa_with_swapped_labels(backend):
    reference = [turn("Mike", "你好世界", 0.0, 1.0), turn("Lucy", "谢谢大家", 1.0, 2.0)]
    # Right words, labels swapped: cpCER finds the permutation, saCER counts every character.
    hypothesis = [turn("Lucy", "你好世界", 0.0, 1.0), turn("Mike", "谢谢大家", 1.0, 2.0)]
    cp = cp_cer(reference, hypothesis, backend=backend)
    assert (cp.errors, cp.reference_length) == (0, 8)
    assert set(cp.assignment) == {("Mike", "Lucy"), ("Lucy", "Mike")}
    sa = sa_cer(reference, hypothesis, backend=backend)
    assert (sa.substitutions, sa.deletions, sa.insertions, sa.reference_length) == (8, 0, 0, 8)
    assert sa.rate == pytest.approx(1.0)
    scored = score_session(reference, hypothesis, mode="sa", backend=backend)
    assert scored.cer.rate == pytest.approx(0.0)
    assert scored.delta == pytest.approx(1.0)  # Δsa = 1.0 - 0.0
    assert score_session(reference, hypothesis, mode="cp", backend=backend).delta == pytest.approx(0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cp_assignment_and_delta_cp(backend):
    reference = [turn("A", "你好世界", 0.0, 1.0), turn("B", "谢谢大家", 1.0, 2.0)]
    hypothesis = [
        turn("spk0", "谢谢", 1.0, 1.5),
        turn("spk1", "你好世界啊", 0.0, 1.0),
        turn("spk0", "大家", 1.5, 2.0),
    ]
    cp = cp_cer(reference, hypothesis, backend=backend)
    assert set(cp.assignment) == {("A", "spk1"), ("B", "spk0")}
    assert (cp.substitutions, cp.deletions, cp.insertions) == (0, 0, 1)
    assert cp.rate == pytest.approx(1 / 8)
    # A speaker confusion: 大家 moves from B's words to spk1.
    confused = [
        turn("spk0", "谢谢", 1.0, 1.5),
        turn("spk1", "你好世界", 0.0, 1.0),
        turn("spk1", "大家", 1.5, 2.0),
    ]
    scored = score_session(reference, confused, mode="cp", backend=backend)
    assert scored.cer.errors == 0
    assert scored.attributed.errors == 4  # 大家 deleted from B and inserted into A
    assert scored.delta == pytest.approx(0.5)


def test_cp_missing_and_extra_speakers():
    reference = [turn("A", "一二三"), turn("B", "四五"), turn("C", "六")]
    missing = cp_cer(reference, [turn("x", "一二三")])
    assert (missing.substitutions, missing.deletions, missing.insertions) == (0, 3, 0)
    assert missing.reference_length == 6
    assert (missing.reference_speakers, missing.hypothesis_speakers) == (3, 1)
    assert (missing.missed_speakers, missing.false_alarm_speakers) == (2, 0)
    assert missing.rate == pytest.approx(0.5)
    assert ("B", None) in missing.assignment and ("C", None) in missing.assignment

    extra = cp_cer([turn("A", "一二三")], [turn("x", "一二三"), turn("y", "四五")])
    assert (extra.insertions, extra.errors, extra.reference_length) == (2, 2, 3)
    assert (extra.missed_speakers, extra.false_alarm_speakers) == (0, 1)
    assert (None, "y") in extra.assignment

    empty = cp_cer(reference, [])
    assert (empty.deletions, empty.errors, empty.rate) == (6, 6, 1.0)


def test_sa_unregistered_and_absent_names():
    reference = [turn("Mike", "你好"), turn("Lucy", "再见")]
    hypothesis = [turn("Mike", "你好"), turn("Jack", "再见")]
    sa = sa_cer(reference, hypothesis)
    assert (sa.substitutions, sa.deletions, sa.insertions) == (0, 2, 2)
    assert (sa.missed_speakers, sa.false_alarm_speakers) == (1, 1)
    assert set(sa.assignment) == {("Mike", "Mike"), ("Lucy", None), (None, "Jack")}
    assert cp_cer(reference, hypothesis).errors == 0


def test_empty_reference_has_no_rate():
    hypothesis = [turn("x", "你好")]
    for counts in (cer([], hypothesis), cp_cer([], hypothesis), sa_cer([], hypothesis)):
        assert (counts.insertions, counts.reference_length, counts.rate) == (2, 0, None)
    scored = score_session([turn("A", "，。")], hypothesis)  # punctuation only: no characters
    assert scored.cer.rate is None and scored.attributed.rate is None and scored.delta is None
    assert cp_cer([], []).rate is None
    # Pooled with a scored session, the insertions count against its characters.
    report = score_sessions(
        {"s1": [], "s2": [turn("A", "一二")]}, {"s1": hypothesis, "s2": [turn("x", "一二")]}
    )
    assert report.attributed.rate == pytest.approx(1.0)
    assert report.cer.rate == pytest.approx(1.0)


def test_pooling_sums_errors_not_rates():
    reference = {"s1": [turn("A", "一二三四")], "s2": [turn("A", "一二三四五六")]}
    hypothesis = {"s1": [turn("x", "一二三五")], "s2": [turn("x", "一七八九五六")]}
    report = score_sessions(reference, hypothesis)
    assert [s.attributed.errors for s in report.sessions] == [1, 3]
    assert report.attributed.rate == pytest.approx(4 / 10)  # not (1/4 + 3/6) / 2 = 0.375
    assert report.cer.rate == pytest.approx(4 / 10)
    assert report.delta == pytest.approx(0.0)
    data = report.to_dict()
    assert data["summary"]["cpCER"]["errors"] == 4 and data["summary"]["cpCER"]["reference_length"] == 10
    assert data["per_session"]["s2"]["cpCER"]["rate"] == pytest.approx(0.5)
    assert SpeakerErrorCounts.from_dict(data["summary"]["cpCER"]) == report.attributed
    assert ErrorCounts.from_dict(data["summary"]["cer"]) == report.cer


def test_speaker_count_error():
    reference = {
        "a": [turn("A", "一"), turn("B", "二")],
        "b": [turn("A", "一"), turn("B", "二")],
        "c": [turn("A", "一"), turn("B", "二"), turn("C", "三")],
    }
    hypothesis = {
        "a": [turn("x", "一"), turn("y", "二"), turn("z", "三")],
        "b": [turn("x", "一"), turn("y", "二")],
        "c": [turn("x", "一二三")],
    }
    report = score_sessions(reference, hypothesis)
    assert [s.speaker_count_error for s in report.sessions] == [1, 0, -2]
    assert report.speaker_count_error == pytest.approx(1.0)
    assert report.speaker_count_accuracy == pytest.approx(1 / 3)
    assert (report.attributed.missed_speakers, report.attributed.false_alarm_speakers) == (2, 1)


def test_tcp_cer_collar():
    reference = [turn("A", "abcd", 0.0, 4.0)]  # characters at [0,1] [1,2] [2,3] [3,4]
    # Same words ten seconds late: outside a 1 s collar every character is deleted and inserted.
    late = [turn("x", "abcd", 10.0, 14.0)]
    assert tcp_cer(reference, late, collar=1.0).errors == 8
    assert tcp_cer(reference, late, collar=10.0).errors == 0
    assert cp_cer(reference, late).errors == 0
    # One second late: hypothesis points 1.5 2.5 3.5 4.5; with a 0.5 s collar each reference
    # character overlaps only the previous hypothesis character (strict overlap).
    shifted = [turn("x", "abcd", 1.0, 5.0)]
    counts = tcp_cer(reference, shifted, collar=0.5)
    assert (counts.substitutions, counts.deletions, counts.insertions) == (3, 1, 1)
    assert tcp_cer(reference, shifted, collar=0.6).errors == 0
    report = score_sessions({"s": reference}, {"s": shifted}, mode="tcp", collar=0.5)
    assert report.attributed.rate == pytest.approx(5 / 4)
    assert report.delta == pytest.approx(5 / 4)
    assert report.collar == 0.5


def test_tcp_cer_needs_times():
    with pytest.raises(ValueError, match="start and end times on every hypothesis turn"):
        tcp_cer([turn("A", "一", 0.0, 1.0)], [turn("x", "一")])
    with pytest.raises(ValueError, match="session 's1'"):
        score_sessions({"s1": [turn("A", "一")]}, {"s1": [turn("x", "一")]}, mode="tcp")


def test_session_matching_rules():
    reference = {f"s{k}": [turn("A", "一")] for k in range(20)}
    hypothesis = {f"s{k}": [turn("x", "一")] for k in range(19)}
    with pytest.warns(UserWarning, match="scored as empty hypotheses"):
        report = score_sessions(reference, hypothesis)
    assert report.attributed.errors == 1
    with pytest.raises(ValueError, match="have no hypothesis"):
        score_sessions(reference, {"s0": []})
    with pytest.raises(ValueError, match="not in the reference"):
        score_sessions({"s0": []}, {"s0": [], "other": []})
    subset = score_sessions({"s0": [turn("A", "一")]}, {"s0": [], "other": []}, partial=True)
    assert subset.attributed.errors == 1
    with pytest.raises(ValueError, match="mode must be one of"):
        score_sessions(reference, hypothesis, mode="der")


def test_turn_validation():
    with pytest.raises(ValueError, match="lacks the key"):
        cp_cer([{"speaker": "A"}], [])
    assert Turn("A", "一", 0.0, 1.0).to_dict() == {"speaker": "A", "text": "一", "start": 0.0, "end": 1.0}


def test_report_table():
    report = score_sessions({"meeting1": [turn("A", "一二三四")]}, {"meeting1": [turn("x", "一二三五")]})
    table = report.format_table(per_session=True)
    assert "cpCER       25.00" in table
    assert "Δcp          0.00" in table
    assert "meeting1" in table
