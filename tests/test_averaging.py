"""`speakerlm average`: weighted checkpoint averaging, LoRA merged first, mismatches refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from speakerlm_hf import cli
from speakerlm_hf.averaging import average_checkpoints
from speakerlm_hf.hub import load_exported
from speakerlm_hf.testing_utils import tiny_speakerlm


def save(model, processor, folder):
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("average")
    first, processor = tiny_speakerlm(seed=0)
    second, _ = tiny_speakerlm(seed=1)
    # the frozen extractor is the same in both, as in runs that start from one model
    second.speaker_encoder.load_state_dict(first.speaker_encoder.state_dict())
    with torch.no_grad():  # batch-norm step counters that differ: taken from the first checkpoint
        for name, buffer in second.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.fill_(7)
    return save(first, processor, root / "a"), save(second, processor, root / "b"), root


def test_weighted_average_of_every_float_tensor(checkpoints, tmp_path, capsys):
    a, b, _ = checkpoints
    out = tmp_path / "soup"
    assert cli.main(["average", str(out), str(a), str(b), "--weights", "1", "3"]) == 0
    assert "averaged over 2 checkpoints" in capsys.readouterr().out
    first, second, soup = (load_file(folder / "model.safetensors") for folder in (a, b, out))
    assert soup.keys() == first.keys()
    differing = 0
    for name, tensor in soup.items():
        if not tensor.is_floating_point():
            assert torch.equal(tensor, first[name]), name
            continue
        expected = (first[name].double() + 3 * second[name].double()) / 4
        torch.testing.assert_close(tensor.double(), expected, atol=1e-6, rtol=1e-6)
        if name.startswith("speaker_encoder"):
            assert torch.equal(tensor, first[name]), name  # equal inputs stay bit-identical
        differing += not torch.equal(first[name], second[name])
    assert differing > 10
    assert any(n.endswith("num_batches_tracked") and not torch.equal(first[n], second[n]) for n in first)
    model, processor = load_exported(out)
    assert processor.tokenizer.get_vocab() == load_exported(a)[1].tokenizer.get_vocab()

    def settings(config):  # where it was loaded from and the remote-code map are not settings
        return {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "auto_map")}

    assert settings(model.config) == settings(load_exported(a)[0].config)


def test_lora_checkpoints_are_merged_before_averaging(checkpoints, tmp_path):
    a, _, _ = checkpoints
    model, processor = load_exported(a)
    model.add_lora(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    lora = save(model, processor, tmp_path / "lora")
    model.merge_lora()
    merged = save(model, processor, tmp_path / "merged")
    average_checkpoints([lora, merged], tmp_path / "soup")
    soup, expected = (
        load_file(tmp_path / "soup" / "model.safetensors"),
        load_file(merged / "model.safetensors"),
    )
    assert soup.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(soup[name], expected[name], atol=1e-6, rtol=1e-5)


def test_mismatched_or_bad_requests_are_refused_and_write_nothing(checkpoints, tmp_path, capsys):
    a, b, root = checkpoints
    other, other_processor = tiny_speakerlm("campplus", seed=2)
    campplus = save(other, other_processor, root / "campplus")
    out = tmp_path / "soup"
    with pytest.raises(ValueError, match="campplus is not the same model.*missing"):
        average_checkpoints([a, campplus], out)
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([a], out)
    with pytest.raises(ValueError, match="3 weights given for 2"):
        average_checkpoints([a, b], out, weights=[1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        average_checkpoints([a, b], out, weights=[1, -1])
    with pytest.raises(ValueError, match="also a checkpoint"):
        average_checkpoints([a, b], b)
    assert not out.exists() and not list(tmp_path.glob(".speakerlm-*"))
    with pytest.raises(ValueError, match="no config.json"):
        average_checkpoints([a, tmp_path], out)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["average", str(out), str(a), str(b)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
