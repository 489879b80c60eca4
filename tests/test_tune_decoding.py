"""Choosing a model's decoding (joint CTC weight, beams) on held-out sessions: `training.tiny.tune_decoding`."""

import json
import shutil

import pytest
from transformers import GenerationConfig

from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
from speakerlm_hf.generation_speakerlm import resolve_ctc_weight
from speakerlm_hf.transcribe import DEFAULT_MODEL
from training.tiny.tune_decoding import main as tune_decoding
from training.tiny.tune_decoding import write_decoding


def test_tuning_scores_each_decoding_and_applies_the_best(tmp_path, rendered_meetings):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    report_path = tmp_path / "decoding.json"
    tune_decoding(
        ["--model", str(model), "--data", str(rendered_meetings), "--first", "1", "--count", "2"]
        + ["--extra-speakers", "2", "--ctc-weight", "0.0", "0.7", "--num-beams", "1", "2"]
        + ["--output", str(report_path), "--apply"]
    )
    report = json.loads(report_path.read_text())
    assert report["sessions"] == [1, 3]
    grid = {(entry["ctc_weight"], entry["num_beams"]): entry for entry in report["grid"]}
    assert set(grid) == {(0.0, 1), (0.0, 2), (0.7, 1), (0.7, 2)}
    for entry in grid.values():
        rates = (entry["no"]["cpcer"], entry["match"]["sacer"], entry["over"]["sacer"])
        assert entry["mean_rate"] == pytest.approx(sum(rates) / 3)
        assert entry["no"]["sessions"] == entry["over"]["sessions"] == 2
    current = report["current"]
    best = min(
        grid,
        key=lambda key: (
            round(grid[key]["mean_rate"], 6),
            abs(key[0] - current["ctc_weight"]) + abs(key[1] - current["num_beams"]),
        ),
    )
    assert (report["chosen"]["ctc_weight"], report["chosen"]["num_beams"]) == best
    # the LLM alone (weight 0) reads these unseen voices far worse than with the audio's CTC
    assert grid[(0.0, 1)]["no"]["cer"] > grid[(0.7, 1)]["no"]["cer"]
    config = SpeakerLMConfig.from_pretrained(model)
    generation = GenerationConfig.from_pretrained(model)
    assert resolve_ctc_weight(config, None) == best[0]
    assert (generation.num_beams, generation.length_penalty) == (best[1], 0.0 if best[1] > 1 else 1.0)


def test_writing_a_decoding_keeps_the_rest_of_the_model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "generation_config.json"):
        shutil.copy(DEFAULT_MODEL / name, folder / name)
    before = {
        name: json.loads((folder / name).read_text()) for name in ("config.json", "generation_config.json")
    }
    write_decoding(str(folder), 0.55, 3)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    assert config.pop("decoding_ctc_weight") == 0.55
    before["config.json"].pop("decoding_ctc_weight", None)
    assert config == before["config.json"]
    assert (generation.pop("num_beams"), generation.pop("length_penalty")) == (3, 0.0)
    assert generation == {
        k: v for k, v in before["generation_config.json"].items() if k not in ("num_beams", "length_penalty")
    }
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json"]
    with pytest.raises(ValueError, match="CTC weight"):
        write_decoding(str(folder), 1.0, 1)
    with pytest.raises(ValueError, match="beam"):
        write_decoding(str(folder), 0.5, 0)
    no_ctc = tmp_path / "no-ctc"
    no_ctc.mkdir()
    (no_ctc / "config.json").write_text(json.dumps({**config, "audio_ctc": False}))
    with pytest.raises(ValueError, match="audio_ctc"):
        write_decoding(str(no_ctc), 0.5, 2)
    assert json.loads((no_ctc / "config.json").read_text())["audio_ctc"] is False
