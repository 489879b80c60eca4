"""Prompts, placeholders, audio handling, enrollment and transcript parsing of SpeakerLMProcessor."""

import numpy as np
import pytest
import soundfile
import torch

from speakerlm_hf.configuration_speakerlm import AUDIO_TOKEN, SPEAKER_TOKEN
from speakerlm_hf.processing_speakerlm import (
    IGNORE_INDEX,
    check_speaker_names,
    flat_prompt,
    format_role_transcript,
    parse_role_transcript,
)
from speakerlm_hf.testing_utils import tiny_config, tiny_processor, tiny_tokenizer


@pytest.fixture(scope="module")
def processor():
    tokenizer = tiny_tokenizer()
    return tiny_processor(tokenizer, tiny_config(tokenizer))


def tone(seconds: float, rate: int = 16000, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (
        0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    ).astype(np.float32)


def test_prompts_match_the_spec_byte_for_byte():
    assert flat_prompt("asr") == "You are a helpful assistant. Transcribe the speech. <start>AUDIO<end>"
    assert flat_prompt("sdr") == "You are a helpful assistant. Transcribe by roles. <start>AUDIO<end>"
    assert flat_prompt("sdr", ["Mike", "Lucy", "Jack"]) == (
        "You are a helpful assistant. Registered Speaker Embeddings:\n"
        "Mike<start>EMB(Mike)<end>;\n"
        "Lucy<start>EMB(Lucy)<end>;\n"
        "Jack<start>EMB(Jack)<end>;\n"
        "Transcribe by roles. <start>AUDIO<end>"
    )


def test_chat_prompt_expands_placeholders_to_the_audio_length(processor):
    audio = tone(3.0)
    inputs = processor(audio, speakers={"Mike": tone(2.0), "Lucy": tone(1.5, freq=330)})
    frames = int(inputs["input_features_mask"].sum())
    assert frames == processor.feature_extractor.num_frames(audio.size) == 50
    ids = inputs["input_ids"][0]
    tokenizer = processor.tokenizer
    assert int((ids == tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)).sum()) == 25  # stride 2
    assert int((ids == tokenizer.convert_tokens_to_ids(SPEAKER_TOKEN)).sum()) == 2
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nRegistered Speaker Embeddings:\n"
        f"Mike<start>{SPEAKER_TOKEN}<end>;\nLucy<start>{SPEAKER_TOKEN}<end>;\n"
        f"Transcribe by roles. <start>{AUDIO_TOKEN * 25}<end><|im_end|>\n<|im_start|>assistant\n"
    )


def test_labels_cover_exactly_the_answer(processor):
    target = "spk0: hello there.\nspk1: hi."
    batch = processor([tone(1.0), tone(2.0)], text=[target, "spk0: ok."])
    labels = batch["labels"]
    assert (batch["attention_mask"][:, 0] == 1).all(), "training batches are right-padded"
    answer = labels[0][labels[0] != IGNORE_INDEX]
    assert processor.tokenizer.decode(answer, skip_special_tokens=False) == target + "<|im_end|>"
    prompt_length = int((labels[0] == IGNORE_INDEX).long().argmin())
    assert torch.equal(batch["input_ids"][0, prompt_length : prompt_length + answer.numel()], answer)
    assert (labels[batch["attention_mask"] == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Mike:", "forbidden"),
        ("Mi\nke", "forbidden"),
        ("[Mike]", "forbidden"),
        ("<|im_end|>", "forbidden"),
        ("spk0", "anonymous"),
        ("Mi\u200bke", "control"),
        ("x" * 65, "longer"),
    ],
)
def test_bad_speaker_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        check_speaker_names([name])


def test_duplicate_and_special_token_names_are_refused(processor):
    with pytest.raises(ValueError, match="twice"):
        check_speaker_names(["Mike", " Mike "])
    with pytest.raises(ValueError, match="special token"):
        check_speaker_names(["Mike ##sep##"], reserved=["##sep##"])
    with pytest.raises(ValueError, match="forbidden"):
        processor(tone(1.0), speakers={"Lucy: hi": tone(2.0)})
    assert check_speaker_names(["  Lucy Chen ", "李雷"]) == ["Lucy Chen", "李雷"]


def test_audio_in_any_common_form_gives_the_same_features(processor, tmp_path):
    mono = tone(2.0)
    reference = processor.feature_extractor(mono)["input_features"]
    pcm16 = np.round(mono * 32767).astype(np.int16)
    stereo_pcm = np.stack([pcm16, pcm16], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo_pcm, 16000, subtype="PCM_16")
    for audio in (
        stereo_pcm,
        stereo_pcm.T,
        {"raw": mono, "sampling_rate": 16000},
        {"array": torch.from_numpy(mono), "sampling_rate": 16000},
        str(path),
    ):
        # 16-bit quantisation moves log-mel values by about 1e-2 at most.
        torch.testing.assert_close(
            processor.feature_extractor(audio)["input_features"], reference, atol=2e-2, rtol=0
        )


def test_resampled_input_matches_native_rate(processor):
    def chord(rate: int) -> np.ndarray:
        # Tones across the 16 kHz band: the same signal sampled at either rate.
        t = np.arange(2 * rate) / rate
        freqs = np.linspace(100, 7500, 60)
        return (0.01 * np.sin(2 * np.pi * freqs[:, None] * t + freqs[:, None]).sum(0)).astype(np.float32)

    native = processor.feature_extractor(chord(16000))["input_features"]
    resampled = processor.feature_extractor(chord(48000), sampling_rate=48000)["input_features"]
    assert resampled.shape == native.shape
    assert (resampled - native).abs().mean() < 0.02 * native.abs().mean()


def test_bad_audio_gets_a_clear_error(processor, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        processor(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        processor(np.full(16000, np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        processor(str(tmp_path / "missing.wav"))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match="broken.wav"):
        processor(str(broken))
    with pytest.raises(ValueError, match="too short"):
        processor(np.ones(100, np.float32))
    with pytest.raises(ValueError, match="max_duration"):
        processor(np.zeros(16000 * 601, np.float32))
    with pytest.raises(ValueError, match="sampling rate"):
        processor(tone(1.0), sampling_rate=0)


def test_enrollment_clips_are_checked_and_cut(processor):
    with pytest.raises(ValueError, match="enrollment clip of 'Mike'.*at least 1 s"):
        processor(tone(1.0), speakers={"Mike": tone(0.5)})
    with pytest.raises(ValueError, match="silent"):
        processor(tone(1.0), speakers={"Mike": np.zeros(32000, np.float32)})
    inputs = processor(tone(1.0), speakers={"Mike": tone(25.0), "Lucy": [tone(3.0), tone(4.0)]})
    lengths = inputs["enrollment_features_mask"].sum(-1)
    # 25 s -> three pieces of 8.3 s; Lucy's two clips stay whole.
    assert inputs["enrollment_speaker_index"].tolist() == [0, 0, 0, 1, 1]
    assert all(198 <= n <= 998 for n in lengths.tolist())
    assert inputs["speaker_embeddings"].shape == (2, 16)


def test_precomputed_embeddings_and_over_registration(processor):
    embedding = np.linspace(-1, 1, 16).astype(np.float32)
    inputs = processor(
        [tone(1.0), tone(1.0)],
        speakers=[{"Mike": embedding, "Ann": {"embedding": embedding * 2}, "Bob": tone(2.0)}, None],
    )
    assert inputs["speaker_embeddings"].shape == (3, 16)
    torch.testing.assert_close(inputs["speaker_embeddings"][1], torch.from_numpy(embedding * 2))
    assert inputs["enrollment_speaker_index"].tolist() == [2]
    speaker_id = processor.tokenizer.convert_tokens_to_ids(SPEAKER_TOKEN)
    assert (inputs["input_ids"] == speaker_id).sum(-1).tolist() == [3, 0]
    with pytest.raises(ValueError, match="shape"):
        processor(tone(1.0), speakers={"Mike": {"embedding": np.zeros(5)}})


def test_role_transcripts_round_trip():
    turns = [
        {"speaker": "spk0", "text": "hello: world", "start": 0.0, "end": 1.25},
        {"speaker": "Lucy Chen", "text": "你好", "start": 1.3, "end": 2.0},
    ]
    plain = format_role_transcript(turns)
    assert plain == "spk0: hello: world\nLucy Chen: 你好"
    assert parse_role_transcript(plain) == [{"speaker": t["speaker"], "text": t["text"]} for t in turns]
    stamped = format_role_transcript(turns, timestamps=True)
    assert stamped.splitlines()[0] == "[0.0-1.2] spk0: hello: world"
    parsed = parse_role_transcript(stamped)
    assert [(t["start"], t["end"]) for t in parsed] == [(0.0, 1.2), (1.3, 2.0)]
    assert parse_role_transcript("no label here\nspk1: yes\nand more") == [
        {"speaker": "unknown", "text": "no label here"},
        {"speaker": "spk1", "text": "yes and more"},
    ]
