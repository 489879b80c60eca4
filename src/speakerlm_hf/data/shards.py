"""Prepared SDR data on disk: the row schema, parquet shards, streaming reads and Hub upload.

One row per segment:

- `id` (str), `corpus` (str), `session` (str), `start`/`end` (float64, the segment's span in the
  session, seconds);
- `audio`: `datasets.Audio(sampling_rate=16000)`, stored as `{"bytes": <16-bit FLAC>, "path": <name>}`
  so the Hub viewer plays it;
- `turns`: list of `{speaker, start, end, text}`, times relative to the segment, sorted by start;
  `speaker` is the corpus-wide speaker id (`SPK8004`, `<session>-<tier>`), never shown to the model;
- `enrollment`: list of `{speaker, clips: list of {bytes, start, end}}`, one entry per speaker
  that has a pool; `bytes` is a 16 kHz mono 16-bit FLAC clip of 2-10 s, `start`/`end` its span in
  the session. Plain binary rather than nested `Audio` so that reading never needs an audio
  decoding backend and a row streams as one parquet record.

Shards are `data/<split>-NNNNN-of-MMMMM.parquet`, the layout `load_dataset(<folder or Hub repo>)`
maps to splits; the schema carries the `datasets` features in its metadata.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Audio, Features, List, Value

from .audio import SAMPLING_RATE, decode_audio

__all__ = [
    "SEGMENT_FEATURES",
    "write_parquet_shards",
    "prepared_data_files",
    "load_prepared",
    "decode_prepared_row",
    "push_prepared_to_hub",
]

TURN = {
    "speaker": Value("string"),
    "start": Value("float64"),
    "end": Value("float64"),
    "text": Value("string"),
}
CLIP = {"bytes": Value("binary"), "start": Value("float64"), "end": Value("float64")}
SEGMENT_FEATURES = Features(
    {
        "id": Value("string"),
        "corpus": Value("string"),
        "session": Value("string"),
        "start": Value("float64"),
        "end": Value("float64"),
        "audio": Audio(sampling_rate=SAMPLING_RATE),
        "turns": List(TURN),
        "enrollment": List({"speaker": Value("string"), "clips": List(CLIP)}),
    }
)


def write_parquet_shards(
    rows: Iterable[dict],
    output_dir: str | os.PathLike,
    split: str = "train",
    rows_per_shard: int = 500,
    row_group_size: int = 32,
    features: Features = SEGMENT_FEATURES,
) -> list[Path]:
    """Write rows into `output_dir/data/<split>-NNNNN-of-MMMMM.parquet`; returns the shard paths.

    Rows are written as they come (memory holds one row group); small row groups let a streaming
    reader start after a few megabytes.
    """
    if rows_per_shard < 1 or row_group_size < 1:
        raise ValueError("rows_per_shard and row_group_size must be positive")
    folder = Path(output_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    stale = sorted(folder.glob(f"{split}-*.parquet"))
    if stale:
        raise FileExistsError(
            f"{str(folder)!r} already holds {split} shards ({stale[0].name}, ...); remove them or choose another folder"
        )
    schema = features.arrow_schema
    written: list[Path] = []
    writer = None
    pending: list[dict] = []
    in_shard = 0

    def flush():
        nonlocal pending
        if pending:
            writer.write_table(pa.Table.from_pylist(pending, schema=schema), row_group_size=row_group_size)
            pending = []

    for row in rows:
        if writer is None or in_shard == rows_per_shard:
            if writer is not None:
                flush()
                writer.close()
            written.append(folder / f"{split}-{len(written):05d}.parquet.partial")
            writer = pq.ParquetWriter(written[-1], schema)
            in_shard = 0
        pending.append(row)
        in_shard += 1
        if len(pending) == row_group_size:
            flush()
    if writer is not None:
        flush()
        writer.close()
    final = []
    for index, path in enumerate(written):
        target = folder / f"{split}-{index:05d}-of-{len(written):05d}.parquet"
        path.rename(target)
        final.append(target)
    return final


def prepared_data_files(path: str | os.PathLike, split: str = "train") -> list[str]:
    """The parquet shards of `split` under a prepared folder (or the given file / glob's files)."""
    path = Path(path)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        found = sorted((path / "data").glob(f"{split}-*.parquet")) or sorted(path.glob(f"{split}-*.parquet"))
        if not found:
            raise FileNotFoundError(f"no {split} parquet shards in {str(path)!r} or its data/ folder")
        return [str(p) for p in found]
    found = sorted(glob.glob(str(path)))
    if not found:
        raise FileNotFoundError(f"no prepared data at {str(path)!r}")
    return found


def load_prepared(
    path: str | os.PathLike | Sequence[str], split: str = "train", streaming: bool = True
) -> datasets.IterableDataset | datasets.Dataset:
    """Prepared segments through `load_dataset("parquet", ...)`, audio left encoded (decoded by the collator).

    `path`: a prepared folder, a shard, a glob, or a list of shards (local or `hf://` paths); a
    string may also name several folders, shards or globs separated by commas, read in that order.
    """
    if isinstance(path, (list, tuple)):
        files = list(path)
    else:
        sources = [source.strip() for source in str(path).split(",") if source.strip()] or [str(path)]
        files = [
            file
            for source in sources
            for file in ([source] if source.startswith("hf://") else prepared_data_files(source, split))
        ]
    dataset = datasets.load_dataset("parquet", data_files={split: files}, split=split, streaming=streaming)
    return dataset.cast_column("audio", Audio(sampling_rate=SAMPLING_RATE, decode=False))


def decode_prepared_row(row: dict, max_clips: int | None = None) -> dict:
    """A prepared (or simulated) row with its audio decoded, for evaluation and demos:
    `{"id", "audio", "turns", "enrollment": {speaker: [clips]}}`, at most `max_clips` clips per
    speaker and only speakers with a clip. Errors name the row and the speaker."""
    name = str(row["id"])
    return {
        "id": name,
        "audio": decode_audio(row["audio"], f"audio of {name!r}"),
        "turns": [dict(turn) for turn in row["turns"]],
        "enrollment": {
            str(entry["speaker"]): [
                decode_audio(clip, f"enrollment clip of {entry['speaker']!r} in {name!r}")
                for clip in entry["clips"][:max_clips]
            ]
            for entry in row.get("enrollment") or []
            if entry["clips"]
        },
    }


def push_prepared_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Add SpeakerLM SDR segments",
) -> str:
    """Upload a prepared folder's `data/` shards to a Hub dataset repo; returns the commit URL.

    `load_dataset(repo_id, streaming=True)` then reads it with the same splits.
    """
    folder = Path(output_dir)
    if not any((folder / "data").glob("*.parquet")):
        raise FileNotFoundError(f"{str(folder)!r} has no data/*.parquet shards to upload")
    if "/" not in repo_id:
        raise ValueError(f"repo_id {repo_id!r} must be '<owner>/<name>'")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        allow_patterns=["data/*.parquet", "README.md"],
        revision=revision,
        commit_message=commit_message,
    )
    return str(getattr(commit, "commit_url", commit))
