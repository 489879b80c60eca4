"""SenseVoice SANM encoder: equivalence with funasr's SenseVoiceEncoderSmall, padding, loading, conversion."""

import pytest
import torch
import yaml

from speakerlm_hf.configuration_sensevoice import SenseVoiceEncoderConfig
from speakerlm_hf.modeling_sensevoice import (
    SenseVoiceEncoderModel,
    convert_sensevoice_state_dict,
    load_sensevoice_encoder,
)

sense_voice = pytest.importorskip("funasr.models.sense_voice.model")

INPUT_SIZE = 560
TINY_ENCODER_CONF = {
    "output_size": 64,
    "attention_heads": 4,
    "linear_units": 128,
    "num_blocks": 3,
    "tp_blocks": 2,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder",
    "normalize_before": True,
    "kernel_size": 11,
    "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}
PUBLISHED_ENCODER_CONF = {
    **TINY_ENCODER_CONF,
    "output_size": 512,
    "linear_units": 2048,
    "num_blocks": 50,
    "tp_blocks": 20,
}


def build_funasr_encoder(encoder_conf: dict, seed: int = 0) -> torch.nn.Module:
    """funasr's encoder in eval mode with every parameter perturbed (its norms start at exactly 1 and 0)."""
    torch.manual_seed(seed)
    encoder = sense_voice.SenseVoiceEncoderSmall(input_size=INPUT_SIZE, **encoder_conf).eval()
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return encoder


def published_state_dict(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights laid out as in SenseVoiceSmall's model.pt, with CTC and query-embedding keys."""
    state_dict = {f"encoder.{key}": value for key, value in encoder.state_dict().items()}
    state_dict["ctc.ctc_lo.weight"] = torch.randn(10, encoder.output_size())
    state_dict["ctc.ctc_lo.bias"] = torch.randn(10)
    state_dict["embed.weight"] = torch.randn(16, INPUT_SIZE)
    return state_dict


def funasr_forward(encoder: torch.nn.Module, features: torch.Tensor, lengths: torch.Tensor):
    with torch.no_grad():
        # funasr scales its input in place: give it a copy.
        return encoder(features.clone(), lengths)


@pytest.fixture(scope="module")
def funasr_encoder() -> torch.nn.Module:
    return build_funasr_encoder(TINY_ENCODER_CONF)


@pytest.fixture(scope="module")
def ours(funasr_encoder) -> SenseVoiceEncoderModel:
    config = SenseVoiceEncoderConfig.from_funasr_encoder_conf(TINY_ENCODER_CONF, input_size=INPUT_SIZE)
    model = SenseVoiceEncoderModel(config).eval()
    model.load_state_dict(convert_sensevoice_state_dict(published_state_dict(funasr_encoder)), strict=True)
    return model


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 40, INPUT_SIZE, generator=generator), torch.tensor([40, 23, 7])


def test_matches_funasr_on_padded_batch(funasr_encoder, ours, batch):
    features, lengths = batch
    expected, expected_lengths = funasr_forward(funasr_encoder, features, lengths)
    with torch.no_grad():
        output = ours(features, lengths)
    assert output.last_hidden_state.shape == (3, 40, 64)
    # Every frame, padded ones included, equals funasr.
    assert (output.last_hidden_state - expected).abs().max().item() <= 1e-4
    assert output.output_lengths.tolist() == expected_lengths.tolist() == [40, 23, 7]
    assert expected.abs().mean().item() > 0.1


@pytest.mark.parametrize(("kernel_size", "sanm_shift"), [(5, 2), (11, 3)])
def test_matches_funasr_with_shifted_fsmn_kernel(kernel_size, sanm_shift, batch):
    encoder_conf = {**TINY_ENCODER_CONF, "kernel_size": kernel_size, "sanm_shfit": sanm_shift}
    funasr_encoder = build_funasr_encoder(encoder_conf, seed=2)
    model = SenseVoiceEncoderModel(SenseVoiceEncoderConfig.from_funasr_encoder_conf(encoder_conf)).eval()
    model.load_state_dict(convert_sensevoice_state_dict(funasr_encoder.state_dict()))
    features, lengths = batch
    expected, _ = funasr_forward(funasr_encoder, features, lengths)
    with torch.no_grad():
        actual = model(features, lengths).last_hidden_state
    assert (actual - expected).abs().max().item() <= 1e-4


def test_padding_does_not_change_valid_frames(ours):
    generator = torch.Generator().manual_seed(3)
    long_sample = torch.randn(1, 31, INPUT_SIZE, generator=generator)
    short_sample = torch.randn(1, 12, INPUT_SIZE, generator=generator)
    # Padding filled with large noise, so any leak through attention or the FSMN memory would show.
    padding = 50 * torch.randn(1, 19, INPUT_SIZE, generator=generator)
    features = torch.cat([long_sample, torch.cat([short_sample, padding], dim=1)])
    with torch.no_grad():
        batched = ours(features, torch.tensor([31, 12])).last_hidden_state
        alone_long = ours(long_sample).last_hidden_state
        alone_short = ours(short_sample).last_hidden_state
    assert (batched[0] - alone_long[0]).abs().max().item() <= 1e-5
    assert (batched[1, :12] - alone_short[0]).abs().max().item() <= 1e-5


def test_save_pretrained_round_trip(ours, batch, tmp_path):
    ours.save_pretrained(tmp_path)
    reloaded = SenseVoiceEncoderModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.to_diff_dict() | {"_name_or_path": ""} == ours.config.to_diff_dict() | {
        "_name_or_path": ""
    }
    features, lengths = batch
    with torch.no_grad():
        before = ours(features, lengths).last_hidden_state
        after = reloaded(features, lengths).last_hidden_state
    assert torch.equal(before, after)


def test_load_sensevoice_encoder_from_published_layout(funasr_encoder, batch, tmp_path):
    funasr_config = {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": TINY_ENCODER_CONF,
        "model": "SenseVoiceSmall",
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "lfr_m": 7, "lfr_n": 6},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(funasr_config))
    torch.save(published_state_dict(funasr_encoder), tmp_path / "model.pt")

    model = load_sensevoice_encoder(str(tmp_path))
    assert not model.training
    assert (model.config.input_size, model.config.hidden_size, model.config.num_blocks) == (560, 64, 3)
    features, lengths = batch
    expected, _ = funasr_forward(funasr_encoder, features, lengths)
    with torch.no_grad():
        actual = model(features, lengths).last_hidden_state
    assert (actual - expected).abs().max().item() <= 1e-4


def test_load_sensevoice_encoder_rejects_mismatched_config(funasr_encoder, tmp_path):
    funasr_config = {
        "encoder": "SenseVoiceEncoderSmall",
        "input_size": 560,
        "encoder_conf": {**TINY_ENCODER_CONF, "tp_blocks": 3},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(funasr_config))
    torch.save(published_state_dict(funasr_encoder), tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"tp_layers\.2\.mlp\.fc1\.weight"):
        load_sensevoice_encoder(tmp_path)


def test_convert_bare_encoder_state_dict_matches_prefixed(funasr_encoder):
    bare = convert_sensevoice_state_dict(funasr_encoder.state_dict())
    prefixed = convert_sensevoice_state_dict(published_state_dict(funasr_encoder))
    assert bare.keys() == prefixed.keys()
    assert all(torch.equal(bare[key], prefixed[key]) for key in bare)
    assert bare["layers.0.self_attn.qkv_proj.weight"].shape == (3 * 64, INPUT_SIZE)
    assert torch.equal(bare["tp_layers.1.mlp.fc2.bias"], funasr_encoder.tp_encoders[1].feed_forward.w_2.bias)
    assert not any(key.startswith(("ctc", "embed")) for key in prefixed)


def test_convert_reports_missing_and_unknown_keys(funasr_encoder):
    state_dict = published_state_dict(funasr_encoder)
    del state_dict["encoder.encoders.0.self_attn.fsmn_block.weight"]
    with pytest.raises(ValueError, match=r"missing keys.*layers\.1\.self_attn\.fsmn\.weight"):
        convert_sensevoice_state_dict(state_dict)

    state_dict = published_state_dict(funasr_encoder)
    state_dict["encoder.encoders.0.self_attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unknown.*encoders\.0\.self_attn\.extra\.weight"):
        convert_sensevoice_state_dict(state_dict)


def test_config_from_published_encoder_conf():
    config = SenseVoiceEncoderConfig.from_funasr_encoder_conf(PUBLISHED_ENCODER_CONF)
    assert config.to_dict() == SenseVoiceEncoderConfig().to_dict()
    assert (config.hidden_size, config.intermediate_size, config.num_blocks, config.tp_blocks) == (
        512,
        2048,
        50,
        20,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("selfattention_layer_type", "selfattn"),
        ("pos_enc_class", "ScaledPositionalEncoding"),
        ("normalize_before", False),
    ],
)
def test_config_rejects_unsupported_funasr_settings(key, value):
    with pytest.raises(ValueError, match=key):
        SenseVoiceEncoderConfig.from_funasr_encoder_conf({**PUBLISHED_ENCODER_CONF, key: value})


def test_config_rejects_unknown_funasr_key_and_bad_sizes():
    with pytest.raises(ValueError, match="lora_rank"):
        SenseVoiceEncoderConfig.from_funasr_encoder_conf({**PUBLISHED_ENCODER_CONF, "lora_rank": 8})
    with pytest.raises(ValueError, match="num_attention_heads"):
        SenseVoiceEncoderConfig(hidden_size=66, num_attention_heads=4)


def test_forward_rejects_bad_lengths(ours):
    with pytest.raises(ValueError, match="feature_lengths"):
        ours(torch.zeros(2, 5, INPUT_SIZE), torch.tensor([5, 6]))
    with pytest.raises(ValueError, match="input_features"):
        ours(torch.zeros(2, 5, 80))


def test_gradient_checkpointing_gives_same_gradients(batch):
    config = SenseVoiceEncoderConfig(
        hidden_size=32, intermediate_size=64, num_blocks=2, tp_blocks=1, dropout=0.0, attention_dropout=0.0
    )
    torch.manual_seed(4)
    model = SenseVoiceEncoderModel(config).train()
    features, lengths = batch

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(features, lengths).last_hidden_state.pow(2).mean().backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    assert model.layers[1].gradient_checkpointing
    assert all(torch.allclose(plain[name], checkpointed[name], atol=1e-6) for name in plain)
    assert plain["layers.0.self_attn.fsmn.weight"].abs().sum().item() > 0
