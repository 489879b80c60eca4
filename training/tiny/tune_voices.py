"""Calibrate a model's voice thresholds (`config.voice_thresholds`) for its speaker extractor.

    python -m training.tiny.tune_voices --model outputs/tiny/stage4i-x3 --data /work/data/meetings-test \
        --first 100 --count 40 --apply

The cosines at which two stretches of speech count as one voice depend on the extractor: a
retrained or swapped extractor spreads the same voices over other cosines, and thresholds chosen
for the old one then split or merge speakers. This scores a grid of thresholds on held-out
sessions that the reported evaluation does not use (`--first`: the evaluation takes the first
100), as `training.tiny.evaluate` scores them, and picks:
- `cluster` (the recording's voices clustered while decoding without registration), `relabel`
  (anonymous turns clustered by voice) and `short` (when a turn of under a second is a speaker of
  its own, `--short`) by No-Regist cpCER: each `cluster` value decodes the sessions again,
  `relabel` and `short` only re-score the decoded turns;
- `registered` (the least similarity for a registered name) by the mean of Match- and
  Over-Regist saCER, on one decode of each;
- `split` (where a turn is cut because its voice changes, `--split`), first, by the mean of the
  three modes' rates, each mode at its best other thresholds: the cut re-scores the decoded turns
  of every mode.
Ties go to the model's current value. `--apply` writes the chosen thresholds into the model's
config.json (`link`, for long recordings, stays: `training.tiny.tune_linking` tunes it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from speakerlm_hf.linking_speakerlm import (
    Embedder,
    VoiceThresholds,
    WindowEmbedder,
    model_embedder,
    model_window_embedder,
)
from speakerlm_hf.modeling_speakerlm import SpeakerLMForConditionalGeneration
from speakerlm_hf.pipeline_speakerlm import embed_speakers
from speakerlm_hf.processing_speakerlm import SpeakerLMProcessor

from .evaluate import load_sessions, registrations, score, speech_masks, timed_turns, transcribe


def best_value(scores: dict, current):
    """The key of lowest score; among equal scores, the one nearest `current` (keys are values or
    tuples of values, compared to `current` by the sum of absolute differences)."""

    def distance(key) -> float:
        return float(np.abs(np.subtract(key, current)).sum())

    return min(scores, key=lambda key: (round(scores[key], 6), distance(key)))


def clip_key(clip: np.ndarray, extra: bytes = b"") -> bytes:
    """A memo key of a clip's samples and shape (and `extra`, what else the result depends on)."""
    digest = hashlib.blake2b(np.ascontiguousarray(clip).tobytes() + extra, digest_size=16).digest()
    return digest + bytes(str(clip.shape), "ascii")


def memoized(embed: Embedder) -> Embedder:
    """`embed` remembering each clip's embedding: the grid re-scores the same decoded turns, whose
    clips do not depend on the thresholds. Exact, since `model_embedder` embeds clips one by one."""
    memory: dict[bytes, np.ndarray] = {}

    def cached(clips):
        keys = [clip_key(clip) for clip in clips]
        missing = {k: clip for k, clip in zip(keys, clips, strict=True) if k not in memory}
        if missing:
            memory.update(zip(missing, embed(list(missing.values())), strict=True))
        return np.stack([memory[k] for k in keys])

    return cached


def memoized_windows(embed: WindowEmbedder | None) -> WindowEmbedder | None:
    """`embed` (a `WindowEmbedder`) remembering each (clip, centres, window)'s embeddings."""
    if embed is None:
        return None
    memory: dict[bytes, np.ndarray] = {}

    def cached(clip, centers, window):
        key = clip_key(clip, np.asarray(centers, dtype=np.float64).tobytes() + repr(float(window)).encode())
        if key not in memory:
            memory[key] = embed(clip, centers, window)
        return memory[key]

    return cached


def write_json_atomically(path: Path, update: dict) -> None:
    """Set the keys of `update` in the JSON object at `path`, replacing the file atomically."""
    content = json.loads(path.read_text())
    content.update(update)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(content, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_thresholds(model_dir: str, thresholds: VoiceThresholds) -> None:
    """Set `voice_thresholds` in the model folder's config.json, replacing it atomically."""
    write_json_atomically(Path(model_dir) / "config.json", {"voice_thresholds": thresholds.to_dict()})


@dataclass
class HeldOut:
    """What a tuning run scores with: the model, held-out sessions [first, first + count) of the test
    split with each mode's enrollment (Over-Regist's extras drawn from the whole split), and the
    model's speaker embedders remembering each clip (a grid decodes or re-scores the same audio)."""

    model: SpeakerLMForConditionalGeneration
    processor: SpeakerLMProcessor
    sessions: list[dict]
    speakers: dict[str, list]
    embed: Embedder
    windows: WindowEmbedder | None
    masks: list  # each session's speech, the same for every grid point

    @classmethod
    def load(cls, model_dir: str, data: str, first: int, count: int, extra: int, seed: int = 0) -> HeldOut:
        model = SpeakerLMForConditionalGeneration.from_pretrained(model_dir).eval()
        processor = SpeakerLMProcessor.from_pretrained(model_dir)
        processor.match_model(model.config)
        pool = load_sessions(data, "test", None)
        sessions = pool[first : first + count]
        if not sessions:
            raise ValueError(f"{data} has no test sessions from number {first}")
        return cls(
            model,
            processor,
            sessions,
            registrations(sessions, extra, seed, pool),
            memoized(model_embedder(model)),
            memoized_windows(model_window_embedder(model)),
            speech_masks(sessions),
        )


def tune(
    model_dir: str,
    data: str,
    first: int,
    count: int,
    extra: int,
    clusters: list[float],
    relabels: list[float],
    registereds: list[float],
    splits: list[float] | None = None,
    shorts: list[float] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 400,
) -> dict:
    held_out = HeldOut.load(model_dir, data, first, count, extra, seed)
    model, processor, sessions, speakers = (
        held_out.model,
        held_out.processor,
        held_out.sessions,
        held_out.speakers,
    )
    embed, windows, masks = held_out.embed, held_out.windows, held_out.masks
    current = VoiceThresholds.from_config(model.config)
    splits = list(splits) if splits else [current.split]
    shorts = list(shorts) if shorts else [current.short]
    token_seconds = processor.audio_token_seconds

    def decode(mode: str, thresholds: VoiceThresholds):
        registered = [embed_speakers(model, processor, clips) or None for clips in speakers[mode]]
        texts, placements = transcribe(
            model, processor, sessions, registered, batch_size, max_new_tokens, voice_thresholds=thresholds
        )
        return registered, texts, placements

    no_regist = {}
    for cluster in clusters:
        decoded = decode("no", replace(current, cluster=cluster))
        for relabel in relabels:
            for split in splits:
                for short in shorts:
                    key = (cluster, relabel, split, short)
                    thresholds = replace(current, cluster=cluster, relabel=relabel, split=split, short=short)
                    turns = timed_turns(sessions, *decoded, token_seconds, embed, thresholds, windows, masks)
                    no_regist[key] = score(sessions, turns, "no")
                    print(
                        f"no-regist cluster {cluster:.2f} relabel {relabel:.2f} split {split:.2f} "
                        f"short {short:.2f}: cpCER {100 * no_regist[key]['cpcer']:.2f}%",
                        flush=True,
                    )
    # No-Regist's best (cluster, relabel, short) at each split; the registered modes' anonymous
    # turns take its `short`
    no_regist_best = {
        split: best_value(
            {(c, r, h): result["cpcer"] for (c, r, s, h), result in no_regist.items() if s == split},
            (current.cluster, current.relabel, current.short),
        )
        for split in splits
    }
    registered_scores = {(value, split): {} for value in registereds for split in splits}
    for mode in ("match", "over"):
        decoded = decode(mode, current)
        for value, split in registered_scores:
            thresholds = replace(current, registered=value, split=split, short=no_regist_best[split][2])
            turns = timed_turns(sessions, *decoded, token_seconds, embed, thresholds, windows, masks)
            registered_scores[(value, split)][mode] = score(sessions, turns, mode)
            print(
                f"{mode}-regist registered {value:.2f} split {split:.2f}: "
                f"saCER {100 * registered_scores[(value, split)][mode]['sacer']:.2f}%",
                flush=True,
            )
    # `split` by the mean of the three modes' rates, each at its best other thresholds; then the
    # others at that split
    registered_means = {
        key: np.mean([r["match"]["sacer"], r["over"]["sacer"]]) for key, r in registered_scores.items()
    }
    by_split = {}
    for split in splits:
        no_best = min(r["cpcer"] for (_, _, s, _), r in no_regist.items() if s == split)
        registered_best = min(rate for (_, s), rate in registered_means.items() if s == split)
        by_split[split] = (no_best + 2 * registered_best) / 3
    split = best_value(by_split, current.split)
    cluster, relabel, short = no_regist_best[split]
    registered = best_value(
        {v: rate for (v, s), rate in registered_means.items() if s == split}, current.registered
    )
    chosen = replace(
        current, cluster=cluster, relabel=relabel, registered=registered, split=split, short=short
    )
    return {
        "sessions": [first, first + len(sessions)],
        "current": current.to_dict(),
        "chosen": chosen.to_dict(),
        "no_regist": [
            {"cluster": c, "relabel": r, "split": s, "short": h, **result}
            for (c, r, s, h), result in sorted(no_regist.items())
        ],
        "registered": [
            {"registered": v, "split": s, **result} for (v, s), result in sorted(registered_scores.items())
        ],
        "split": [{"split": s, "mean_rate": rate} for s, rate in sorted(by_split.items())],
    }


def held_out_arguments(parser: argparse.ArgumentParser, model_help: str, count: int) -> None:
    """The options of a tuning run on held-out sessions: the model, the sessions and Over-Regist's extras."""
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument(
        "--data", required=True, help="prepared held-out sessions (training/tiny/meetings.py)"
    )
    parser.add_argument("--first", type=int, default=100, help="first session tuned on")
    parser.add_argument("--count", type=int, default=count)
    parser.add_argument("--extra-speakers", type=int, default=20)


def show_report(report: dict, output: str | None) -> None:
    """Print a tuning run's current and chosen values, and write its whole report to `output`."""
    print(f"current {report['current']}\nchosen  {report['chosen']}")
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    held_out_arguments(parser, "a SpeakerLM folder", count=40)
    parser.add_argument("--cluster", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    parser.add_argument("--relabel", type=float, nargs="+", default=[0.55, 0.6, 0.65, 0.7, 0.75, 0.8])
    parser.add_argument("--registered", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    parser.add_argument(
        "--split",
        type=float,
        nargs="+",
        default=None,
        help="split thresholds to try (default: the model's own; -1 never cuts a turn)",
    )
    parser.add_argument(
        "--short",
        type=float,
        nargs="+",
        default=None,
        help="short-turn thresholds to try (default: the model's own; -1 lets every short turn join a speaker)",
    )
    parser.add_argument("--output", default=None, help="JSON with every score")
    parser.add_argument("--apply", action="store_true", help="write the chosen thresholds into the model")
    args = parser.parse_args(argv)
    report = tune(
        args.model,
        args.data,
        args.first,
        args.count,
        args.extra_speakers,
        args.cluster,
        args.relabel,
        args.registered,
        args.split,
        args.short,
    )
    show_report(report, args.output)
    if args.apply:
        write_thresholds(args.model, VoiceThresholds(**report["chosen"]))
        print(f"wrote voice_thresholds into {args.model}/config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
