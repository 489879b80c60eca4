"""ERes2NetV2 and CAM++ against funasr's copies of the 3D-Speaker reference implementations."""

import dataclasses
import functools
import pathlib

import pytest
import torch
from funasr.models.campplus.model import CAMPPlus
from funasr.models.eres2net.eres2netv2 import ERes2NetV2
from funasr.models.eres2net.model import ERes2NetV2SV
from huggingface_hub.errors import StrictDataclassClassValidationError

from speakerlm_hf.configuration_speaker_encoders import CAMPPlusConfig, ERes2NetV2Config
from speakerlm_hf.modeling_campplus import CAMPPlusModel, convert_campplus_state_dict, load_campplus
from speakerlm_hf.modeling_eres2netv2 import ERes2NetV2Model, convert_eres2netv2_state_dict, load_eres2netv2

FRAMES = 256
TOLERANCE = 1e-4

ERES2NETV2_CASES = {
    # keyword arguments of the reference constructors (our config spells baseWidth as base_width)
    "base_small": dict(m_channels=16, num_blocks=[1, 1, 1, 1], embedding_size=32),
    "w24s4ep4_small": dict(
        m_channels=16, num_blocks=[1, 1, 1, 1], embedding_size=32, baseWidth=24, scale=4, expansion=4
    ),
    "two_emb_layer_identity_shortcuts": dict(
        m_channels=8, num_blocks=[2, 1, 2, 1], embedding_size=24, two_emb_layer=True
    ),
}
CAMPPLUS_CASES = {
    "relu_small": dict(growth_rate=8, bn_size=2, init_channels=32, embedding_size=32),
    "prelu_small": dict(
        growth_rate=8, bn_size=2, init_channels=32, embedding_size=32, config_str="batchnorm-prelu"
    ),
}


def _eres2netv2_config(reference_kwargs: dict) -> ERes2NetV2Config:
    return ERes2NetV2Config(
        **{("base_width" if k == "baseWidth" else k): v for k, v in reference_kwargs.items()}
    )


def _randomise_norms(module: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (and PReLUs non-default slopes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
                shape = norm.running_mean.shape
                norm.running_mean.copy_(0.3 * torch.randn(shape, generator=generator))
                norm.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                norm.num_batches_tracked.fill_(11)
                if norm.affine:
                    norm.weight.copy_(0.7 + 0.6 * torch.rand(shape, generator=generator))
                    norm.bias.copy_(0.2 * torch.randn(shape, generator=generator))
            elif isinstance(norm, torch.nn.PReLU):
                norm.weight.copy_(0.5 * torch.rand(norm.weight.shape, generator=generator))


def _features(batch: int, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    features = torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(seed))
    return features - features.mean(dim=1, keepdim=True)


@dataclasses.dataclass
class Pair:
    """A funasr reference and our converted model (both in eval mode) with the reference's output on `features`."""

    reference: torch.nn.Module
    ours: torch.nn.Module
    config: ERes2NetV2Config | CAMPPlusConfig
    features: torch.Tensor
    expected: torch.Tensor


@functools.cache
def _eres2netv2_pair(case: str) -> Pair:
    kwargs = ERES2NETV2_CASES[case]
    torch.manual_seed(0)
    # funasr's wrapper keeps the network under `model.`, so its state dict exercises the prefix handling
    reference = ERes2NetV2SV(**kwargs) if case == "w24s4ep4_small" else ERes2NetV2(**kwargs)
    _randomise_norms(reference, seed=1)
    reference.eval()
    config = _eres2netv2_config(kwargs)
    ours = ERes2NetV2Model(config)
    ours.load_state_dict(convert_eres2netv2_state_dict(reference.state_dict(), config), strict=True)
    features = _features(batch=2)
    with torch.no_grad():
        expected = reference(features.clone())
    return Pair(reference, ours.eval(), config, features, expected)


@functools.cache
def _campplus_pair(case: str) -> Pair:
    kwargs = CAMPPLUS_CASES[case]
    torch.manual_seed(0)
    reference = CAMPPlus(**kwargs)
    _randomise_norms(reference, seed=2)
    reference.eval()
    config = CAMPPlusConfig(**kwargs)
    ours = CAMPPlusModel(config)
    ours.load_state_dict(convert_campplus_state_dict(reference.state_dict(), config), strict=True)
    features = _features(batch=2, frames=211, seed=1)
    with torch.no_grad():
        expected = reference(features.clone())
    return Pair(reference, ours.eval(), config, features, expected)


PAIRS = {
    "eres2netv2": lambda: _eres2netv2_pair("base_small"),
    "campplus": lambda: _campplus_pair("relu_small"),
}


@torch.no_grad()
def _assert_matches(pair: Pair, model: torch.nn.Module) -> None:
    actual = model(pair.features)
    assert actual.shape == pair.expected.shape == (pair.features.shape[0], model.embedding_size)
    # a degenerate (all ~0) output would make the comparison meaningless
    assert pair.expected.abs().max() > 0.1
    assert (actual - pair.expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("case", list(ERES2NETV2_CASES))
def test_eres2netv2_matches_funasr(case):
    pair = _eres2netv2_pair(case)
    _assert_matches(pair, pair.ours)


@pytest.mark.parametrize("case", list(CAMPPLUS_CASES))
def test_campplus_matches_funasr(case):
    pair = _campplus_pair(case)
    _assert_matches(pair, pair.ours)


@pytest.mark.parametrize("name", list(PAIRS))
@torch.no_grad()
def test_batch_of_equal_lengths_equals_one_at_a_time(name):
    ours = PAIRS[name]().ours
    # white noise at different levels: plain noise utterances are too alike to tell a batch mix-up apart
    features = _features(batch=3, frames=160, seed=3) * torch.tensor([0.3, 1.0, 3.0]).view(3, 1, 1)
    batched = ours(features)
    singles = torch.cat([ours(features[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, ours.embedding_size)
    assert (batched - singles).abs().max().item() <= 1e-5
    # different utterances must give different embeddings
    assert (batched[0] - batched[1]).abs().max().item() > 1e-2


@pytest.mark.parametrize("name", list(PAIRS))
def test_save_pretrained_round_trip(name, tmp_path):
    pair = PAIRS[name]()
    pair.ours.save_pretrained(tmp_path)
    reloaded = type(pair.ours).from_pretrained(tmp_path)
    assert not reloaded.training
    saved, loaded = pair.config.to_dict(), reloaded.config.to_dict()
    saved.pop("_name_or_path")
    loaded.pop("_name_or_path")
    assert loaded == saved
    reloaded_state = reloaded.state_dict()
    for key, tensor in pair.ours.state_dict().items():
        assert torch.equal(reloaded_state[key], tensor), key
    _assert_matches(pair, reloaded)


def test_load_eres2netv2_from_plain_state_dict_file(tmp_path):
    pair = PAIRS["eres2netv2"]()
    path = tmp_path / "pretrained_eres2netv2.ckpt"
    torch.save(pair.reference.state_dict(), path)
    model = load_eres2netv2(path, pair.config)
    assert not model.training
    _assert_matches(pair, model)


def test_load_campplus_from_module_prefixed_state_dict_file(tmp_path):
    pair = PAIRS["campplus"]()
    path = tmp_path / "campplus_cn_common.bin"
    torch.save({f"module.{key}": value for key, value in pair.reference.state_dict().items()}, path)
    model = load_campplus(path, pair.config)
    assert not model.training
    _assert_matches(pair, model)


def test_missing_and_unknown_keys_are_listed():
    pair = _eres2netv2_pair("w24s4ep4_small")
    state_dict = dict(pair.reference.state_dict())
    del state_dict["model.layer2.0.bns.3.running_var"]
    state_dict["model.seg_3.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="ERes2NetV2 checkpoint does not match") as error:
        convert_eres2netv2_state_dict(state_dict, pair.config)
    assert "missing keys ['stages.1.0.branch_norms.3.running_var']" in str(error.value)
    assert "unknown keys ['model.seg_3.weight']" in str(error.value)

    pair = PAIRS["campplus"]()
    state_dict = dict(pair.reference.state_dict())
    del state_dict["xvector.dense.nonlinear.batchnorm.running_mean"]
    with pytest.raises(ValueError, match=r"missing keys \['embedding_norm\.running_mean'\]"):
        convert_campplus_state_dict(state_dict, pair.config)


def test_checkpoint_for_another_configuration_is_rejected():
    pair = PAIRS["eres2netv2"]()
    # the published default configuration has far more blocks than the small test model
    with pytest.raises(
        ValueError, match=r"missing keys \['stages\.0\.1\.branch_convs\.0\.weight', .*\] and \d+ more"
    ):
        convert_eres2netv2_state_dict(pair.reference.state_dict())


class _TouchOnUnpickle:
    """An object whose unpickling would create a file: loading it must be refused, not executed."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.mark.parametrize("loader", [load_eres2netv2, load_campplus])
def test_pickle_with_code_is_refused(loader, tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "malicious.ckpt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _TouchOnUnpickle(marker)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        loader(path)
    assert not marker.exists()


def test_non_tensor_values_are_refused(tmp_path):
    path = tmp_path / "strings.ckpt"
    torch.save({"conv1.weight": torch.zeros(1), "note": "not a tensor"}, path)
    with pytest.raises(ValueError, match=r"non-tensor values under \['note'\]"):
        load_eres2netv2(path)


@pytest.mark.parametrize("name", list(PAIRS))
def test_wrong_input_shape_is_rejected(name):
    with pytest.raises(ValueError, match=r"input_features must have shape \(batch, frames, 80\)"):
        PAIRS[name]().ours(torch.zeros(1, 100, 40))


def test_config_rejects_unbuildable_settings():
    with pytest.raises(StrictDataclassClassValidationError, match="pooling_func must be one of"):
        ERes2NetV2Config(pooling_func="ASTP")
    with pytest.raises(StrictDataclassClassValidationError, match="unknown parts"):
        CAMPPlusConfig(config_str="batchnorm-gelu")
