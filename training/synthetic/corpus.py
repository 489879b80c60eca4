"""Generate the synthetic single-speaker corpus (and optional conversation scripts) on disk.

Layout of `--out DIR` (readable with `load_utterances` or `datasets.load_dataset(DIR)`):

    data/train-NNNNN-of-MMMMM.parquet   id, audio (16 kHz FLAC), text, speaker, duration, split
    data/test-NNNNN-of-MMMMM.parquet    unseen speakers (voice combinations) and unseen sentences
    speakers.json                       every speaker's voice, prosody and timbre parameters
    scripts/<split>.jsonl               conversation scripts, when asked for
    manifest.json                       parameters, voice space, vocabulary size, totals

Everything is a pure function of the arguments (and the installed espeak-ng and sox): the same
seed gives byte-identical text, metadata and audio.

    python -m training.synthetic.corpus --out data/synthetic-en --num-utterances 40000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets import Audio, Features, Value

from speakerlm_hf.data.audio import decode_audio, encode_flac
from speakerlm_hf.data.shards import load_prepared, write_parquet_shards

from .conversation import conversation_script
from .grammar import HELD_OUT_TEMPLATE_FRACTION, TEST_SENTENCE_FRACTION, Grammar, Sentence
from .synthesis import SAMPLE_RATE, synthesize, utterance_jitter
from .voices import (
    SPLIT_CODES,
    Speaker,
    english_voices,
    espeak_version,
    make_speakers,
    variants,
    voice_combinations,
)

UTTERANCE_FEATURES = Features(
    {
        "id": Value("string"),
        "audio": Audio(sampling_rate=SAMPLE_RATE),
        "text": Value("string"),
        "speaker": Value("string"),
        "duration": Value("float64"),
        "split": Value("string"),
    }
)


@dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to render one utterance; rendering it is deterministic."""

    id: str
    split: str
    sentence: Sentence
    speaker: Speaker
    pitch_offset: int
    rate_factor: float


def plan_utterances(
    num_utterances: int,
    split: str,
    speakers: Sequence[Speaker],
    seed: int,
    grammar: Grammar | None = None,
    backchannel_fraction: float = 0.02,
) -> list[UtterancePlan]:
    """Distinct sentences of `split` assigned to random `speakers`, with per-utterance prosody jitter.

    Back-channels ("uh huh", "okay sure") are shared by both splits, so they are only added to
    train, where they make up `backchannel_fraction` of the utterances.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not speakers:
        raise ValueError("plan_utterances needs at least one speaker")
    grammar = grammar if grammar is not None else Grammar()
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 1])
    num_backchannels = int(round(num_utterances * backchannel_fraction)) if split == "train" else 0
    sentences = grammar.sample_unique(rng, num_utterances - num_backchannels, split)
    sentences += [grammar.backchannel(rng) for _ in range(num_backchannels)]
    order = rng.permutation(len(sentences))
    plans = []
    for index, position in enumerate(order):
        speaker = speakers[rng.integers(len(speakers))]
        pitch_offset, rate_factor = utterance_jitter(rng)
        plans.append(
            UtterancePlan(
                f"{split}-s{seed}-{index:07d}", split, sentences[position], speaker, pitch_offset, rate_factor
            )
        )
    return plans


def render_utterance(plan: UtterancePlan) -> dict:
    """The dataset row of one planned utterance (audio as 16-bit FLAC bytes)."""
    audio = synthesize(plan.sentence.spoken, plan.speaker, plan.pitch_offset, plan.rate_factor)
    return {
        "id": plan.id,
        "audio": {"bytes": encode_flac(audio), "path": f"{plan.id}.flac"},
        "text": plan.sentence.text,
        "speaker": plan.speaker.id,
        "duration": len(audio) / SAMPLE_RATE,
        "split": plan.split,
    }


def render_utterances(plans: Sequence[UtterancePlan], workers: int = 2) -> Iterator[dict]:
    """Rows of `plans` in order, rendered by a pool of `workers` processes (1: in this process)."""
    if workers <= 1:
        yield from map(render_utterance, plans)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(render_utterance, plans, chunksize=8)


def generate_corpus(
    out: str | Path,
    num_utterances: int,
    num_test_utterances: int,
    seed: int = 0,
    num_train_speakers: int = 600,
    num_test_speakers: int = 100,
    workers: int = 2,
    rows_per_shard: int = 2000,
    backchannel_fraction: float = 0.02,
    num_scripts: int = 0,
    num_test_scripts: int = 0,
    log: bool = False,
) -> dict:
    """Write the corpus described in this module's docstring to `out`; returns the manifest."""
    out = Path(out)
    if (out / "data").exists() and any((out / "data").glob("*.parquet")):
        raise FileExistsError(f"{str(out)!r} already holds a corpus (data/*.parquet); choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    grammar = Grammar()
    speakers = {
        "train": make_speakers(num_train_speakers, "train", seed),
        "test": make_speakers(num_test_speakers, "test", seed),
    }
    (out / "speakers.json").write_text(
        json.dumps([s.to_dict() for split in ("train", "test") for s in speakers[split]], indent=1) + "\n"
    )
    totals = {}
    for split, count in (("train", num_utterances), ("test", num_test_utterances)):
        if count <= 0:
            continue
        started = time.perf_counter()
        plans = plan_utterances(count, split, speakers[split], seed, grammar, backchannel_fraction)
        durations: list[float] = []
        rows = _track_durations(render_utterances(plans, workers), durations, split if log else None, started)
        write_parquet_shards(
            rows, out, split, rows_per_shard=rows_per_shard, row_group_size=100, features=UTTERANCE_FEATURES
        )
        seconds = sum(durations)
        elapsed = time.perf_counter() - started
        totals[split] = {
            "utterances": count,
            "audio_hours": round(seconds / 3600, 4),
            "speakers": len(speakers[split]),
        }
        if log:
            print(
                f"{split}: {count} utterances, {seconds / 3600:.2f} h audio in {elapsed:.0f} s "
                f"({count / elapsed:.1f} utt/s, {seconds / elapsed:.0f} audio s/s)",
                file=sys.stderr,
            )
    for split, count in (("train", num_scripts), ("test", num_test_scripts)):
        if count > 0:
            write_scripts(out / "scripts" / f"{split}.jsonl", count, split, speakers[split], seed, grammar)
    manifest = {
        "seed": seed,
        "espeak_ng": espeak_version(),
        "voices": list(english_voices()),
        "num_variants": len(variants()),
        "voice_combinations": {split: len(voice_combinations(split)) for split in ("train", "test")},
        "vocabulary_size": len(grammar.vocabulary),
        "num_templates": len(grammar.templates),
        "test_sentence_fraction": TEST_SENTENCE_FRACTION,
        "held_out_template_fraction": HELD_OUT_TEMPLATE_FRACTION,
        "backchannel_fraction": backchannel_fraction,
        "splits": totals,
        "scripts": {"train": num_scripts, "test": num_test_scripts},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _track_durations(
    rows: Iterator[dict], durations: list[float], log_split: str | None, started: float
) -> Iterator[dict]:
    """Pass rows through, appending each duration; log progress every 1000 rows if `log_split`."""
    for row in rows:
        durations.append(row["duration"])
        if log_split is not None and len(durations) % 1000 == 0:
            elapsed = time.perf_counter() - started
            print(
                f"{log_split}: {len(durations)} utterances, {sum(durations) / 3600:.2f} h audio, "
                f"{len(durations) / elapsed:.1f} utt/s",
                file=sys.stderr,
            )
        yield row


def write_scripts(
    path: str | Path,
    count: int,
    split: str,
    speakers: Sequence[Speaker],
    seed: int,
    grammar: Grammar | None = None,
    num_speakers: tuple[int, int] = (2, 4),
    duration: tuple[float, float] = (10.0, 50.0),
) -> Path:
    """Write `count` conversation scripts (JSON lines) over `speakers`, for the stage-2 simulator."""
    grammar = grammar if grammar is not None else Grammar()
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 2])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for index in range(count):
            script = conversation_script(
                rng,
                speakers,
                int(rng.integers(num_speakers[0], num_speakers[1] + 1)),
                round(float(rng.uniform(*duration)), 2),
                grammar=grammar,
                split=split,
            )
            handle.write(json.dumps({"id": f"{split}-s{seed}-conv{index:06d}", **script.to_dict()}) + "\n")
    return path


def load_speakers(corpus_dir: str | Path) -> dict[str, Speaker]:
    """The corpus's speakers by id, from its speakers.json."""
    path = Path(corpus_dir) / "speakers.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; is {str(corpus_dir)!r} a synthetic corpus?")
    return {d["id"]: Speaker.from_dict(d) for d in json.loads(path.read_text())}


def _decode_example(example: dict) -> dict:
    audio = example["audio"]
    return {
        "audio": {
            "array": decode_audio(audio, example.get("id", "audio")),
            "sampling_rate": SAMPLE_RATE,
            "path": audio.get("path"),
        }
    }


def _decode_batch(batch: dict) -> dict:
    batch = dict(batch)
    batch["audio"] = [
        _decode_example({"audio": a, "id": i})["audio"]
        for a, i in zip(batch["audio"], batch["id"], strict=True)
    ]
    return batch


def load_utterances(
    corpus_dir: str | Path, split: str = "train", streaming: bool = True, decode: bool = True
) -> datasets.IterableDataset | datasets.Dataset:
    """The corpus's utterances of `split` as a `datasets` dataset.

    With `decode`, `audio` is `{"array": float32 at 16 kHz, "sampling_rate", "path"}` (decoded with
    soundfile, so no torchcodec is needed); without, the stored `{"bytes", "path"}`.
    """
    dataset = load_prepared(corpus_dir, split, streaming=streaming)
    if not decode:
        return dataset
    if streaming:
        return dataset.map(_decode_example)
    return dataset.with_transform(_decode_batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic.corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output folder (must not hold a corpus yet)")
    parser.add_argument("--num-utterances", type=int, required=True, help="train utterances")
    parser.add_argument(
        "--num-test-utterances", type=int, default=None, help="test utterances (default: num-utterances / 40)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-speakers", type=int, default=600)
    parser.add_argument("--test-speakers", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--rows-per-shard", type=int, default=2000)
    parser.add_argument(
        "--backchannel-fraction",
        type=float,
        default=0.02,
        help="share of train utterances that are back-channels",
    )
    parser.add_argument("--num-scripts", type=int, default=0, help="train conversation scripts to write")
    parser.add_argument("--num-test-scripts", type=int, default=0, help="test conversation scripts to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_utterances < 0:
        raise SystemExit(f"--num-utterances must be >= 0, got {args.num_utterances}")
    num_test = args.num_test_utterances if args.num_test_utterances is not None else args.num_utterances // 40
    manifest = generate_corpus(
        args.out,
        args.num_utterances,
        num_test,
        seed=args.seed,
        num_train_speakers=args.train_speakers,
        num_test_speakers=args.test_speakers,
        workers=args.workers,
        rows_per_shard=args.rows_per_shard,
        backchannel_fraction=args.backchannel_fraction,
        num_scripts=args.num_scripts,
        num_test_scripts=args.num_test_scripts,
        log=True,
    )
    print(json.dumps(manifest["splits"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
