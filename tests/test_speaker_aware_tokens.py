"""Audio tokens that carry the frozen extractor's sliding-window speaker embeddings."""

import numpy as np
import pytest
import torch

from speakerlm_hf.audio_frontend import speaker_features
from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor
from speakerlm_hf.testing_utils import tiny_speakerlm, tone_voice, train_on_batch


@pytest.fixture(scope="module")
def speaker_aware():
    model, processor = tiny_speakerlm(speaker_model="campplus", audio_speaker_window=1.0)
    processor.match_model(model.config)
    return model.eval(), processor


def test_a_window_covering_the_whole_input_equals_the_utterance_embedding():
    model, _ = tiny_speakerlm(speaker_model="campplus")
    extractor = model.speaker_encoder.eval()
    features = speaker_features(tone_voice(1.2, 140.0, 0))[None]
    frames = features.shape[1]
    centers = torch.tensor([[10.0, frames / 2, frames - 5.0]])
    with torch.no_grad():
        windows = extractor.windowed_embeddings(features, torch.tensor([frames]), centers, window=10 * frames)
        whole = extractor(features)
    torch.testing.assert_close(windows[0], whole.expand(3, -1), atol=1e-5, rtol=1e-4)


def test_padding_does_not_change_a_sample_s_window_embeddings():
    model, _ = tiny_speakerlm(speaker_model="campplus")
    extractor = model.speaker_encoder.eval()
    short = speaker_features(tone_voice(2.0, 120.0, 1))
    padded = torch.cat((short, torch.zeros(300, 80)))[None]
    centers = torch.tensor([[50.0, 100.0, 150.0]])
    with torch.no_grad():
        alone = extractor.windowed_embeddings(short[None], torch.tensor([short.shape[0]]), centers, 80)
        batched = extractor.windowed_embeddings(padded, torch.tensor([short.shape[0]]), centers, 80)
    # windows away from the end see no padded frames through the backbone's receptive field
    torch.testing.assert_close(alone[0, :2], batched[0, :2], atol=1e-4, rtol=1e-3)


def test_processor_gives_speaker_features_and_tokens_follow_the_voice(speaker_aware):
    model, processor = speaker_aware
    low, high = tone_voice(3.0, 110.0, 2), tone_voice(3.0, 260.0, 3)
    # first half low voice, second half high voice
    mixed = np.concatenate((low[:24000], high[24000:]))
    batch = processor([low, mixed])
    assert batch["speaker_features"].shape[0] == 2 and batch["speaker_features"].shape[-1] == 80
    lengths = batch["input_features_mask"].sum(-1)
    with torch.no_grad():
        windows = model.audio_speaker_embeddings(
            batch["speaker_features"], batch["speaker_features_mask"].sum(-1), lengths, 25
        )
    # token i covers LFR frames [2i, 2i + 2) of 6 fbank frames each: its window is centred at 12i + 6
    features, frames = batch["speaker_features"], batch["speaker_features_mask"].sum(-1)
    centers = (torch.arange(25.0)[None] + 0.5) * 2 * (frames / lengths)[:, None]
    assert torch.allclose(centers[:, 3], torch.tensor(42.0), atol=0.5)
    with torch.no_grad():
        direct = model.speaker_encoder.windowed_embeddings(features, frames, centers, 100)
    torch.testing.assert_close(windows, direct)
    with torch.no_grad():
        without = SpeakerLMForConditionalGeneration(
            SpeakerLMConfig.from_dict({**model.config.to_dict(), "audio_speaker_window": 0.0})
        )
        without.load_state_dict(model.state_dict())
        plain = without.eval().get_audio_features(batch["input_features"], batch["input_features_mask"])
        aware = model.get_audio_features(
            batch["input_features"],
            batch["input_features_mask"],
            batch["speaker_features"],
            batch["speaker_features_mask"],
        )
    projected = model.speaker_projector(windows[~(torch.arange(25)[None] >= ((lengths + 1) // 2)[:, None])])
    torch.testing.assert_close(aware - plain, projected, atol=1e-5, rtol=1e-4)


def test_missing_speaker_features_is_a_clear_error(speaker_aware):
    model, processor = speaker_aware
    batch = processor([tone_voice(1.0, 150.0, 4)])
    batch.pop("speaker_features")
    batch.pop("speaker_features_mask")
    with pytest.raises(ValueError, match="speaker_features"):
        model(**batch)


def test_trains_generates_and_round_trips(speaker_aware, tmp_path):
    model, processor = tiny_speakerlm(speaker_model="campplus", audio_speaker_window=1.0)
    processor.match_model(model.config)
    audio = [tone_voice(2.0, 120.0, 5), tone_voice(2.5, 220.0, 6)]
    targets = ["spk0: good morning everyone.", "spk0: thanks.\nspk1: I agree."]
    model.set_trainable_parts(["language_model", "audio_projector", "speaker_projector"])
    losses = train_on_batch(model, processor(audio, text=targets), steps=80, lr=1e-2)
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = SpeakerLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    loaded_processor = SpeakerLMProcessor.from_pretrained(tmp_path)
    assert loaded.config.audio_speaker_window == 1.0
    assert loaded_processor.feature_extractor.return_speaker_features
    inputs = loaded_processor(audio)
    with torch.no_grad():
        out = loaded.generate(**inputs, max_new_tokens=20, do_sample=False)
    texts = loaded_processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])
    assert texts == targets


def test_window_needs_campplus():
    with pytest.raises(ValueError, match="CAM"):
        tiny_speakerlm(speaker_model="eres2netv2", audio_speaker_window=1.0)
