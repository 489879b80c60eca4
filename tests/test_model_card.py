"""The generated model card: metadata, model-index from the results JSON, body, and bad inputs."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from speakerlm_hf.model_card import (
    CardInfo,
    load_results,
    main,
    meta_model,
    parameter_counts,
    render_model_card,
    write_model_card,
)
from speakerlm_hf.testing_utils import tiny_speakerlm

REPO_ROOT = Path(__file__).resolve().parents[1]

# Several datasets and all three registration modes; Δ given for one entry, computed for the others.
RESULTS = {
    "results": [
        {
            "dataset": "AliMeeting-Eval",
            "dataset_id": "alimeeting",
            "split": "eval",
            "registration": "no-regist",
            "metrics": {"CER": 13.9, "cpCER": 16.05},
        },
        {
            "dataset": "AliMeeting-Eval",
            "dataset_id": "alimeeting",
            "split": "eval",
            "registration": "match-regist",
            "metrics": {"cer": 13.98, "sacer": 15.57, "Δsa": 1.59},
        },
        {
            "dataset": "AliMeeting-Eval",
            "dataset_id": "alimeeting",
            "split": "eval",
            "registration": "over",
            "metrics": {"cer": 13.96, "sacer": 15.71},
        },
        {
            "dataset": "AISHELL4-Eval",
            "dataset_id": "aishell4",
            "split": "eval",
            "registration": "No_Regist",
            "metrics": {"cer": 15.02, "cpcer": 18.37, "delta_cp": 3.35},
        },
        {"dataset": "AISHELL5-Eval", "registration": "no-regist", "metrics": {"cer": 40.5, "cpcer": 47.81}},
    ]
}
# (dataset type, registration, metric) -> value, as the model-index must carry them.
EXPECTED = {
    ("alimeeting", "no-regist", "cer"): 13.9,
    ("alimeeting", "no-regist", "cpcer"): 16.05,
    ("alimeeting", "no-regist", "delta_cp"): 2.15,
    ("alimeeting", "match-regist", "cer"): 13.98,
    ("alimeeting", "match-regist", "sacer"): 15.57,
    ("alimeeting", "match-regist", "delta_sa"): 1.59,
    ("alimeeting", "over-regist", "cer"): 13.96,
    ("alimeeting", "over-regist", "sacer"): 15.71,
    ("alimeeting", "over-regist", "delta_sa"): 1.75,
    ("aishell4", "no-regist", "cer"): 15.02,
    ("aishell4", "no-regist", "cpcer"): 18.37,
    ("aishell4", "no-regist", "delta_cp"): 3.35,
    ("aishell5-eval", "no-regist", "cer"): 40.5,
    ("aishell5-eval", "no-regist", "cpcer"): 47.81,
    ("aishell5-eval", "no-regist", "delta_cp"): 7.31,
}
INFO = CardInfo(
    model_name="SpeakerLM-Tiny",
    repo_id="me/SpeakerLM-Tiny",
    languages=["zh", "en"],
    datasets=["alimeeting", "aishell4"],
    base_models={"speaker_encoder": "me/eres2netv2"},
    training_data="Two synthetic sessions.",
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny model and processor (what the card generator reads) and the model."""
    model, processor = tiny_speakerlm()
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model


@pytest.fixture()
def results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS), encoding="utf-8")
    return path


def front_matter(text: str) -> dict:
    _, yaml_text, _ = text.split("---\n", 2)
    return yaml.safe_load(yaml_text)


def test_card_parses_and_its_model_index_carries_the_results(saved, results_file):
    folder, _ = saved
    path = write_model_card(folder, INFO, results_file)
    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "automatic-speech-recognition"
    assert "speaker-diarization-recognition" in data.tags
    assert data.base_model == ["Qwen/Qwen2.5-7B-Instruct", "FunAudioLLM/SenseVoiceSmall", "me/eres2netv2"]
    assert data.language == ["zh", "en"] and data.datasets == ["alimeeting", "aishell4"]
    assert data.license == "apache-2.0" and data.model_name == "SpeakerLM-Tiny"
    assert data.metrics == ["cer", "cpcer", "delta_cp", "sacer", "delta_sa"]

    found = {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert found.keys() == EXPECTED.keys()
    for key, value in EXPECTED.items():
        assert found[key] == pytest.approx(value, abs=1e-9), key
    assert all(r.task_type == "automatic-speech-recognition" for r in data.eval_results)
    assert {r.dataset_split for r in data.eval_results} == {"eval", "test"}

    model_index = front_matter(path.read_text(encoding="utf-8"))["model-index"]
    assert model_index[0]["name"] == "SpeakerLM-Tiny"
    assert len(model_index[0]["results"]) == 5, "one result per dataset split and registration mode"
    match = next(r for r in model_index[0]["results"] if r["dataset"]["config"] == "match-regist")
    assert match["dataset"] == {
        "name": "AliMeeting-Eval",
        "type": "alimeeting",
        "config": "match-regist",
        "split": "eval",
    }
    assert [(m["name"], m["value"]) for m in match["metrics"]] == [
        ("CER", 13.98),
        ("saCER", 15.57),
        ("Δsa", 1.59),
    ]


def test_card_body_has_the_results_table_architecture_and_citation(saved, results_file):
    folder, model = saved
    text = render_model_card(folder, INFO, results_file).content
    assert "| AliMeeting-Eval | eval | Over-Regist | 13.96 | – | – | 15.71 | 1.75 |" in text
    assert "| AISHELL5-Eval | test | No-Regist | 40.50 | 47.81 | 7.31 | – | – |" in text
    counts = parameter_counts(meta_model(folder))
    assert sum(counts.values()) == model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert counts == parameter_counts(model) and counts["speaker_projector"] == 16 * 32 + 32
    assert f"**{sum(counts.values()) / 1e3:.2f} K**" in text
    assert "| Speaker projector | linear 16 -> 32 | 544 |" in text
    assert "2 frames -> 1 token, 120 ms per audio token" in text
    assert "**Data.** Two synthetic sessions." in text
    assert "merged into the LLM weights" in text
    assert "arXiv:2508.06372" in text and "Yin, Han" in text
    assert 'model="me/SpeakerLM-Tiny"' in text


def test_card_without_results_has_no_model_index(saved, tmp_path):
    folder, _ = saved
    card = render_model_card(folder, CardInfo(base_models={"llm": None, "audio_encoder": None}))
    assert card.data.eval_results is None and card.data.base_model is None
    assert "model-index" not in front_matter(str(card))
    assert "No evaluation results were supplied" in card.content


def test_fraction_results_are_converted_to_percent():
    entries = load_results(
        {
            "unit": "fraction",
            "results": [
                {"dataset": "X", "registration": "no-regist", "metrics": {"cer": 0.1, "cpcer": 0.125}}
            ],
        }
    )
    assert entries[0].metrics == pytest.approx({"cer": 10.0, "cpcer": 12.5, "delta_cp": 2.5})


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"dataset": "X", "registration": "partial", "metrics": {"cer": 1}}, "registration must be one of"),
        (
            {"dataset": "X", "registration": "no-regist", "metrics": {"cer": 10, "cpcer": 12, "delta_cp": 1}},
            "Δcp = 1",
        ),
        (
            {"dataset": "X", "registration": "no-regist", "metrics": {"cer": 10, "sacer": 12}},
            "saCER needs registered",
        ),
        ({"dataset": "X", "registration": "no-regist", "metrics": {"wer": 10}}, "unknown metric 'wer'"),
        ({"dataset": "X", "registration": "no-regist", "metrics": {"cer": -1}}, "cannot be negative"),
        ({"dataset": "X", "registration": "no-regist", "metrics": {"cer": "10"}}, "finite number"),
        ({"dataset": "X", "registration": "no-regist", "metrics": {}}, "non-empty mapping"),
        ({"registration": "no-regist", "metrics": {"cer": 1}}, "'dataset' must be"),
        ({"dataset": "X", "registration": "no-regist", "metrics": {"cer": 1}, "notes": ""}, "unknown field"),
    ],
)
def test_bad_results_are_refused_naming_the_entry(tmp_path, entry, message):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"results": [{"dataset": "Y", "registration": "no-regist", "metrics": {"cer": 1}}, entry]})
    )
    with pytest.raises(ValueError, match=message) as error:
        load_results(path)
    assert f"{path}, results[1]" in str(error.value)


def test_duplicate_entries_and_unreadable_files_are_refused(tmp_path):
    entry = {"dataset": "X", "registration": "no-regist", "metrics": {"cer": 1}}
    with pytest.raises(ValueError, match="listed twice"):
        load_results({"results": [entry, entry]})
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON or YAML"):
        load_results(path)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "missing.json")


def test_card_info_file_and_the_example_load(tmp_path):
    example = CardInfo.from_file(REPO_ROOT / "hub_card" / "card_info.example.yaml")
    assert example.model_name == "SpeakerLM-7B" and example.base_models["llm"] == "Qwen/Qwen2.5-7B-Instruct"
    assert CardInfo.from_dict({"languages": "en"}).languages == ["en"]
    path = tmp_path / "info.json"
    path.write_text(json.dumps({"model_name": "M", "licence": "mit"}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['licence'\]"):
        CardInfo.from_file(path)


def test_hub_card_script_rewrites_the_card(saved, results_file, monkeypatch, capsys, tmp_path):
    folder, _ = saved
    info = tmp_path / "info.yaml"
    info.write_text("model_name: Regenerated\nrepo_id: me/regenerated\n")
    argv = ["generate_card.py", str(folder), "--results", str(results_file), "--card-info", str(info)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO_ROOT / "hub_card" / "generate_card.py"), run_name="__main__")
    assert done.value.code == 0
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "Regenerated" and len(card.data.eval_results) == len(EXPECTED)
    assert "wrote" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 1
    assert "has no config.json" in capsys.readouterr().err
