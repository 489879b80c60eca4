"""The tiny SpeakerLM: training signal, generation, saving, freezing and LoRA."""

import numpy as np
import pytest
import torch

from speakerlm_hf.configuration_speakerlm import SPEC_AUGMENT_DEFAULTS, SpeakerLMConfig
from speakerlm_hf.modeling_speakerlm import (
    TRAINABLE_PARTS,
    SpeakerLMForConditionalGeneration,
    feature_lengths,
    spec_augment,
)
from speakerlm_hf.testing_utils import tiny_speakerlm, train_on_batch

TARGETS = ["Mike: the release is planned for Tuesday.", "spk0: good morning everyone.\nspk1: thanks."]


def noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def recordings():
    return [noise(2.0, 1), noise(3.0, 2)], [{"Mike": noise(3.0, 3)}, None]


@pytest.fixture(scope="module")
def trained(recordings):
    """A tiny model overfitted on two recordings; returns (model, processor, losses)."""
    audio, speakers = recordings
    model, processor = tiny_speakerlm()
    losses = train_on_batch(model, processor(audio, speakers=speakers, text=TARGETS), steps=60, lr=5e-3)
    return model.eval(), processor, losses


def test_loss_falls_when_overfitting_one_batch(trained):
    _, _, losses = trained
    assert losses[-1] < 0.1 * losses[0], losses


def test_batched_generation_with_cache_equals_without_and_reproduces_targets(trained, recordings):
    model, processor, _ = trained
    audio, speakers = recordings
    inputs = processor(audio, speakers=speakers)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the batch must be left-padded"
    with_cache = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    without_cache = model.generate(**inputs, max_new_tokens=24, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without_cache)
    new_tokens = with_cache[:, inputs["input_ids"].shape[1] :]
    assert processor.batch_decode(new_tokens) == TARGETS
    assert processor.post_process(new_tokens) == [
        [{"speaker": "Mike", "text": "the release is planned for Tuesday."}],
        [{"speaker": "spk0", "text": "good morning everyone."}, {"speaker": "spk1", "text": "thanks."}],
    ]
    # Each recording alone gives the same answer as in the padded batch.
    alone = processor([audio[1]], speakers=[None])
    single = model.generate(**alone, max_new_tokens=24, do_sample=False)
    assert processor.batch_decode(single[:, alone["input_ids"].shape[1] :]) == TARGETS[1:]


def test_audio_and_enrollment_reach_the_loss(recordings):
    audio, speakers = recordings
    model, processor = tiny_speakerlm()
    batch = processor(audio, speakers=speakers, text=TARGETS)
    batch["input_features"].requires_grad_(True)
    batch["enrollment_features"].requires_grad_(True)
    for part in ("speaker_encoder",):
        getattr(model, part).requires_grad_(True)
    model(**batch).loss.backward()
    frames = batch["input_features_mask"].bool()
    assert batch["input_features"].grad[frames].abs().sum() > 0
    assert batch["input_features"].grad[~frames].abs().sum() == 0, "padded frames must not matter"
    assert batch["enrollment_features"].grad.abs().sum() > 0


def test_save_and_load_round_trip(trained, recordings, tmp_path):
    model, processor, _ = trained
    audio, speakers = recordings
    inputs = processor(audio, speakers=speakers)
    model.save_pretrained(tmp_path)
    config = SpeakerLMConfig.from_pretrained(tmp_path)
    assert config.speaker_config.model_type == "eres2netv2"
    assert config.audio_token_id == model.config.audio_token_id
    loaded = SpeakerLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        before, after = model.state_dict(), loaded.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
        # Equal weights; kernels may pick another summation order for other memory layouts.
        torch.testing.assert_close(model(**inputs).logits, loaded(**inputs).logits, atol=1e-5, rtol=1e-5)
        assert torch.equal(
            model.generate(**inputs, max_new_tokens=12, do_sample=False),
            loaded.generate(**inputs, max_new_tokens=12, do_sample=False),
        )


def test_precomputed_embeddings_equal_enrollment_average(recordings):
    model, processor = tiny_speakerlm()
    audio, _ = recordings
    clip = noise(25.0, 7)
    by_clip = processor([audio[0]], speakers={"Mike": clip})
    pieces = by_clip["enrollment_features"]
    assert pieces.shape[0] == 3 and int(by_clip["enrollment_features_mask"].sum(-1).max()) <= 1000
    with torch.no_grad():
        embedding = model.embed_enrollment_pieces(pieces, by_clip["enrollment_features_mask"]).mean(0)
        by_embedding = processor([audio[0]], speakers={"Mike": embedding.numpy()})
        assert "enrollment_features" not in by_embedding
        a = model(**by_clip).logits
        b = model(**by_embedding).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_each_piece_is_embedded_as_if_alone():
    model, processor = tiny_speakerlm()
    batch = processor([noise(1.0, 1)], speakers={"A": noise(4.0, 2), "B": noise(2.5, 3)})
    mask = batch["enrollment_features_mask"]
    with torch.no_grad():
        together = model.embed_enrollment_pieces(batch["enrollment_features"], mask)
        for i in range(2):
            length = int(mask[i].sum())
            alone = model.speaker_encoder(batch["enrollment_features"][i : i + 1, :length])
            torch.testing.assert_close(together[i : i + 1], alone)


@pytest.mark.parametrize(
    "parts",
    [
        ("audio_projector", "lora"),
        ("audio_projector", "speaker_projector"),
        ("audio_encoder", "audio_projector", "speaker_projector"),
        ("audio_encoder", "audio_projector", "speaker_projector", "lora"),
    ],
)
def test_frozen_parts_stay_frozen(parts, recordings):
    audio, speakers = recordings
    model, processor = tiny_speakerlm()
    model.add_lora(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    model.set_trainable_parts(parts)
    assert model.trainable_parts() == [p for p in TRAINABLE_PARTS if p in parts]
    model.train()
    assert not model.speaker_encoder.training, "a frozen extractor keeps its BatchNorm statistics"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = processor(audio, speakers=speakers, text=TARGETS)
    for _ in range(2):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, param in model.named_parameters():
        part = "lora" if "lora_" in name else name.split(".", 1)[0]
        if part in parts:
            continue
        assert torch.equal(param, before[name]), f"{name} changed although {part} is frozen"
    changed = {
        ("lora" if "lora_" in n else n.split(".", 1)[0])
        for n, p in model.named_parameters()
        if not torch.equal(p, before[n])
    }
    assert changed == set(parts)
    for name, buffer in model.named_buffers():
        if name.startswith("speaker_encoder"):
            assert torch.equal(buffer, buffers[name]), name


def test_merged_lora_gives_the_same_outputs(recordings):
    audio, speakers = recordings
    model, processor = tiny_speakerlm()
    model.add_lora(r=4, alpha=8)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    inputs = processor(audio, speakers=speakers)
    with torch.no_grad():
        before = model(**inputs).logits
        model.merge_lora()
        after = model(**inputs).logits
    assert not model.has_lora and model.config.lora is None
    assert not any("lora" in name for name in model.state_dict())
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-4)


def test_unknown_part_and_lora_without_adapters_are_refused():
    model, _ = tiny_speakerlm()
    with pytest.raises(ValueError, match="unknown model parts"):
        model.set_trainable_parts(["encoder"])
    with pytest.raises(ValueError, match="add_lora"):
        model.set_trainable_parts(["lora"])


def test_placeholder_count_mismatch_is_a_clear_error(recordings):
    model, processor = tiny_speakerlm()
    inputs = processor([recordings[0][0]])
    inputs["input_features"] = inputs["input_features"][:, :10]
    inputs["input_features_mask"] = inputs["input_features_mask"][:, :10]
    with pytest.raises(ValueError, match="audio placeholder tokens"):
        model(**inputs)
    registered = processor([recordings[0][0]], speakers={"Mike": np.zeros(16, np.float32)})
    del registered["speaker_embeddings"]
    with pytest.raises(ValueError, match="registers speakers"):
        model(**registered)


def test_campplus_extractor_builds_and_runs(recordings):
    model, processor = tiny_speakerlm(speaker_model="campplus")
    inputs = processor([recordings[0][0]], speakers={"Lucy": noise(2.0, 5)})
    with torch.no_grad():
        assert model(**inputs).logits.shape[-1] == model.config.text_config.vocab_size


def test_spec_augment_masks_bands_and_stretches_only_while_the_encoder_trains(recordings):
    audio, speakers = recordings
    model, processor = tiny_speakerlm(spec_augment={"num_mel_bins": 80, "time_mask_rate": 0.1})
    assert model.config.spec_augment == {**SPEC_AUGMENT_DEFAULTS, "time_mask_rate": 0.1}
    inputs = processor(audio, speakers=speakers)
    features = inputs["input_features"]
    stacks = features.shape[-1] // 80
    lengths = feature_lengths(features, inputs.get("input_features_mask"))
    torch.manual_seed(0)
    masked = spec_augment(features, lengths, model.config.spec_augment)
    zeroed = (masked == 0) & (features != 0)
    for row, length in enumerate(lengths.tolist()):
        cut = zeroed[row, :length].reshape(length, stacks, 80)
        # the same mel bins in every stacked frame; whole frames for the time masks
        bands = cut.all(0)
        assert torch.equal(bands.all(0), bands.any(0)) and 0 < int(bands.any(0).sum()) <= 20
        frames = cut.flatten(1).all(1)
        assert 0 < int(frames.sum()) <= round(0.1 * length) * 5
        kept = ~(bands.any(0)[None, None, :] | frames[:, None, None]).expand(length, stacks, 80)
        assert torch.equal(
            masked[row, :length].reshape(length, stacks, 80)[kept],
            features[row, :length].reshape(length, stacks, 80)[kept],
        )

    seen = []
    model.audio_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(args[0].clone()), with_kwargs=True
    )
    model.eval()
    with torch.no_grad():
        model.encode_audio(features, inputs.get("input_features_mask"))
    model.train()
    model.set_trainable_parts(["audio_projector"])  # a frozen encoder hears clean features
    with torch.no_grad():
        model.encode_audio(features, inputs.get("input_features_mask"))
    model.set_trainable_parts(["audio_encoder", "audio_projector"])
    with torch.no_grad():
        model.encode_audio(features, inputs.get("input_features_mask"))
    assert torch.equal(seen[0], features) and torch.equal(seen[1], features)
    assert not torch.equal(seen[2], features) and (seen[2] == 0).sum() > (features == 0).sum()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"freq_masks": -1}, "integers"),
        ({"num_mel_bins": 81}, "divide"),
        ({"time_mask_rate": 2}, r"\[0, 1\]"),
        ({"bogus": 1}, "dict of"),
    ],
)
def test_bad_spec_augment_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        tiny_speakerlm(spec_augment=settings)
