"""Meeting corpora -> SDR segments in parquet shards, and the `speakerlm prepare-data` / `speaker-bank` commands.

speakerlm prepare-data alimeeting /data/AliMeeting out/alimeeting-train --split Train --mic far
speakerlm prepare-data aishell4 /data/AISHELL-4 out/aishell4-train --parts train_L train_M train_S
speakerlm speaker-bank out/alimeeting-train out/alimeeting-train/speakers.safetensors --model <checkpoint>
"""

from __future__ import annotations

import argparse
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from .audio import SAMPLING_RATE, encode_flac
from .corpora import (
    CORPORA,
    Session,
    aishell4_sessions,
    aishell5_sessions,
    alimeeting_sessions,
    textgrid_folder_sessions,
)
from .segments import SegmentConfig, cut_segments, enrollment_pool, exclusive_speech, segment_turns
from .shards import load_prepared, push_prepared_to_hub, write_parquet_shards

__all__ = ["session_rows", "prepare_sessions", "corpus_sessions", "register"]


def session_rng(session: Session, seed: int) -> np.random.Generator:
    """A generator that depends on the seed and the session only, not on processing order."""
    return np.random.default_rng([seed, zlib.crc32(f"{session.corpus}/{session.id}".encode())])


def session_rows(session: Session, config: SegmentConfig | None = None, seed: int = 0) -> Iterator[dict]:
    """The segment rows of one session (see `shards.SEGMENT_FEATURES`); segments without turns are skipped."""
    config = config or SegmentConfig()
    waveform = session.load_audio(SAMPLING_RATE)
    duration = waveform.size / SAMPLING_RATE
    rng = session_rng(session, seed)
    exclusive = exclusive_speech(session.utterances)
    for segment in cut_segments(session.utterances, duration, rng, config):
        if not segment.clean and config.mid_utterance_cuts == "drop":
            continue
        turns = segment_turns(
            session.utterances, segment, session.markup, clip_crossing=config.mid_utterance_cuts == "clip"
        )
        if not turns:
            continue
        enrollment = []
        for speaker in dict.fromkeys(turn["speaker"] for turn in turns):
            spans = enrollment_pool(exclusive.get(speaker, []), segment, rng, config)
            clips = [
                {"bytes": encode_flac(_cut(waveform, a, b)), "start": round(a, 3), "end": round(b, 3)}
                for a, b in spans
            ]
            if clips:
                enrollment.append({"speaker": speaker, "clips": clips})
        name = f"{session.id}-{round(segment.start * 1000):08d}-{round(segment.end * 1000):08d}"
        yield {
            "id": name,
            "corpus": session.corpus,
            "session": session.id,
            "start": segment.start,
            "end": segment.end,
            "audio": {
                "bytes": encode_flac(_cut(waveform, segment.start, segment.end)),
                "path": f"{name}.flac",
            },
            "turns": turns,
            "enrollment": enrollment,
        }


def _cut(waveform: np.ndarray, start: float, end: float) -> np.ndarray:
    return waveform[round(start * SAMPLING_RATE) : round(end * SAMPLING_RATE)]


def _session_rows_list(session: Session, config: SegmentConfig, seed: int) -> list[dict]:
    return list(session_rows(session, config, seed))


def prepare_sessions(
    sessions: Sequence[Session],
    output_dir: str | os.PathLike,
    split: str = "train",
    config: SegmentConfig | None = None,
    seed: int = 0,
    rows_per_shard: int = 500,
    num_workers: int = 1,
) -> list[Path]:
    """Cut sessions into segments and write them as parquet shards; returns the shard paths.

    The output depends on the seed and the sessions only (each session has its own generator),
    whatever `num_workers`.
    """
    if not sessions:
        raise ValueError("no sessions to prepare")
    config = config or SegmentConfig()

    def rows() -> Iterable[dict]:
        if num_workers <= 1:
            for session in sessions:
                yield from session_rows(session, config, seed)
            return
        with ProcessPoolExecutor(num_workers) as pool:
            for session_list in pool.map(partial(_session_rows_list, config=config, seed=seed), sessions):
                yield from session_list

    return write_parquet_shards(rows(), output_dir, split, rows_per_shard)


def corpus_sessions(corpus: str, root: str | os.PathLike, **options) -> list[Session]:
    """Sessions of a corpus by name (`alimeeting`, `aishell4`, `aishell5`, `textgrid`)."""
    if corpus == "alimeeting":
        split = options.get("split") or "Train"
        return alimeeting_sessions(root, split, options.get("mic") or "far", options.get("channel", 0))
    if corpus == "aishell4":
        parts = options.get("parts") or ("train_L", "train_M", "train_S")
        return aishell4_sessions(root, parts, options.get("channel", 0))
    if corpus == "aishell5":
        split = options.get("split") or "train"
        return aishell5_sessions(root, split, options.get("mic") or "far", options.get("channel") or 0)
    if corpus == "textgrid":
        return textgrid_folder_sessions(
            root,
            options.get("textgrid_dir"),
            corpus=options.get("name") or "custom",
            channel=options.get("channel", 0),
            global_speaker_ids=options.get("global_speaker_ids", False),
        )
    raise ValueError(f"unknown corpus {corpus!r}; expected one of {CORPORA}")


def _channel(value: str) -> int | None:
    if value == "mix":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"channel {value!r} is not a number or 'mix'") from None


def run_prepare(args: argparse.Namespace) -> int:
    sessions = corpus_sessions(
        args.corpus,
        args.root,
        split=args.split,
        mic=args.mic,
        channel=args.channel,
        parts=args.parts,
        textgrid_dir=args.textgrid_dir,
        name=args.name,
        global_speaker_ids=args.global_speaker_ids,
    )
    config = SegmentConfig(
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        mid_utterance_cuts=args.mid_utterance_cuts,
        pool_size=args.pool_size,
    )
    shards = prepare_sessions(
        sessions, args.output, args.output_split, config, args.seed, args.rows_per_shard, args.num_workers
    )
    print(f"wrote {len(shards)} shard(s) from {len(sessions)} session(s) to {os.fspath(args.output)}/data")
    if args.push_to_hub:
        print(push_prepared_to_hub(args.output, args.push_to_hub, private=args.private))
    return 0


def run_speaker_bank(args: argparse.Namespace) -> int:
    import torch

    from ..feature_extraction_speakerlm import SpeakerLMFeatureExtractor
    from ..modeling_speakerlm import SpeakerLMForConditionalGeneration
    from .registration import compute_speaker_bank

    model = SpeakerLMForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).to(args.device)
    extractor = SpeakerLMFeatureExtractor.from_pretrained(args.model)
    rows = load_prepared(args.data, args.split, streaming=True)
    bank = compute_speaker_bank(model, extractor, rows, max_clips=args.max_clips)
    bank.save(args.output)
    print(f"wrote {len(bank)} speaker embeddings to {os.fspath(args.output)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `prepare-data` and `speaker-bank` to the project's CLI."""
    prepare = subparsers.add_parser(
        "prepare-data",
        help="cut meeting corpora into 40-50 s SDR segments with enrollment pools (parquet shards)",
        description=(
            "Read AliMeeting, AISHELL-4, AISHELL-5 or a folder of <session>.wav + <session>.TextGrid, cut "
            "each session into segments with their turns and per-speaker enrollment clips, and write "
            "parquet shards readable with load_dataset('parquet', ..., streaming=True)."
        ),
    )
    prepare.add_argument("corpus", choices=CORPORA)
    prepare.add_argument(
        "root", type=Path, help="the corpus folder as distributed (or the audio folder for 'textgrid')"
    )
    prepare.add_argument("output", type=Path, help="output folder; shards go to OUTPUT/data/")
    prepare.add_argument(
        "--split", default=None, help="AliMeeting: Train/Eval/Test; AISHELL-5: train/dev/..."
    )
    prepare.add_argument("--mic", choices=("far", "near"), default="far")
    prepare.add_argument(
        "--channel", type=_channel, default=0, help="far-field channel, or 'mix' (default 0)"
    )
    prepare.add_argument(
        "--parts", nargs="+", default=None, help="AISHELL-4 parts (default train_L train_M train_S)"
    )
    prepare.add_argument(
        "--textgrid-dir", type=Path, default=None, help="'textgrid': TextGrid folder (default ROOT)"
    )
    prepare.add_argument("--name", default=None, help="'textgrid': corpus name stored in the rows")
    prepare.add_argument(
        "--global-speaker-ids",
        action="store_true",
        help="'textgrid': tier names identify people across sessions",
    )
    prepare.add_argument("--min-duration", type=float, default=40.0)
    prepare.add_argument("--max-duration", type=float, default=50.0)
    prepare.add_argument(
        "--pool-size", type=int, default=3, help="enrollment clips kept per speaker and segment"
    )
    prepare.add_argument("--mid-utterance-cuts", choices=("drop", "clip"), default="drop")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--rows-per-shard", type=int, default=500)
    prepare.add_argument("--output-split", default="train", help="split name of the shards (default train)")
    prepare.add_argument("--num-workers", type=int, default=1, help="sessions processed in parallel")
    prepare.add_argument(
        "--push-to-hub", default=None, metavar="REPO_ID", help="upload the shards to this dataset repo"
    )
    prepare.add_argument("--private", action="store_true", help="create the Hub repo as private")
    prepare.set_defaults(func=run_prepare)

    bank = subparsers.add_parser(
        "speaker-bank",
        help="embed every (session, speaker) enrollment pool of prepared data for Over-Regist sampling",
    )
    bank.add_argument("data", help="prepared folder, shard, glob or hf:// path")
    bank.add_argument("output", type=Path, help="the .safetensors file to write")
    bank.add_argument(
        "--model", required=True, help="SpeakerLM checkpoint whose speaker extractor embeds the clips"
    )
    bank.add_argument("--split", default="train")
    bank.add_argument("--max-clips", type=int, default=8, help="clips averaged per (session, speaker)")
    bank.add_argument("--device", default="cpu")
    bank.set_defaults(func=run_speaker_bank)
