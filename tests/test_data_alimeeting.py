"""An AliMeeting-shaped toy corpus (espeak-ng speech, TextGrids) through preparation, streaming,
registration sampling and collation into a batch the tiny model trains on."""

import argparse
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from speakerlm_hf.data import (
    RegistrationSampler,
    SpeakerBank,
    SpeakerLMDataCollator,
    alimeeting_sessions,
    compute_speaker_bank,
    decode_prepared_row,
    load_prepared,
    prepare_sessions,
    push_prepared_to_hub,
)
from speakerlm_hf.data.audio import decode_audio
from speakerlm_hf.data.corpora import strip_markup
from speakerlm_hf.data.prepare import register
from speakerlm_hf.data.toy_corpus import write_toy_alimeeting
from speakerlm_hf.processing_speakerlm import IGNORE_INDEX, check_speaker_names, parse_role_transcript
from speakerlm_hf.testing_utils import tiny_speakerlm, train_on_batch

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")
RATE = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("AliMeeting")
    return root, write_toy_alimeeting(root, "Train", session_duration=90.0, seed=0)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    root, _ = corpus
    output = tmp_path_factory.mktemp("prepared")
    shards = prepare_sessions(alimeeting_sessions(root, "Train", "far"), output, seed=0, rows_per_shard=3)
    return output, shards


@pytest.fixture(scope="module")
def rows(prepared):
    return list(load_prepared(prepared[0], streaming=True))


@pytest.fixture(scope="module")
def tiny():
    return tiny_speakerlm()


def test_far_and_near_sessions_read_the_layout(corpus):
    root, written = corpus
    far = alimeeting_sessions(root, "Train", "far")
    near = alimeeting_sessions(root / "Train_Ali", "Train", "near")
    assert [s.id for s in far] == [s.id for s in near] == ["R0001_M0001", "R0002_M0002"]
    for session, other in zip(far, near, strict=True):
        assert session.utterances == other.utterances == written[session.id]
        assert session.audio[0].name == f"{session.id}_MS001.wav" and len(other.audio) == 3
    assert far[0].speakers == ["SPK0001", "SPK0002", "SPK0003"]
    # Channel 0 of the 8-channel array by default; another channel on request.
    array, _ = soundfile.read(far[0].audio[0], dtype="float32")
    np.testing.assert_array_equal(far[0].load_audio(), array[:, 0])
    far[0].channel = 3
    np.testing.assert_array_equal(far[0].load_audio(), array[:, 3])
    # Near field: the sum of the headsets, scaled down only where it would clip.
    headsets = sum(soundfile.read(path, dtype="float32")[0] for path in near[0].audio)
    headsets *= min(1.0, 0.99 / np.abs(headsets).max())
    np.testing.assert_allclose(near[0].load_audio(), headsets, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="Eval_Ali_far"):
        alimeeting_sessions(root, "Eval", "far")


def test_prepared_shards_stream_with_turns_audio_and_pools(corpus, prepared, rows):
    root, written = corpus
    output, shards = prepared
    assert [p.name for p in shards] == [f"train-0000{i}-of-00002.parquet" for i in range(2)]
    assert b"Audio" in pq.read_schema(shards[0]).metadata[b"huggingface"]
    assert len(rows) == 4 and [r["session"] for r in rows] == ["R0001_M0001"] * 2 + ["R0002_M0002"] * 2
    sessions = {s.id: s.load_audio() for s in alimeeting_sessions(root, "Train", "far")}
    for row in rows:
        start, end = row["start"], row["end"]
        assert 40.0 <= end - start <= 50.0
        utterances = written[row["session"]]
        expected = [
            {
                "speaker": u.speaker,
                "start": round(u.start - start, 3),
                "end": round(u.end - start, 3),
                "text": strip_markup(u.text),
            }
            for u in utterances
            if start <= u.start and u.end <= end and strip_markup(u.text)
        ]
        assert row["turns"] == expected
        assert not any(u.start < start < u.end or u.start < end < u.end for u in utterances), (
            "cuts in silence"
        )
        audio = decode_audio(row["audio"])
        session = sessions[row["session"]]
        np.testing.assert_allclose(audio, session[round(start * RATE) : round(end * RATE)], atol=1 / 32767)
        assert {e["speaker"] for e in row["enrollment"]} == {t["speaker"] for t in row["turns"]}
        for entry in row["enrollment"]:
            assert 1 <= len(entry["clips"]) <= 3
            for clip in entry["clips"]:
                a, b = clip["start"], clip["end"]
                assert 2.0 <= b - a <= 10.0 and (b <= start or a >= end)
                assert any(u.speaker == entry["speaker"] and u.start <= a and b <= u.end for u in utterances)
                assert not any(
                    u.speaker != entry["speaker"] and u.start < b and a < u.end for u in utterances
                )
                clip_audio = decode_audio(clip)
                np.testing.assert_allclose(
                    clip_audio, session[round(a * RATE) : round(b * RATE)], atol=1 / 32767
                )
    # The markup-only cough is speech for the cut points but never a turn.
    assert all(t["text"] for r in rows for t in r["turns"])


def test_prepared_rows_decode_for_evaluation(rows):
    row = rows[0]
    decoded = decode_prepared_row(row)
    assert decoded["id"] == row["id"] and decoded["turns"] == [dict(t) for t in row["turns"]]
    np.testing.assert_array_equal(decoded["audio"], decode_audio(row["audio"]))
    assert set(decoded["enrollment"]) == {e["speaker"] for e in row["enrollment"]}
    for entry in row["enrollment"]:
        clips = decoded["enrollment"][entry["speaker"]]
        assert len(clips) == len(entry["clips"])
        np.testing.assert_array_equal(clips[0], decode_audio(entry["clips"][0]))
    assert all(len(c) == 1 for c in decode_prepared_row(row, max_clips=1)["enrollment"].values())
    broken = {
        **row,
        "enrollment": [{"speaker": "X", "clips": [{"bytes": b"junk", "start": 0.0, "end": 1.0}]}],
    }
    with pytest.raises(ValueError, match=re.escape(f"'X' in '{row['id']}'")):
        decode_prepared_row(broken)


def test_same_seed_same_shards(corpus, prepared, tmp_path):
    root, _ = corpus
    sessions = alimeeting_sessions(root, "Train", "far")
    again = prepare_sessions(sessions, tmp_path / "again", seed=0, rows_per_shard=3)
    for first, second in zip(prepared[1], again, strict=True):
        assert pq.read_table(first).equals(pq.read_table(second))
    other = prepare_sessions(sessions, tmp_path / "other", seed=5, rows_per_shard=100)
    assert pq.read_table(other[0]).column("end").to_pylist() != [
        r for s in prepared[1] for r in pq.read_table(s).column("end").to_pylist()
    ]
    with pytest.raises(FileExistsError, match="already holds train shards"):
        prepare_sessions(sessions, tmp_path / "again", seed=0)


def test_registration_sampling_and_collation_train_the_tiny_model(rows, tiny):
    model, processor = tiny
    bank = compute_speaker_bank(model, processor.feature_extractor, rows)
    # One embedding per (session, speaker); SPK0002 attends both meetings.
    assert sorted(zip(bank.sessions, bank.identities, strict=True)) == [
        ("R0001_M0001", "alimeeting/SPK0001"),
        ("R0001_M0001", "alimeeting/SPK0002"),
        ("R0001_M0001", "alimeeting/SPK0003"),
        ("R0002_M0002", "alimeeting/SPK0002"),
        ("R0002_M0002", "alimeeting/SPK0004"),
        ("R0002_M0002", "alimeeting/SPK0005"),
    ]
    assert bank.embeddings.shape == (6, 16) and np.isfinite(bank.embeddings).all()

    sampler = RegistrationSampler(bank, probabilities=(0, 0, 1), max_extra=50)
    collator = SpeakerLMDataCollator(processor, sampler, timestamps=True, seed=0)
    features = [rows[0], rows[2]]
    batch = collator(features)
    tokenizer = processor.tokenizer
    for i, row in enumerate(features):
        labels = batch["labels"][i]
        answer = tokenizer.decode(labels[labels != IGNORE_INDEX], skip_special_tokens=True)
        turns = parse_role_transcript(answer)
        assert [(t["start"], t["end"], t["text"]) for t in turns] == [
            (round(t["start"], 1), round(t["end"], 1), t["text"]) for t in row["turns"]
        ]
        names = {t["speaker"] for t in turns}
        assert len(names) == len({t["speaker"] for t in row["turns"]})
        check_speaker_names(sorted(names))
        prompt = tokenizer.decode(batch["input_ids"][i][labels == IGNORE_INDEX], skip_special_tokens=False)
        assert "Transcribe by roles with timestamps." in prompt
        registered = [
            line.split("<start>")[0] for line in prompt.splitlines() if "<start><|speaker_pad|>" in line
        ]
        # Over-Regist: the present speakers plus the other session's two speakers not present here
        # (SPK0002 is in both meetings, so never an absent extra).
        assert names < set(registered) and len(registered) == len(names) + 2
    assert batch["enrollment_features"].shape[0] == 6  # one clip for each of 3 + 3 present speakers
    assert batch["speaker_embeddings"].shape == (10, 16)

    losses = train_on_batch(model, batch, steps=10, lr=5e-3)
    model.eval()
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.85 * losses[0], losses


def test_speaker_bank_command_matches_the_library(prepared, rows, tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "speaker-bank",
            str(prepared[0]),
            str(tmp_path / "bank.safetensors"),
            "--model",
            str(tmp_path / "model"),
        ]
    )
    assert args.func(args) == 0
    saved = SpeakerBank.load(tmp_path / "bank.safetensors")
    expected = compute_speaker_bank(model, processor.feature_extractor, rows)
    assert (saved.sessions, saved.identities) == (expected.sessions, expected.identities)
    np.testing.assert_allclose(saved.embeddings, expected.embeddings, rtol=1e-5, atol=1e-5)


def test_bank_round_trips_through_safetensors(tmp_path):
    bank = SpeakerBank(["s1", "s2"], ["c/a", "c/b"], np.arange(6, dtype=np.float32).reshape(2, 3))
    bank.save(tmp_path / "bank.safetensors")
    loaded = SpeakerBank.load(tmp_path / "bank.safetensors")
    assert (loaded.sessions, loaded.identities) == (bank.sessions, bank.identities)
    np.testing.assert_array_equal(loaded.embeddings, bank.embeddings)
    np.testing.assert_array_equal(loaded.embedding("s2", "c/b"), [3, 4, 5])


def test_cli_prepares_and_push_to_hub_wraps_the_hub_api(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "prepare-data",
            "alimeeting",
            str(root),
            str(tmp_path / "cli"),
            "--mic",
            "near",
            "--rows-per-shard",
            "10",
        ]
    )
    assert args.func(args) == 0
    streamed = list(load_prepared(tmp_path / "cli"))
    assert [r["session"] for r in streamed] == ["R0001_M0001"] * 2 + ["R0002_M0002"] * 2

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "https://huggingface.co/datasets/me/toy/commit/abc"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    url = push_prepared_to_hub(tmp_path / "cli", "me/toy", private=True, token="t")
    assert url.endswith("/commit/abc")
    assert calls[1] == ("create_repo", "me/toy", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert (
        calls[2][1]["allow_patterns"] == ["data/*.parquet", "README.md"]
        and calls[2][1]["repo_type"] == "dataset"
    )
    with pytest.raises(ValueError, match="owner"):
        push_prepared_to_hub(tmp_path / "cli", "toy")
    with pytest.raises(FileNotFoundError, match="no data"):
        push_prepared_to_hub(tmp_path, "me/toy")
