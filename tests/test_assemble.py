"""Assembly from checkpoints in their published layouts, made here from funasr's own classes."""

import json
import pickle

import numpy as np
import pytest
import torch
import yaml
from funasr.models.campplus.model import CAMPPlus
from funasr.models.eres2net.model import ERes2NetV2
from funasr.models.sense_voice.model import SenseVoiceEncoderSmall
from transformers import Qwen2ForCausalLM

from speakerlm_hf.assemble import assemble_speakerlm, save_atomically
from speakerlm_hf.cli import main as cli_main
from speakerlm_hf.configuration_speakerlm import SPECIAL_TOKENS
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor
from speakerlm_hf.testing_utils import TINY_CORPUS, tiny_text_config
from speakerlm_hf.tokenizer_utils import train_bpe_tokenizer

ENCODER_CONF = {
    "output_size": 32,
    "attention_heads": 4,
    "linear_units": 64,
    "num_blocks": 2,
    "tp_blocks": 1,
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
FRONTEND_CONF = {
    "fs": 16000,
    "window": "hamming",
    "n_mels": 80,
    "frame_length": 25,
    "frame_shift": 10,
    "lfr_m": 7,
    "lfr_n": 6,
}


def randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            tensor.copy_(
                torch.randn(tensor.shape, generator=generator) * 0.1 + (1.0 if tensor.ndim == 1 else 0.0)
            )


def write_am_mvn(path, shift: np.ndarray, scale: np.ndarray) -> None:
    def row(values):
        return " ".join(f"{v:.6f}" for v in values)

    dim = shift.size
    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {row(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {row(scale)} ]\n</Nnet>\n"
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Folders laid out like iic/SenseVoiceSmall, the 3D-Speaker models and a Qwen2.5-Instruct model."""
    root = tmp_path_factory.mktemp("published")
    torch.manual_seed(0)

    sensevoice = root / "SenseVoiceSmall"
    sensevoice.mkdir()
    encoder = SenseVoiceEncoderSmall(input_size=560, **ENCODER_CONF).eval()
    randomise(encoder, 1)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["ctc.ctc_lo.weight"] = torch.randn(10, 32)
    state["embed.weight"] = torch.randn(16, 560)
    torch.save(state, sensevoice / "model.pt")
    (sensevoice / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "encoder": "SenseVoiceEncoderSmall",
                "encoder_conf": ENCODER_CONF,
                "frontend": "WavFrontend",
                "frontend_conf": FRONTEND_CONF,
            }
        )
    )
    rng = np.random.default_rng(0)
    shift, scale = -rng.uniform(5, 15, 560), rng.uniform(0.1, 0.3, 560)
    write_am_mvn(sensevoice / "am.mvn", shift, scale)
    (sensevoice / "configuration.json").write_text(
        json.dumps({"framework": "pytorch", "task": "auto-speech-recognition"})
    )

    eres2netv2 = root / "speech_eres2netv2_sv_zh-cn_16k-common"
    eres2netv2.mkdir()
    speaker = ERes2NetV2(feat_dim=80, embedding_size=192).eval()
    randomise(speaker, 2)
    torch.save(speaker.state_dict(), eres2netv2 / "pretrained_eres2netv2.ckpt")
    (eres2netv2 / "configuration.json").write_text(
        json.dumps({"model": {"type": "eres2netv2-sv", "pretrained_model": "pretrained_eres2netv2.ckpt"}})
    )

    campplus_dir = root / "speech_campplus_sv_zh-cn_16k-common"
    campplus_dir.mkdir()
    campplus = CAMPPlus(feat_dim=80, embedding_size=192).eval()
    randomise(campplus, 3)
    torch.save(campplus.state_dict(), campplus_dir / "campplus_cn_common.bin")

    qwen = root / "Qwen2.5-Instruct"
    tokenizer = train_bpe_tokenizer(TINY_CORPUS * 4, vocab_size=300)
    config = tiny_text_config(tokenizer)
    Qwen2ForCausalLM(config).save_pretrained(qwen)
    tokenizer.save_pretrained(qwen)
    return {
        "sensevoice": sensevoice,
        "eres2netv2": eres2netv2,
        "campplus": campplus_dir,
        "qwen": qwen,
        "modules": {"encoder": encoder, "eres2netv2": speaker, "campplus": campplus},
        "cmvn": (shift, scale),
    }


def test_assembled_parts_equal_the_originals(published):
    model, processor = assemble_speakerlm(
        str(published["sensevoice"]), str(published["eres2netv2"]), str(published["qwen"])
    )
    tokenizer = processor.tokenizer
    for token in SPECIAL_TOKENS:
        assert (
            tokenizer.convert_tokens_to_ids(token)
            < model.language_model.get_input_embeddings().weight.shape[0]
        )
    assert model.config.audio_token_id == tokenizer.convert_tokens_to_ids("<|audio_pad|>")
    assert model.language_model.get_input_embeddings().weight.shape[0] >= len(tokenizer)

    features = torch.randn(2, 30, 560)
    lengths = torch.tensor([30, 17])
    ours = model.audio_encoder(features, feature_lengths=lengths).last_hidden_state
    theirs, _ = published["modules"]["encoder"](features, lengths)
    for i, n in enumerate(lengths.tolist()):
        assert (ours[i, :n] - theirs[i, :n]).abs().max() <= 1e-4

    fbank = torch.randn(1, 200, 80)
    expected = published["modules"]["eres2netv2"](fbank)
    assert (model.speaker_encoder(fbank) - expected).abs().max() <= 1e-4

    shift, scale = published["cmvn"]
    np.testing.assert_allclose(processor.feature_extractor.cmvn_shift, shift, atol=1e-5)
    np.testing.assert_allclose(processor.feature_extractor.cmvn_scale, scale, atol=1e-5)


def test_assemble_cli_writes_a_loadable_checkpoint(published, tmp_path):
    output = tmp_path / "speakerlm"
    arguments = [
        "assemble",
        "--sensevoice",
        str(published["sensevoice"]),
        "--speaker",
        str(published["campplus"]),
        "--llm",
        str(published["qwen"]),
        "--output",
        str(output),
    ]
    assert cli_main(arguments) == 0
    model = SpeakerLMForConditionalGeneration.from_pretrained(output).eval()
    processor = SpeakerLMProcessor.from_pretrained(output)
    assert model.config.speaker_config.model_type == "campplus"
    fbank = torch.randn(1, 150, 80)
    expected = published["modules"]["campplus"](fbank)
    assert (model.speaker_encoder(fbank) - expected).abs().max() <= 1e-4
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    inputs = processor(
        audio, speakers={"Mike": np.random.default_rng(1).standard_normal(32000).astype(np.float32)}
    )
    out = model.generate(**inputs, max_new_tokens=3)
    assert out.shape[1] <= inputs["input_ids"].shape[1] + 3
    # The output folder now exists and is not empty: a second run refuses to overwrite it.
    assert cli_main(arguments) == 1


def test_pickled_objects_in_checkpoints_are_refused(published, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    hostile = tmp_path / "hostile"
    hostile.mkdir()
    with open(hostile / "pretrained_eres2netv2.ckpt", "wb") as file:
        pickle.dump({"weight": Payload()}, file)
    with pytest.raises(ValueError, match="weights_only|refused"):
        assemble_speakerlm(str(published["sensevoice"]), str(hostile), str(published["qwen"]))


def test_a_failed_save_leaves_nothing_behind(published, tmp_path):
    model, processor = assemble_speakerlm(
        str(published["sensevoice"]), str(published["eres2netv2"]), str(published["qwen"])
    )

    class Broken(Exception):
        pass

    def fail(*args, **kwargs):
        raise Broken

    processor.save_pretrained = fail
    with pytest.raises(Broken):
        save_atomically(model, processor, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
