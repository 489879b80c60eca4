"""Speaker-label hints: audio tokens marked with the name of the registered speaker they sound like."""

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList

from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
from speakerlm_hf.generation_speakerlm import SpeakerLabelConstraint
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor, format_role_transcript
from speakerlm_hf.testing_utils import tiny_speakerlm, tone_voice


@pytest.fixture(scope="module")
def hinted():
    model, processor = tiny_speakerlm(
        speaker_model="campplus", audio_speaker_window=1.0, speaker_label_hints=8.0
    )
    processor.match_model(model.config)
    return model.eval(), processor


def test_label_ids_are_the_tokens_a_transcript_line_starts_with(hinted):
    _, processor = hinted
    size = processor.speaker_embedding_size
    batch = processor(
        [tone_voice(2.0, 120.0, 0)],
        speakers={"Mike": tone_voice(2.0, 120.0, 1), "Lucy": np.ones(size, dtype=np.float32)},
    )
    tokenizer = processor.tokenizer
    mike = tokenizer("Mike", add_special_tokens=False)["input_ids"]
    lucy = tokenizer("Lucy", add_special_tokens=False)["input_ids"]
    longest = max(len(mike), len(lucy))
    assert batch["speaker_label_ids"].tolist() == [
        mike + [-100] * (longest - len(mike)),
        lucy + [-100] * (longest - len(lucy)),
    ]
    # the ids are those the target transcript has at the start of each of its lines
    target = format_role_transcript([{"speaker": "Mike", "text": "hi"}, {"speaker": "Lucy", "text": "yes"}])
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    newline = ids.index(tokenizer("\n", add_special_tokens=False)["input_ids"][0])
    assert ids[: len(mike)] == mike and ids[newline + 1 : newline + 1 + len(lucy)] == lucy
    assert "speaker_label_ids" not in processor([tone_voice(1.0, 150.0, 2)])


def test_hint_weights_the_label_embeddings_by_voice_similarity(hinted):
    model, _ = hinted
    a, b = torch.zeros(16), torch.zeros(16)
    a[0], b[1] = 1.0, 1.0
    windows = torch.stack(
        [
            torch.stack([3 * a, b, a + b, a]),  # sample 0: two registered speakers
            torch.stack([a, b, a, b]),  # sample 1: none registered
            torch.stack([b, a, b, 0.5 * a]),  # sample 2: one registered speaker
        ]
    )
    speakers = torch.stack([a, b, b])
    labels = 3 * torch.randn(3, 32)
    hints = model.speaker_label_hint(windows, speakers, torch.tensor([2, 0, 1]), labels)
    assert hints.shape == (3, 4, 32)
    labels = labels / labels.norm(dim=-1, keepdim=True)  # the hint mixes unit-length labels
    sharp = torch.softmax(torch.tensor([8.0, 0.0]), 0)
    torch.testing.assert_close(hints[0, 0], sharp[0] * labels[0] + sharp[1] * labels[1])
    torch.testing.assert_close(hints[0, 1], sharp[1] * labels[0] + sharp[0] * labels[1])
    torch.testing.assert_close(hints[0, 2], (labels[0] + labels[1]) / 2)  # equally close to both
    assert torch.count_nonzero(hints[1]) == 0
    torch.testing.assert_close(hints[2], labels[2].expand(4, -1))  # a single candidate takes it all


def test_label_embedding_is_the_mean_of_the_label_tokens(hinted):
    model, _ = hinted
    table = model.get_input_embeddings().weight
    ids = torch.tensor([[5, 7, 9], [11, -100, -100]])
    out = model.label_embeddings(ids)
    torch.testing.assert_close(out[0], table[[5, 7, 9]].mean(0))
    torch.testing.assert_close(out[1], table[11])


def test_hints_change_only_the_audio_tokens_of_registered_samples(hinted):
    model, processor = hinted
    low, high = tone_voice(3.0, 110.0, 3), tone_voice(3.0, 260.0, 4)
    audio = [np.concatenate((low[:24000], high[24000:])), high[:32000]]
    speakers = [{"Mike": low, "Lucy": high}, None]
    batch = processor(audio, speakers=speakers)
    plain = SpeakerLMForConditionalGeneration(
        SpeakerLMConfig.from_dict({**model.config.to_dict(), "speaker_label_hints": 0.0})
    )
    plain.load_state_dict(model.state_dict())
    plain.eval()
    inputs = {k: v for k, v in batch.items() if k != "attention_mask"}
    with torch.no_grad():
        hinted_embeds = model.embed_inputs(**inputs)
        plain_embeds = plain.embed_inputs(**inputs)
    changed = (hinted_embeds - plain_embeds).abs().sum(-1) > 0
    audio_positions = batch["input_ids"] == model.config.audio_token_id
    assert changed[0].any() and not changed[1].any()
    assert not (changed & ~audio_positions).any()
    # the change is the hint: unit label embeddings weighted by window-to-speaker similarity
    with torch.no_grad():
        raw = model.get_speaker_embeddings(
            2,
            batch["enrollment_features"],
            batch["enrollment_features_mask"],
            batch["enrollment_speaker_index"],
            batch["speaker_embeddings"],
        )
        tokens = int(audio_positions[0].sum())
        lengths = batch["input_features_mask"].sum(-1)
        windows = model.audio_speaker_embeddings(
            batch["speaker_features"], batch["speaker_features_mask"].sum(-1), lengths, tokens
        )
        hint = model.speaker_label_hint(
            windows[:1], raw, torch.tensor([2]), model.label_embeddings(batch["speaker_label_ids"])
        )[0]
        encoded = model.audio_encoder(batch["input_features"][:1], feature_lengths=lengths[:1])
        content, _ = model.audio_projector(encoded.last_hidden_state, encoded.output_lengths)
    # as loud as the token's audio content
    expected = hint * content[0].norm(dim=-1, keepdim=True)
    delta = (hinted_embeds - plain_embeds)[0][audio_positions[0]]
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-4)

    del batch["speaker_label_ids"]
    with pytest.raises(ValueError, match="speaker_label_ids"):
        model(**batch)


def test_hints_survive_saving_and_drive_a_constrained_batched_generate(hinted, tmp_path):
    model, processor = hinted
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = SpeakerLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    loaded_processor = SpeakerLMProcessor.from_pretrained(tmp_path)
    assert loaded.config.speaker_label_hints == 8.0
    audio = [tone_voice(2.0, 120.0, 5), tone_voice(1.2, 220.0, 6)]
    speakers = [{"Mike": tone_voice(2.0, 120.0, 7), "Lucy": tone_voice(2.0, 220.0, 8)}, None]
    inputs = loaded_processor(audio, speakers=speakers)
    prompt_length = inputs["input_ids"].shape[1]
    constraint = SpeakerLabelConstraint(
        loaded_processor.tokenizer,
        [["Mike", "Lucy"], []],
        prompt_length,
        eos_token_id=loaded.generation_config.eos_token_id,
    )
    with torch.no_grad():
        out = loaded.generate(
            **inputs, max_new_tokens=12, do_sample=False, logits_processor=LogitsProcessorList([constraint])
        )
    assert out.shape[0] == 2 and out.shape[1] > prompt_length


def test_hints_need_the_speaker_windows():
    with pytest.raises(ValueError, match="audio_speaker_window"):
        tiny_speakerlm(speaker_model="campplus", speaker_label_hints=5.0)
    with pytest.raises(ValueError, match=">= 0"):
        tiny_speakerlm(speaker_model="campplus", audio_speaker_window=1.0, speaker_label_hints=-1.0)
