"""The four-stage recipe on a tiny model and a toy corpus: what trains, validation, resume, multi-process."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainingArguments

import training.train as train_module
from speakerlm_hf.data import (
    SegmentConfig,
    SpeakerLMDataCollator,
    alimeeting_sessions,
    load_prepared,
    prepare_sessions,
    write_parquet_shards,
)
from speakerlm_hf.data.audio import encode_flac
from speakerlm_hf.data.toy_corpus import toy_utterances, write_toy_alimeeting
from speakerlm_hf.testing_utils import tiny_speakerlm, train_on_batch
from speakerlm_hf.trainer import (
    COMPLETE_MARKER,
    SkippingCollator,
    SpeakerLMTrainer,
    latest_complete_checkpoint,
    warmup_cosine_factor,
)
from training.synthetic.corpus import UTTERANCE_FEATURES
from training.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
STAGE_PARTS = {
    1: {"audio_projector", "language_model"},
    2: {"audio_projector", "speaker_projector"},
    3: {"audio_encoder", "audio_projector", "speaker_projector"},
    4: {"audio_encoder", "audio_projector", "speaker_projector", "language_model"},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    model, processor = tiny_speakerlm()
    model.save_pretrained(root / "assembled")
    processor.save_pretrained(root / "assembled")

    rows = [
        {
            "id": f"utt{i}",
            "audio": {"bytes": encode_flac(row["audio"]["array"]), "path": None},
            "text": row["text"],
            "speaker": row["speaker"],
            "duration": row["audio"]["array"].size / 16000,
            "split": "train",
        }
        for i, row in enumerate(toy_utterances(num_speakers=6, per_speaker=3, max_sentences=2))
    ]
    write_parquet_shards(rows, root / "asr", "train", features=UTTERANCE_FEATURES)
    write_parquet_shards(rows[:4], root / "asr", "test", features=UTTERANCE_FEATURES)

    write_toy_alimeeting(root / "alimeeting", "Train", session_duration=60.0)
    sessions = alimeeting_sessions(root / "alimeeting", "Train", "far", 0)
    # Short segments keep the test fast; the recipe is the same for 40-50 s ones.
    short = SegmentConfig(min_duration=15.0, max_duration=20.0)
    prepare_sessions(sessions, root / "prepared", "train", config=short)
    prepare_sessions(sessions, root / "prepared", "test", config=short)
    return root


def stage_arguments(corpus: Path, stage: int, source: Path, output: Path, **extra) -> list[str]:
    data = {1: "asr", 2: "asr"}.get(stage, "prepared")
    settings = {
        "stage": stage,
        "model_name_or_path": source,
        "train_data": corpus / data,
        "eval_data": corpus / ("asr" if stage == 1 else "prepared"),
        "eval_examples": 2,
        "output_dir": output,
        "max_steps": 3,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_steps": 1,
        "save_steps": 100,
        "eval_strategy": "no",
        "logging_steps": 1,
        "dataloader_num_workers": 0,
        "report_to": "none",
        "registration_probabilities": "1 0 0",
        "simulation_duration": 25,
        "simulation_max_speakers": 3,
        "max_new_tokens": 16,
        "lora_r": 4,
        "use_cpu": "true",
        "seed": 0,
    }
    settings.update(extra)
    args = []
    for key, value in settings.items():
        args += [f"--{key}", *str(value).split(" ")]
    return args


def parts_that_changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {key.split(".", 1)[0] for key in before if not torch.equal(before[key], after[key])}


def test_four_stages_train_exactly_their_parts(corpus, tmp_path):
    source = corpus / "assembled"
    for stage in (1, 2, 3, 4):
        output = tmp_path / f"stage{stage}"
        assert train_main(stage_arguments(corpus, stage, source, output)) == 0
        before = load_file(source / "model.safetensors")
        after = load_file(output / "final" / "model.safetensors")
        assert not any("lora" in key for key in after), "LoRA is merged at the end of a stage"
        assert parts_that_changed(before, after) == STAGE_PARTS[stage], f"stage {stage}"
        source = output / "final"


def test_validation_reports_transcript_scores(corpus, tmp_path):
    output = tmp_path / "stage2"
    arguments = stage_arguments(
        corpus, 2, corpus / "assembled", output, eval_strategy="steps", eval_steps=2, save_steps=2
    )
    assert train_main(arguments) == 0
    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    evaluation = [entry for entry in state["log_history"] if "eval_cpcer" in entry]
    assert evaluation, state["log_history"]
    assert {"eval_cer", "eval_cpcer", "eval_delta_cp", "eval_sacer"} <= evaluation[0].keys()
    assert evaluation[0]["eval_cpcer"] >= evaluation[0]["eval_cer"] >= 0


def test_loss_falls_on_a_repeated_batch(corpus):
    model, processor = tiny_speakerlm()
    row = next(iter(load_prepared(corpus / "prepared", "train")))
    losses = train_on_batch(model, SpeakerLMDataCollator(processor)([row]), steps=10, lr=1e-2)
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(losses[5:]) < sum(losses[:5]), losses


def test_unusable_samples_are_skipped_and_counted(corpus):
    _, processor = tiny_speakerlm()
    rows = list(load_prepared(corpus / "prepared", "train").take(2))
    broken = {**rows[0], "id": "broken", "audio": {"bytes": b"not audio", "path": "x.flac"}}
    silent_text = {**rows[1], "id": "empty", "turns": [{**t, "text": " "} for t in rows[1]["turns"]]}
    collator = SkippingCollator(SpeakerLMDataCollator(processor))
    batch = collator([rows[0], broken, silent_text, rows[1]])
    assert batch["input_ids"].shape[0] == 2
    assert collator.skipped == 2
    assert any("broken" in reason for reason in collator.reasons)
    with pytest.raises(ValueError, match="none of the"):
        collator([broken])


def test_learning_rate_warms_up_from_the_start_value_then_decays():
    factors = [warmup_cosine_factor(step, 10, 110, 0.2) for step in range(111)]
    assert factors[0] == pytest.approx(0.2)
    assert factors[5] == pytest.approx(0.6)
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.5)
    assert factors[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def training_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run_training(arguments: list[str], program=("-m", "training.train"), **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *program, *arguments], cwd=REPO, env=training_env(), **popen)


# Runs the training entry point but kills its own process (SIGKILL, no clean-up) right after
# the first checkpoint is complete: a crash at a known step, whatever the machine's speed.
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from speakerlm_hf.trainer import SpeakerLMTrainer
from training.train import main
save = SpeakerLMTrainer._save_checkpoint
def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
SpeakerLMTrainer._save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_killed_training_resumes_to_the_same_final_step(corpus, tmp_path):
    output = tmp_path / "stage1"
    arguments = stage_arguments(corpus, 1, corpus / "assembled", output, max_steps=6, save_steps=2)
    killed = run_training(
        arguments,
        ("-c", KILLED_AFTER_FIRST_CHECKPOINT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log, _ = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, log[-3000:]
    first = latest_complete_checkpoint(output)
    assert first is not None and first.endswith("checkpoint-2") and not (output / "final").exists()
    # A checkpoint whose saving was interrupted must never be resumed from.
    (output / "checkpoint-5").mkdir()
    (output / "checkpoint-5" / "model.safetensors").write_bytes(b"half written")
    assert latest_complete_checkpoint(output) == first
    resumed = run_training(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log[-3000:]
    assert f"resuming from {first}" in log
    assert not (output / "checkpoint-5").exists()
    state = json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert (output / "checkpoint-6" / COMPLETE_MARKER).is_file()
    assert (output / "final" / "model.safetensors").is_file()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_processes_train_with_gloo(corpus, tmp_path):
    output = tmp_path / "ddp"
    arguments = stage_arguments(
        corpus, 3, corpus / "assembled", output, max_steps=2, per_device_train_batch_size=1
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "training.train",
        *arguments,
    ]
    result = subprocess.run(
        command, cwd=REPO, env=training_env(), capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert result.stderr.count("training in 2 process(es)") == 2, result.stderr[-3000:]
    before = load_file(corpus / "assembled" / "model.safetensors")
    after = load_file(output / "final" / "model.safetensors")
    assert parts_that_changed(before, after) == STAGE_PARTS[3]


def first_logged_loss(output: Path) -> float:
    state = json.loads(next(output.glob("checkpoint-*/trainer_state.json")).read_text())
    return next(entry["loss"] for entry in state["log_history"] if "loss" in entry)


def test_from_scratch_overrides_speaker_windows_and_ctc(corpus, tmp_path):
    """A model trained from scratch: stage 1 trains encoder + LM without LoRA (plus CTC on the audio
    tokens), stage 2 switches the audio tokens' speaker windows on and trains all but the extractor."""
    model, processor = tiny_speakerlm(speaker_model="campplus")
    assembled = tmp_path / "assembled"
    model.save_pretrained(assembled)
    processor.save_pretrained(assembled)
    parts = "audio_encoder audio_projector language_model"
    common = dict(trainable_parts=parts, lora="false", save_steps=1, max_steps=1)
    plain, ctc = tmp_path / "plain", tmp_path / "ctc"
    assert train_main(stage_arguments(corpus, 1, assembled, plain, **common)) == 0
    assert train_main(stage_arguments(corpus, 1, assembled, ctc, ctc_weight=0.5, **common)) == 0
    assert first_logged_loss(ctc) > first_logged_loss(plain) + 0.1, "the CTC term is added to the loss"
    # a checkpoint trained with CTC says so: decoding may follow its audio tokens' alignment
    assert json.loads((ctc / "final" / "config.json").read_text())["audio_ctc"] is True
    assert json.loads((plain / "final" / "config.json").read_text())["audio_ctc"] is False
    before = load_file(assembled / "model.safetensors")
    after = load_file(ctc / "final" / "model.safetensors")
    assert parts_that_changed(before, after) == set(parts.split())

    stage2 = tmp_path / "stage2"
    arguments = stage_arguments(
        corpus,
        2,
        ctc / "final",
        stage2,
        trainable_parts="audio_encoder audio_projector speaker_projector language_model",
        lora="false",
        model_config_overrides='{"audio_speaker_window":1.0}',
        registration_probabilities="0.5 0.5 0",
    )
    assert train_main(arguments) == 0
    config = json.loads((stage2 / "final" / "config.json").read_text())
    assert config["audio_speaker_window"] == 1.0
    assert config["audio_ctc"] is True, "later stages keep the flag of the weights they start from"
    generation_config = json.loads((stage2 / "final" / "generation_config.json").read_text())
    assert "audio_speaker_window" not in generation_config, "overrides belong to the model config only"
    processor_config = json.loads((stage2 / "final" / "processor_config.json").read_text())
    assert processor_config["feature_extractor"]["return_speaker_features"] is True
    changed = parts_that_changed(after, load_file(stage2 / "final" / "model.safetensors"))
    assert changed == {"audio_encoder", "audio_projector", "speaker_projector", "language_model"}


def test_lora_part_without_lora_is_refused(corpus, tmp_path):
    arguments = stage_arguments(corpus, 1, corpus / "assembled", tmp_path / "x", lora="false")
    with pytest.raises(ValueError, match="LoRA is off"):
        train_main(arguments)


def test_prepared_folders_are_read_shuffled_and_mixed_by_seed(corpus, tmp_path):
    from training.train import parse_arguments, training_dataset

    rows = list(load_prepared(corpus / "prepared", "train", streaming=False))
    for folder in ("a", "b"):
        renamed = [{**row, "id": f"{folder}{copy}-{row['id']}"} for copy in range(4) for row in rows]
        write_parquet_shards(renamed, tmp_path / f"meetings-{folder}", "train", rows_per_shard=len(rows))
    files = str(tmp_path / "meetings-*" / "data" / "train-*.parquet")

    def order(**extra):
        extra = {"train_data": files, **extra}
        stage_args, training_args = parse_arguments(
            stage_arguments(corpus, 4, corpus / "assembled", tmp_path / "out", **extra)
        )
        return [row["id"] for row in training_dataset(stage_args, training_args.seed)]

    in_files = order()
    assert in_files == sorted(in_files)  # file order: all of folder a, then folder b
    shuffled = order(shuffle_buffer=4)
    assert sorted(shuffled) == in_files and shuffled != in_files
    assert any(name.startswith("b") for name in shuffled[: len(shuffled) // 2])  # the folders mix
    assert order(shuffle_buffer=4) == shuffled  # reproducible from the seed
    assert order(shuffle_buffer=4, seed=1) != shuffled
    # folders named one by one, comma-separated: the same files in the same order, and only those
    folders = [str(tmp_path / f"meetings-{folder}" / "data" / "train-*.parquet") for folder in ("a", "b")]
    assert order(train_data=",".join(folders), shuffle_buffer=4) == shuffled
    assert order(train_data=str(tmp_path / "meetings-a")) == [n for n in in_files if n.startswith("a")]
    with pytest.raises(ValueError, match="shuffle_buffer"):
        parse_arguments(stage_arguments(corpus, 4, corpus / "assembled", tmp_path / "out", shuffle_buffer=-1))


def test_speed_perturbation_reaches_the_collator_and_needs_clips(corpus, tmp_path):
    from training.train import build_collator, parse_arguments

    def arguments(**extra):
        return parse_arguments(stage_arguments(corpus, 4, corpus / "assembled", tmp_path / "out", **extra))

    stage_args, _ = arguments(speed_perturbation="0.9 1.1")
    _, processor = tiny_speakerlm()
    assert build_collator(stage_args, processor, "sdr", 0).collator.speed_perturbation == (0.9, 1.1)
    with pytest.raises(ValueError, match="speed_perturbation needs enrollment clips"):
        arguments(speed_perturbation="0.9 1.1", enrollment="embeddings")


def test_asr_batches_mixed_into_sdr_training(corpus):
    _, processor = tiny_speakerlm()
    rows = list(load_prepared(corpus / "prepared", "train").take(2))
    always = SpeakerLMDataCollator(processor, asr_probability=1.0)(rows)
    never = SpeakerLMDataCollator(processor, asr_probability=0.0)(rows)
    decode = processor.tokenizer.decode
    joined = " ".join(
        t["text"].strip() for t in sorted(rows[0]["turns"], key=lambda t: (t["start"], t["end"]))
    )
    target = decode(always["input_ids"][0][always["labels"][0] != -100])
    assert target.startswith(joined) and "spk0:" not in target
    assert "spk0:" in decode(never["input_ids"][0][never["labels"][0] != -100])
    with pytest.raises(ValueError, match="asr_probability"):
        SpeakerLMDataCollator(processor, asr_probability=1.5)


def dry_run_of_tiny_reproduction(work: Path) -> list[list[str]]:
    """The commands `training/tiny/reproduce.sh WORK` runs in an empty WORK, in order: `python` and
    `speakerlm` are shell functions that print their arguments instead of running."""
    stubs = (
        'python() { printf "%q " python "$@"; echo; }; speakerlm() { printf "%q " speakerlm "$@"; echo; }\n'
    )
    script = stubs + (REPO / "training" / "tiny" / "reproduce.sh").read_text()
    result = subprocess.run(
        ["bash", "-c", script, "reproduce.sh", str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        shlex.split(line) for line in result.stdout.splitlines() if line.startswith(("python ", "speakerlm "))
    ]


def test_tiny_recipe_configs_parse_and_every_stage_runs_in_the_reproduction(tmp_path):
    from speakerlm_hf.configuration_speakerlm import SpeakerLMConfig
    from training.train import parse_arguments

    work = tmp_path / "work"
    commands = dry_run_of_tiny_reproduction(work)

    def option(command: list[str], name: str) -> str | None:
        return command[command.index(name) + 1] if name in command else None

    made: list[str] = []  # what each command before the current one writes into WORK
    trainings = []
    for command in commands:
        if command[:3] == ["python", "-m", "training.train"]:
            start = option(command, "--model_name_or_path")
            assert any(start == path or start.startswith(path + "/") for path in made), (
                f"{Path(option(command, '--output_dir')).name} starts from {start}, which no step before it makes"
            )
            trainings.append(command)
        if command[:2] == ["speakerlm", "average"]:
            made.append(command[2])
            assert all(source in made or Path(source).parent.as_posix() in made for source in command[3:]), (
                command
            )
        made.extend(path for name in ("--out", "--output_dir", "--output") if (path := option(command, name)))
    configs = sorted((REPO / "training" / "tiny" / "configs").glob("*.yaml"))
    assert {path.relative_to(REPO).as_posix() for path in configs} == {command[3] for command in trainings}, (
        "a config in training/tiny/configs is not run by reproduce.sh"
    )
    # Each LLM round reads meetings that no other stage reads; the one exception is a repeat of a
    # round from the same start and seed that trains other parts (4aje: 4aj with the audio encoder).
    all_rounds = [command for command in trainings if command[3].endswith("/llm_round.yaml")]
    rounds = [command for command in all_rounds if "--trainable_parts" not in command]
    variants = [command for command in all_rounds if "--trainable_parts" in command]
    assert len(rounds) > 10
    for command in rounds:
        data = option(command, "--train_data")
        assert data.startswith(f"{work}/meetings-acoustic")
        meetings = data.removeprefix(f"{work}/").split("/")[0]
        readers = [
            Path(option(other, "--output_dir")).name
            for other in trainings
            if f"{meetings}/" in " ".join(other) and other not in variants
        ]
        assert len(readers) == 1, f"{meetings} is read by {readers}"
    for variant in variants:
        (twin,) = [c for c in rounds if option(c, "--train_data") == option(variant, "--train_data")]
        assert option(twin, "--seed") == option(variant, "--seed")
        assert option(twin, "--model_name_or_path") == option(variant, "--model_name_or_path")
        assert Path(option(variant, "--output_dir")).name == Path(option(twin, "--output_dir")).name + "e"
    # What differs between rounds comes from the command line, not from the shared recipe.
    per_round = {"model_name_or_path", "train_data", "output_dir", "seed"}
    assert not per_round & set(yaml.safe_load((REPO / "training/tiny/configs/llm_round.yaml").read_text()))
    assert len({option(command, "--seed") for command in rounds}) == len(rounds)
    for command in trainings:
        stage_args, training_args = parse_arguments(command[3:])
        assert stage_args.stage in (1, 2, 3, 4) and training_args.max_steps > 0
        overrides = json.loads(stage_args.model_config_overrides or "{}")
        unknown = [key for key in overrides if key not in SpeakerLMConfig.__annotations__]
        assert not unknown, f"{command[3]} overrides unknown config fields {unknown}"
    # The evaluation scores, and the export ships, the last weights the recipe makes.
    evaluated = [option(command, "--model") for command in commands if "training.tiny.evaluate" in command]
    shipped = [option(command, "--model") for command in commands if "training.tiny.ship" in command]
    averages = [command[2] for command in commands if command[:2] == ["speakerlm", "average"]]
    assert evaluated == shipped == [averages[-1]]
    # ... decoded as tuned on them, on held-out sessions the evaluation does not score, before it
    numbers = {
        name: index for index, command in enumerate(commands) for name in command if "training.tiny." in name
    }
    tuned = [command for command in commands if "training.tiny.tune_decoding" in command]
    assert [option(command, "--model") for command in tuned] == [averages[-1]] and "--apply" in tuned[0]
    assert int(option(tuned[0], "--first")) >= int(
        option(commands[numbers["training.tiny.evaluate"]], "--limit")
    )
    assert numbers["training.tiny.tune_decoding"] < numbers["training.tiny.evaluate"], (
        "the evaluation runs before the decoding is tuned"
    )


def test_ctc_only_round_trains_the_encoder_on_role_targets(corpus, tmp_path):
    """An acoustic round: only the CTC loss, the LLM is not run, and role-labelled (and timestamped)
    meeting targets count by their spoken words. Dropped role targets would leave every gradient
    zero and the encoder unchanged."""
    model, processor = tiny_speakerlm()
    trainer = SpeakerLMTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none"),
        processing_class=processor,
        ctc_weight=1.0,
        ctc_only=True,
    )
    tokenizer = processor.tokenizer
    labelled = tokenizer("[0.00-1.50] spk0: hello there\nspk1: good morning\n", add_special_tokens=False)
    spoken = trainer.spoken_tokens(torch.tensor(labelled["input_ids"]))
    assert spoken.tolist() == tokenizer("hello there good morning", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="ctc_weight"):
        SpeakerLMTrainer(model=model, args=trainer.args, processing_class=processor, ctc_only=True)

    source = corpus / "assembled"
    output = tmp_path / "acoustic"
    arguments = stage_arguments(
        corpus,
        4,
        source,
        output,
        trainable_parts="audio_encoder audio_projector",
        lora="false",
        ctc_weight=1.0,
        ctc_only="true",
        timestamps=0.5,
    )
    assert train_main(arguments) == 0
    before = load_file(source / "model.safetensors")
    after = load_file(output / "final" / "model.safetensors")
    assert parts_that_changed(before, after) == {"audio_encoder", "audio_projector"}
    assert 0 < first_logged_loss(output) < 1e4


def test_ctc_spoken_adds_ctc_on_role_targets_to_the_llm_loss(corpus, tmp_path):
    """An LLM round after acoustic rounds: the LLM's loss, plus CTC on every meeting target by its
    spoken words (`ctc_spoken`). Without it, role-labelled targets add no CTC term at all."""
    common = dict(max_steps=1, registration_probabilities="1 0 0", timestamps=0.5, asr_probability=0.0)
    source = corpus / "assembled"
    runs = {
        "none": {},
        "plain": {"ctc_weight": 1.0},
        "spoken": {"ctc_weight": 1.0, "ctc_spoken": "true"},
    }
    losses = {}
    for name, extra in runs.items():
        output = tmp_path / name
        assert train_main(stage_arguments(corpus, 4, source, output, **common, **extra)) == 0
        losses[name] = first_logged_loss(output)
    assert losses["plain"] == pytest.approx(losses["none"], rel=1e-5), "role targets are not plain text"
    assert losses["spoken"] > losses["none"] + 0.1, "their spoken words are scored by CTC"
    model, processor = tiny_speakerlm()
    with pytest.raises(ValueError, match="ctc_weight"):
        SpeakerLMTrainer(
            model=model,
            args=TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none"),
            processing_class=processor,
            ctc_spoken=True,
        )


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bfloat16_trains_in_float32(tmp_path, monkeypatch, native):
    assert isinstance(train_module.native_cpu_bf16(), bool)
    monkeypatch.setattr(train_module, "native_cpu_bf16", lambda: native)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none")
    assert args.mixed_precision == "bf16"
    train_module.cpu_precision(args)
    assert (args.bf16, args.mixed_precision) == ((True, "bf16") if native else (False, "no"))
