"""Hub packaging: the exported folder, loading it with remote code only, hostile folders, push."""

import copy
import json
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, LogitsProcessorList, pipeline

from speakerlm_hf import cli, hub
from speakerlm_hf.generation_speakerlm import SpeakerLabelConstraint
from speakerlm_hf.hub import check_hub_folder, export_model, load_exported, push_folder
from speakerlm_hf.model_card import CardInfo
from speakerlm_hf.pipeline_speakerlm import TASK
from speakerlm_hf.testing_utils import run_without_package, tiny_speakerlm

TARGET = "Mike: the release is planned for next Tuesday.\nspk0: good morning everyone."
REPO_ID = "speakerlm-test/SpeakerLM-Tiny"
MAX_NEW_TOKENS = 40
RESULTS = {
    "results": [
        {
            "dataset": "AliMeeting-Eval",
            "split": "eval",
            "registration": "no-regist",
            "metrics": {"cer": 9.5, "cpcer": 12.25},
        }
    ]
}
REMOTE_CODE = {
    "audio_frontend.py",
    "configuration_sensevoice.py",
    "configuration_speaker_encoders.py",
    "configuration_speakerlm.py",
    "feature_extraction_speakerlm.py",
    "generation_speakerlm.py",
    "linking_speakerlm.py",
    "modeling_campplus.py",
    "modeling_eres2netv2.py",
    "modeling_sensevoice.py",
    "modeling_speakerlm.py",
    "pipeline_speakerlm.py",
    "processing_speakerlm.py",
    "segmentation_speakerlm.py",
}
EXPORT_FILES = REMOTE_CODE | {
    "README.md",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def speechlike(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a little noise, 16 kHz."""
    t = np.arange(int(16000 * seconds)) / 16000
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.2 * voiced * envelope + 0.01 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    for name, seconds, f0 in (("meeting", 3.0, 120), ("mike", 2.0, 180), ("lucy", 2.0, 220)):
        soundfile.write(folder / f"{name}.wav", speechlike(seconds, f0, len(name)), 16000)
    return folder


@pytest.fixture(scope="module")
def trained(audio_dir):
    """A tiny SpeakerLM whose LLM is fitted to say TARGET for the meeting with Mike registered."""
    model, processor = tiny_speakerlm()
    batch = processor(
        str(audio_dir / "meeting.wav"), speakers={"Mike": str(audio_dir / "mike.wav")}, text=TARGET
    )
    model.set_trainable_parts(["language_model"])
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(120):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().requires_grad_(False)
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    return model, processor


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, processor = trained
    out = tmp_path_factory.mktemp("export") / "SpeakerLM-Tiny"
    info = CardInfo(model_name="SpeakerLM-Tiny", repo_id=REPO_ID)
    return export_model(model, processor, out, results=RESULTS, card_info=info)


def transcribe(model, processor, audio, speakers=None) -> dict:
    """The installed package's transcript: processor, generate under the pipeline's label
    constraint, new tokens only."""
    inputs = processor(audio, speakers=speakers)
    prompt_length = inputs["input_ids"].shape[1]
    labels = SpeakerLabelConstraint(processor.tokenizer, list(speakers or ()), prompt_length)
    with torch.no_grad():
        generated = model.generate(
            **inputs,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            logits_processor=LogitsProcessorList([labels]),
        )
    new_tokens = generated[:, prompt_length:]
    return {"text": processor.batch_decode(new_tokens)[0], "turns": processor.post_process(new_tokens)[0]}


CHILD = """
import contextlib, io, json
from transformers import AutoModel, AutoProcessor, pipeline

folder = {folder!r}
model = AutoModel.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs = processor("meeting.wav", speakers={{"Mike": "mike.wav"}})
generated = model.generate(**inputs, max_new_tokens={max_new_tokens}, do_sample=False)
new_tokens = generated[:, inputs["input_ids"].shape[1]:]
direct = {{"text": processor.batch_decode(new_tokens)[0], "turns": processor.post_process(new_tokens)[0]}}

inferred = pipeline(model=folder, trust_remote_code=True)
named = pipeline("{task}", model=folder, trust_remote_code=True)
objects = [model, processor, processor.feature_extractor, inferred, named]
report = {{
    "modules": [type(o).__module__ for o in objects],
    "task": inferred.task,
    "direct": direct,
    "inferred": inferred("meeting.wav", speakers={{"Mike": "mike.wav"}}),
    "named": named(["meeting.wav", "meeting.wav"], speakers={{"Mike": "mike.wav"}}),
    "no_regist": named("meeting.wav"),
    "snippet_logs": [],
}}
# The model card's snippets, as written (only the repo id points at the folder).
for code in {snippets!r}:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, "snippet", "exec"), {{}})
    report["snippet_logs"].append(buffer.getvalue())
report["leaked"] = sorted(m for m in sys.modules if m and m.startswith("speakerlm_hf."))
print(json.dumps(report))
"""


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.fixture(scope="module")
def fresh_process(exported, audio_dir, tmp_path_factory):
    """What a fresh Python without speakerlm_hf gets from the exported folder and its card's snippets."""
    snippets = python_blocks((exported / "README.md").read_text(encoding="utf-8"))
    assert len(snippets) == 2 and all(REPO_ID in code for code in snippets)
    script = CHILD.format(
        folder=str(exported),
        max_new_tokens=MAX_NEW_TOKENS,
        task=TASK,
        snippets=[code.replace(REPO_ID, str(exported)) for code in snippets],
    )
    return run_without_package(script, audio_dir, tmp_path_factory.mktemp("child"))


def test_fresh_process_loads_export_and_transcribes_like_the_package(trained, audio_dir, fresh_process):
    model, processor = trained
    meeting, mike = str(audio_dir / "meeting.wav"), str(audio_dir / "mike.wav")
    reference = transcribe(model, processor, meeting, {"Mike": mike})
    assert reference == {
        "text": TARGET,
        "turns": [
            {"speaker": "Mike", "text": "the release is planned for next Tuesday."},
            {"speaker": "spk0", "text": "good morning everyone."},
        ],
    }
    no_regist = transcribe(model, processor, meeting)
    assert no_regist != reference, "the registration must change the transcript"

    hub.register_auto_classes()
    local_pipe = pipeline(TASK, model=model, processor=processor)
    assert local_pipe(meeting, speakers={"Mike": mike}, max_new_tokens=MAX_NEW_TOKENS) == reference

    child = fresh_process
    assert all(module.startswith("transformers_modules.") for module in child["modules"]), child["modules"]
    assert child["leaked"] == []
    assert child["task"] == TASK
    assert child["direct"] == reference
    assert child["inferred"] == reference
    assert child["named"] == [reference, reference]
    assert child["no_regist"] == no_regist


def test_card_snippets_run_as_written_without_the_package(fresh_process):
    pipeline_log, model_log = fresh_process["snippet_logs"]
    assert "Mike: the release is planned for next Tuesday." in pipeline_log.splitlines()
    assert model_log.splitlines()[:2] == TARGET.splitlines()


def test_pipeline_arguments(trained, audio_dir):
    model, processor = trained
    hub.register_auto_classes()
    pipe = pipeline(TASK, model=model, processor=processor, max_new_tokens=MAX_NEW_TOKENS)
    meeting, mike = str(audio_dir / "meeting.wav"), str(audio_dir / "mike.wav")
    waveform, rate = soundfile.read(meeting, dtype="float32")
    reference = transcribe(model, processor, meeting, {"Mike": mike})
    as_dict = {"raw": waveform, "sampling_rate": rate, "speakers": {"Mike": mike}}
    assert pipe(as_dict) == reference
    assert pipe([as_dict, meeting], speakers=None) == [reference, transcribe(model, processor, meeting)]
    with pytest.raises(ValueError, match="task 'diarize' is not one of"):
        pipe(meeting, task="diarize")
    with pytest.raises(TypeError, match="mapping"):
        pipe(meeting, speakers=["Mike"])
    with pytest.raises(ValueError, match="both in the input dict and as a call argument"):
        pipe(as_dict, speakers={"Lucy": str(audio_dir / "lucy.wav")})


def test_export_folder_holds_exactly_the_hub_files(trained, exported):
    model, _ = trained
    assert {path.name for path in exported.iterdir()} == EXPORT_FILES
    assert [p.name for p in exported.parent.iterdir()] == [exported.name], "no staging folder may remain"
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_speakerlm.SpeakerLMConfig",
        "AutoModel": "modeling_speakerlm.SpeakerLMForConditionalGeneration",
    }
    assert config["custom_pipelines"][TASK]["impl"] == "pipeline_speakerlm.SpeakerLMPipeline"
    assert config["custom_pipelines"][TASK]["pt"] == ["AutoModel"]
    assert not hasattr(model.config, "custom_pipelines"), "the caller's config must stay as it was"
    processor_config = json.loads((exported / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_speakerlm.SpeakerLMProcessor"
    assert json.loads((exported / "generation_config.json").read_text())["max_new_tokens"] == MAX_NEW_TOKENS
    weights = load_file(exported / "model.safetensors")
    state = model.state_dict()
    assert set(weights) <= set(state) and len(weights) >= len(state) - 1  # the tied lm_head is stored once
    assert all(torch.equal(weights[name], state[name]) for name in weights)
    assert {name for name, _ in check_hub_folder(exported)} == EXPORT_FILES


def test_export_is_atomic(trained, exported, monkeypatch):
    model, processor = trained
    before = {p.name: p.stat().st_mtime_ns for p in exported.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite"):
        export_model(model, processor, exported)

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub, "write_model_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, processor, exported, overwrite=True)
    assert {p.name: p.stat().st_mtime_ns for p in exported.iterdir()} == before
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, processor, exported.parent / "fresh")
    assert not (exported.parent / "fresh").exists()


def test_export_has_the_permissions_of_a_plain_folder(exported):
    """Written through a private temporary folder, the export still gets the umask's default modes."""
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(exported.stat().st_mode) == 0o777 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in exported.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_lora_is_merged_only_when_asked_and_the_export_has_no_adapter(trained, audio_dir, tmp_path, capsys):
    model, processor = copy.deepcopy(trained[0]), trained[1]
    model.add_lora(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    inputs = processor(str(audio_dir / "meeting.wav"), speakers={"Mike": str(audio_dir / "mike.wav")})
    with torch.no_grad():
        before = model(**inputs).logits
    with pytest.raises(ValueError, match="LoRA"):
        export_model(model, processor, tmp_path / "refused")
    assert not (tmp_path / "refused").exists() and model.has_lora

    # a mid-run checkpoint of a LoRA stage loads with its adapters, as they were trained
    lora_checkpoint = tmp_path / "lora-checkpoint"
    model.save_pretrained(lora_checkpoint)
    processor.save_pretrained(lora_checkpoint)
    config = json.loads((lora_checkpoint / "config.json").read_text())
    assert config["lora"] == {"r": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    reloaded, _ = load_exported(lora_checkpoint)
    assert reloaded.has_lora
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, before, atol=1e-5, rtol=1e-4)
    # `speakerlm export` of such a checkpoint merges the adapters
    assert cli.main(["export", str(lora_checkpoint), str(tmp_path / "from-checkpoint")]) == 0
    assert "merges them" in capsys.readouterr().out
    merged, merged_processor = load_exported(tmp_path / "from-checkpoint")
    assert not merged.has_lora and merged.config.lora is None
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, before, atol=1e-4, rtol=1e-4)
    # without the adapters' settings (their scaling) such weights cannot be rebuilt: refused
    del config["lora"]
    (lora_checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unmerged LoRA.*no `lora` settings"):
        load_exported(lora_checkpoint)

    out = export_model(model, processor, tmp_path / "merged", merge_lora=True)
    assert not model.has_lora
    assert not any("lora" in name or "base_layer" in name for name in load_file(out / "model.safetensors"))
    loaded, loaded_processor = load_exported(out)
    with torch.no_grad():
        after = loaded(
            **loaded_processor(str(audio_dir / "meeting.wav"), speakers={"Mike": str(audio_dir / "mike.wav")})
        ).logits
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)


class RunsCode:
    """A pickle that would create `path` when unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def break_folder(folder: Path, how: str, sentinel: Path) -> str:
    """Damage a copy of an export; returns the message expected from loading it."""
    if how == "missing weights":
        (folder / "model.safetensors").unlink()
        return "no model weights"
    if how == "wrong model_type":
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = "qwen2"
        (folder / "config.json").write_text(json.dumps(config))
        return "model_type 'qwen2'"
    if how == "pickle-only weights":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(RunsCode(sentinel)))
        return "only pickle files"
    if how == "corrupt safetensors":
        (folder / "model.safetensors").write_bytes(b"\xff" * 64)
        return "not a valid safetensors file"
    if how == "missing tensors":
        weights = load_file(folder / "model.safetensors")
        save_file(
            {k: v for k, v in weights.items() if not k.startswith("speaker_projector.")},
            folder / "model.safetensors",
        )
        return "missing keys"
    if how == "missing processor":
        (folder / "processor_config.json").unlink()
        return "processor_config.json"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "missing weights",
        "wrong model_type",
        "pickle-only weights",
        "corrupt safetensors",
        "missing tensors",
        "missing processor",
    ],
)
def test_broken_or_hostile_folders_raise_clear_errors_and_nothing_is_unpickled(
    exported, tmp_path, monkeypatch, how
):
    folder = tmp_path / "broken"
    shutil.copytree(exported, folder)
    sentinel = tmp_path / "pwned"
    message = break_folder(folder, how, sentinel)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, no_unpickling)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_exported(folder)
    assert str(folder) in str(error.value)
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        check_hub_folder(folder)
    assert not sentinel.exists()


def test_code_in_the_folder_never_runs_when_loading_with_the_package(exported, tmp_path, audio_dir):
    folder = tmp_path / "hostile"
    shutil.copytree(exported, folder)
    sentinel = tmp_path / "pwned"
    for name in REMOTE_CODE:
        (folder / name).write_text(f"import os\nos.mkdir({str(sentinel)!r})\n")
    model, processor = load_exported(folder)
    assert type(model).__module__ == "speakerlm_hf.modeling_speakerlm"
    assert (
        transcribe(model, processor, str(audio_dir / "meeting.wav"), {"Mike": str(audio_dir / "mike.wav")})[
            "text"
        ]
        == TARGET
    )
    assert not sentinel.exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_exported(tmp_path / "nowhere")


def test_cli_export_from_a_training_checkpoint(trained, tmp_path, capsys):
    model, processor = trained
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    (checkpoint / "training_args.bin").write_bytes(b"never read")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    out = tmp_path / "out"
    argv = ["export", str(checkpoint), str(out), "--repo-id", "me/tiny", "--results", str(results)]
    # A fresh process: nothing registered beforehand, as for a user running the command.
    done = subprocess.run(
        [sys.executable, "-m", "speakerlm_hf.cli", *argv], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"to {out}" in done.stdout
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    assert '"me/tiny"' in (out / "README.md").read_text()
    exported_weights, saved_weights = (
        load_file(out / "model.safetensors"),
        load_file(checkpoint / "model.safetensors"),
    )
    assert exported_weights.keys() == saved_weights.keys()
    assert all(torch.equal(exported_weights[k], saved_weights[k]) for k in saved_weights)

    assert cli.main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 1
    assert "does not exist" in capsys.readouterr().err


class RecordingApi:
    """Stands in for huggingface_hub.HfApi and records the calls."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


class NoNetwork:
    def __init__(self, *args, **kwargs):
        raise AssertionError("HfApi must not be used")


def test_push_dry_run_lists_the_files_and_sends_nothing(exported, monkeypatch, capsys):
    monkeypatch.setattr(hub, "HfApi", NoNetwork)
    monkeypatch.setattr(hub, "get_token", lambda: None)
    assert (
        cli.main(["push", "me/SpeakerLM-Tiny", str(exported), "--dry-run", "--private", "--revision", "v1"])
        == 0
    )
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines()[: len(EXPORT_FILES)]}
    assert listed == EXPORT_FILES
    total = sum(p.stat().st_size for p in exported.iterdir())
    assert f"{len(EXPORT_FILES)} files" in out and "me/SpeakerLM-Tiny@v1 (private)" in out
    assert "nothing uploaded" in out
    assert "warning: the usage snippets in README.md do not load 'me/SpeakerLM-Tiny'" in out
    assert push_folder(exported, REPO_ID, dry_run=True).warnings == ()
    assert push_folder(exported, "me/SpeakerLM-Tiny", dry_run=True).total_bytes == total


def test_push_without_token_fails_before_any_network_call(exported, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(hub, "HfApi", NoNetwork)
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match="no Hugging Face token"):
        push_folder(exported, "me/SpeakerLM-Tiny")
    assert cli.main(["push", "me/SpeakerLM-Tiny", str(exported)]) == 1
    assert "HF_TOKEN" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a valid Hub repo id"):
        push_folder(exported, "not a repo id", dry_run=True)
    with pytest.raises(ValueError, match="no config.json"):
        push_folder(tmp_path, "me/SpeakerLM-Tiny", dry_run=True)


def test_push_creates_the_repo_and_branch_and_uploads_the_listed_files(exported, monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    report = push_folder(exported, "me/SpeakerLM-Tiny", private=True, revision="v1", token="hf_test")
    calls = RecordingApi.calls
    assert calls[0] == ("init", "hf_test")
    assert calls[1] == (
        "create_repo",
        "me/SpeakerLM-Tiny",
        {"repo_type": "model", "private": True, "exist_ok": True},
    )
    assert calls[2] == (
        "create_branch",
        "me/SpeakerLM-Tiny",
        {"branch": "v1", "repo_type": "model", "exist_ok": True},
    )
    upload = calls[3][1]
    assert upload["folder_path"] == exported and upload["revision"] == "v1"
    assert set(upload["allow_patterns"]) == EXPORT_FILES
    assert "*.safetensors" in upload["delete_patterns"] and "*.bin" in upload["delete_patterns"]
    assert report.commit_url == "https://huggingface.co/me/SpeakerLM-Tiny/commit/abc"


def test_export_keeps_model_config_fields_out_of_the_generation_config(trained, tmp_path):
    model, processor = trained
    # What `from_pretrained(path, audio_speaker_window=...)` leaves in a checkpoint's generation config.
    model.generation_config.audio_speaker_window = 1.5
    model.generation_config.max_length = 300
    length = model.generation_config.max_new_tokens
    try:
        export_model(model, processor, tmp_path / "out")
    finally:
        del model.generation_config.audio_speaker_window
        model.generation_config.max_length = GenerationConfig().max_length
    saved = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert "audio_speaker_window" not in saved
    assert saved["max_length"] == 300 and saved.get("max_new_tokens") == length, "set lengths are kept"
