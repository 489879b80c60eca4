"""Transcript readers (role transcripts, JSON turn lists, SegLST, STM, AliMeeting) and the score CLI."""

import argparse
import json
import subprocess
import sys

import pytest

from speakerlm_hf.metrics import (
    Turn,
    detect_format,
    load_sessions,
    parse_role_transcript,
    read_alimeeting,
    read_json,
    read_stm,
)
from speakerlm_hf.metrics.cli import main, register


def test_parse_role_transcript_plain_and_timestamped():
    text = "spk0: 你好，今天开会。\n\n[12.3-15.8] Lucy: 好的: 开始吧\n  Mary Ann :  hi  \n"
    assert parse_role_transcript(text) == [
        Turn("spk0", "你好，今天开会。"),
        Turn("Lucy", "好的: 开始吧", 12.3, 15.8),
        Turn("Mary Ann", "hi"),
    ]


def test_parse_role_transcript_rejects_or_joins_bad_lines():
    with pytest.raises(ValueError, match="line 2 of the transcript"):
        parse_role_transcript("spk0: 你好\n没有标签的一行\n")
    assert parse_role_transcript("spk0: 你好\n继续说\n", strict=False) == [Turn("spk0", "你好 继续说")]
    with pytest.raises(ValueError):
        parse_role_transcript("[1.0] spk0: 你好")


def test_read_json_turn_lists(tmp_path):
    single = tmp_path / "meeting1.json"
    single.write_text(
        json.dumps([{"speaker": "A", "text": "你好", "start": 0, "end": 1.5}, {"speaker": "B", "text": "hi"}])
    )
    assert read_json(single) == {"meeting1": [Turn("A", "你好", 0.0, 1.5), Turn("B", "hi")]}
    several = tmp_path / "all.json"
    several.write_text(json.dumps({"m1": [{"speaker": "A", "text": "一"}], "m2": []}))
    assert read_json(several) == {"m1": [Turn("A", "一")], "m2": []}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"text": "一"}]))
    with pytest.raises(ValueError, match="broken.json.*lacks the key"):
        read_json(broken)


def test_read_seglst(tmp_path):
    path = tmp_path / "hyp.json"
    path.write_text(
        json.dumps(
            [
                {
                    "session_id": "m1",
                    "speaker": "A",
                    "words": "hello world",
                    "start_time": 0.5,
                    "end_time": 2,
                },
                {"session_id": "m2", "speaker": "B", "words": "你 好", "start_time": 1, "end_time": 3},
                {"session_id": "m1", "speaker": "B", "words": "bye", "start_time": 2, "end_time": 3},
            ]
        )
    )
    assert read_json(path) == {
        "m1": [Turn("A", "hello world", 0.5, 2.0, "m1"), Turn("B", "bye", 2.0, 3.0, "m1")],
        "m2": [Turn("B", "你 好", 1.0, 3.0, "m2")],
    }


def test_read_stm(tmp_path):
    path = tmp_path / "ref.stm"
    path.write_text(
        ";; comment line\nm1 1 A 0.00 1.50 <o,f0,male> 你好 世界\nm1 1 B 1.50 3.00 hello\nm2 1 A 0 2\n"
    )
    assert read_stm(path) == {
        "m1": [Turn("A", "你好 世界", 0.0, 1.5, "m1"), Turn("B", "hello", 1.5, 3.0, "m1")],
        "m2": [Turn("A", "", 0.0, 2.0, "m2")],
    }
    bad = tmp_path / "bad.stm"
    bad.write_text("m1 1 A zero 1 text\n")
    with pytest.raises(ValueError, match="bad.stm:1"):
        read_stm(bad)


def test_read_alimeeting(tmp_path):
    path = tmp_path / "text_spk_merge"
    path.write_text("R0001 你好世界$今天开会$好的\nR0002 只有一个人\n")
    assert read_alimeeting(path) == {
        "R0001": [
            Turn("0", "你好世界", session_id="R0001"),
            Turn("1", "今天开会", session_id="R0001"),
            Turn("2", "好的", session_id="R0001"),
        ],
        "R0002": [Turn("0", "只有一个人", session_id="R0002")],
    }
    assert detect_format(path) == "alimeeting"


def test_detect_and_load_folder(tmp_path):
    (tmp_path / "m1.txt").write_text("spk0: 你好\nspk1: 再见\n")
    (tmp_path / "m2.txt").write_text("[0.0-1.0] spk0: 一二三\n")
    (tmp_path / "m3.txt").write_text("\n")  # the model said nothing
    (tmp_path / "old.score.json").write_text("{}")
    (tmp_path / "audio.wav").write_bytes(b"RIFF")
    assert detect_format(tmp_path / "m1.txt") == "role"
    sessions = load_sessions(tmp_path)
    assert sessions == {
        "m1": [Turn("spk0", "你好"), Turn("spk1", "再见")],
        "m2": [Turn("spk0", "一二三", 0.0, 1.0)],
        "m3": [],
    }
    with pytest.raises(FileNotFoundError, match="no such transcript"):
        load_sessions(tmp_path / "missing")


def _write_pair(tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text(
        json.dumps(
            {
                "m1": [
                    {"speaker": "Mike", "text": "你好世界", "start": 0, "end": 2},
                    {"speaker": "Lucy", "text": "谢谢大家", "start": 2, "end": 4},
                ],
                "m2": [{"speaker": "Mike", "text": "一二三四五六", "start": 0, "end": 3}],
            },
            ensure_ascii=False,
        )
    )
    hyp = tmp_path / "hyp"
    hyp.mkdir()
    (hyp / "m1.txt").write_text("[0.0-2.0] Lucy: 你好世界\n[2.0-4.0] Mike: 谢谢大家\n")
    (hyp / "m2.txt").write_text("[0.0-3.0] Mike: 一二三四五七\n")
    return ref, hyp


def test_cli_score_cp_and_sa(tmp_path, capsys):
    ref, hyp = _write_pair(tmp_path)
    output = tmp_path / "out" / "cp.json"
    pair = ["--ref", str(ref), "--hyp", str(hyp)]
    assert main(["score", *pair, "--output", str(output), "--per-session"]) == 0
    printed = capsys.readouterr().out
    assert "cpCER        7.14" in printed and "m2" in printed
    result = json.loads(output.read_text())
    assert result["summary"]["cpCER"]["errors"] == 1 and result["summary"]["cpCER"]["reference_length"] == 14
    assert result["summary"]["cer"]["errors"] == 1
    assert result["per_session"]["m1"]["cpCER"]["rate"] == 0.0

    output_sa = tmp_path / "sa.json"
    assert main(["score", *pair, "--mode", "sa", "--output", str(output_sa)]) == 0
    summary = json.loads(output_sa.read_text())["summary"]
    assert summary["saCER"]["errors"] == 9  # 8 swapped characters in m1, 1 substitution in m2
    assert summary["delta"] == pytest.approx(9 / 14 - 1 / 14)

    output_tcp = tmp_path / "tcp.json"
    tcp_args = ["--mode", "tcp", "--collar", "1", "--output", str(output_tcp)]
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), *tcp_args]) == 0
    assert json.loads(output_tcp.read_text())["summary"]["tcpCER"]["errors"] == 1


def test_cli_single_files_and_errors(tmp_path, capsys):
    ref = tmp_path / "reference.txt"
    ref.write_text("A: 你好世界\n")
    hyp = tmp_path / "system_output.txt"
    hyp.write_text("spk0: 你好世\n")
    output = tmp_path / "one.json"
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--output", str(output)]) == 0
    assert json.loads(output.read_text())["summary"]["cpCER"]["rate"] == pytest.approx(0.25)
    assert main(["score", "--ref", str(tmp_path / "nothing.json"), "--hyp", str(hyp)]) == 2
    assert "no such transcript" in capsys.readouterr().err


def test_register_adds_score_subcommand():
    parser = argparse.ArgumentParser(prog="speakerlm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["score", "--ref", "r.json", "--hyp", "h", "--mode", "tcp", "--collar", "0.5"])
    assert args.func.__name__ == "run_score"
    assert (args.mode, args.collar, args.format, args.per_session) == ("tcp", 0.5, "auto", False)


def test_module_entry_point(tmp_path):
    (tmp_path / "ref.txt").write_text("A: 一二三四\n")
    (tmp_path / "hyp.txt").write_text("spk0: 一二三\n")
    command = [
        sys.executable,
        "-m",
        "speakerlm_hf.metrics.cli",
        "score",
        "--ref",
        "ref.txt",
        "--hyp",
        "hyp.txt",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "cpCER       25.00" in done.stdout
    assert (
        json.loads((tmp_path / "speakerlm_cp.score.json").read_text())["summary"]["cpCER"]["deletions"] == 1
    )
