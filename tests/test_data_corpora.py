"""AISHELL-4, AISHELL-5 and plain TextGrid-folder layouts -> sessions; clear errors for broken layouts."""

import numpy as np
import pytest
import soundfile

from speakerlm_hf.data.corpora import (
    aishell4_sessions,
    aishell5_sessions,
    alimeeting_sessions,
    textgrid_folder_sessions,
)
from speakerlm_hf.data.toy_corpus import write_long_textgrid

RATE = 16000


def write_audio(path, channels: int, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * RATE), channels))).astype(
        np.float32
    )
    soundfile.write(path, audio, RATE, subtype="PCM_16")
    return soundfile.read(path, dtype="float32", always_2d=True)[0]


def test_aishell4_tiers_are_local_to_their_meeting(tmp_path):
    for part, session in (("train_L", "20200706_L_R001S01C01"), ("train_M", "20200707_M_R002S01C01")):
        audio = write_audio(tmp_path / part / "wav" / f"{session}.flac", channels=8)
        tiers = {"001-M": [(0.5, 1.5, "你好 <$>")], "002-F": [(1.0, 3.0, "好的")]}
        (tmp_path / part / "TextGrid").mkdir(parents=True)
        write_long_textgrid(tmp_path / part / "TextGrid" / f"{session}.TextGrid", 4.0, tiers)
    sessions = aishell4_sessions(tmp_path, parts=("train_L", "train_M"))
    assert [s.corpus for s in sessions] == ["aishell4", "aishell4"]
    assert sessions[1].speakers == ["20200707_M_R002S01C01-001-M", "20200707_M_R002S01C01-002-F"]
    assert [(u.start, u.end, u.text) for u in sessions[1].utterances] == [
        (0.5, 1.5, "你好 <$>"),
        (1.0, 3.0, "好的"),
    ]
    np.testing.assert_array_equal(sessions[1].load_audio(), audio[:, 0])
    # The split folder itself works too.
    assert [s.id for s in aishell4_sessions(tmp_path / "train_M")] == ["20200707_M_R002S01C01"]
    with pytest.raises(FileNotFoundError, match="train_S"):
        aishell4_sessions(tmp_path)


def test_aishell5_seats_far_and_near(tmp_path):
    session = tmp_path / "Dev" / "007"
    heads = [write_audio(session / f"DA0{k}.wav", 1, seed=k)[:, 0] for k in (1, 2)]
    far = [write_audio(session / f"DX0{k}C01.wav", 1, seed=10 + k)[:, 0] for k in range(1, 5)]
    write_long_textgrid(session / "DA01.TextGrid", 4.0, {"P0247": [(0.2, 1.8, "打开车窗")]})
    write_long_textgrid(session / "DA02.TextGrid", 4.0, {"": [(2.0, 3.5, "好的")]})
    sessions = aishell5_sessions(tmp_path, "dev", "far", channel=2)
    assert [s.id for s in sessions] == ["Dev-007"]
    assert [(u.speaker, u.text) for u in sessions[0].utterances] == [
        ("Dev-007-P0247", "打开车窗"),
        ("Dev-007-DA02", "好的"),
    ]
    np.testing.assert_array_equal(sessions[0].load_audio(), far[2])
    near = aishell5_sessions(tmp_path, "Dev", "near")[0]
    np.testing.assert_allclose(near.load_audio(), heads[0] + heads[1], atol=1e-6)
    with pytest.raises(ValueError, match="channel 4"):
        aishell5_sessions(tmp_path, "dev", channel=4)


def test_textgrid_folder_for_in_house_data(tmp_path):
    write_audio(tmp_path / "meeting-1.flac", 2)
    write_long_textgrid(
        tmp_path / "meeting-1.TextGrid", 4.0, {"Alice": [(0.0, 2.0, "hello")], "Bob": [(2.5, 3.0, "hi")]}
    )
    local = textgrid_folder_sessions(tmp_path, corpus="inhouse")
    assert local[0].speakers == ["meeting-1-Alice", "meeting-1-Bob"] and local[0].corpus == "inhouse"
    assert textgrid_folder_sessions(tmp_path, global_speaker_ids=True)[0].speakers == ["Alice", "Bob"]


def test_broken_layouts_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="Train_Ali_far/audio_dir"):
        alimeeting_sessions(tmp_path, "Train", "far")
    folder = tmp_path / "Train_Ali_far"
    (folder / "audio_dir").mkdir(parents=True)
    (folder / "textgrid_dir").mkdir()
    write_long_textgrid(folder / "textgrid_dir" / "R0001_M0001.TextGrid", 4.0, {"SPK0001": [(0, 1, "x")]})
    with pytest.raises(FileNotFoundError, match="R0001_M0001.*one far-field wav"):
        alimeeting_sessions(tmp_path, "Train", "far")
    with pytest.raises(ValueError, match="mic 'ihm'"):
        alimeeting_sessions(tmp_path, "Train", "ihm")
    with pytest.raises(FileNotFoundError, match="no AISHELL-5 sessions"):
        aishell5_sessions(tmp_path, "train")
