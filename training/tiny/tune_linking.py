"""Tune the long-form pipeline's `linking_threshold` on long held-out meetings.

    python -m training.tiny.tune_linking --model src/speakerlm_hf/default_model --num-meetings 6

Renders meetings of 2-4 test voices lasting 2-3 minutes (so the pipeline cuts them into several
segments whose anonymous speakers must be linked), transcribes each once, then links the same
segment outputs with every threshold and reports cpCER and the speaker-count accuracy. The
threshold is the cosine similarity above which two anonymous speakers of different segments
are merged. It also reports how far apart the two kinds of pairs that linking decides on lie:
the cosines of local speakers of different segments that are one reference speaker (by the
speaker they overlap most in time) and of those that are two; every threshold between the
highest "two" and the lowest "one" links alike. `--apply` writes the best one into the model's
`config.voice_thresholds` (`link`), which the pipeline then links with by default.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace

import numpy as np

from speakerlm_hf.data.audio import decode_audio
from speakerlm_hf.linking_speakerlm import VoiceThresholds, turn_span, unit_rows
from speakerlm_hf.metrics import score_sessions
from speakerlm_hf.transcribe import load_pipeline

from ..synthetic.voices import make_speakers
from .meetings import plan_sessions_for, render_session
from .tune_voices import write_thresholds


def segment_outputs(pipe, audio: np.ndarray) -> list[dict]:
    """The pipeline's per-batch model outputs for `audio` (No-Regist), before linking."""
    preprocess, forward, _ = pipe._sanitize_parameters()
    return [pipe._forward(chunk, **forward) for chunk in pipe.preprocess(audio, **preprocess)]


def reference_speaker(turns, offset: float, length: float, reference) -> str | None:
    """The reference speaker whose turns overlap `turns` (times from `offset`) the longest."""
    overlap = {}
    for turn in turns:
        start, end = turn_span(turn, length)
        start, end = offset + start, offset + end
        for ref in reference:
            shared = min(end, ref["end"]) - max(start, ref["start"])
            if shared > 0:
                overlap[ref["speaker"]] = overlap.get(ref["speaker"], 0.0) + shared
    return max(overlap, key=overlap.get) if overlap else None


def linking_pairs(reference, model_outputs) -> tuple[list[float], list[float]]:
    """Cosines of local speakers of different segments: (same reference speaker, different ones)."""
    keys, vectors = [], []
    segments = [result for output in model_outputs for result in output["results"]]
    for number, segment in enumerate(segments):
        length = float(segment["end"]) - float(segment["start"])
        for label, entry in segment.get("speakers", {}).items():
            turns = [t for t in segment["turns"] if t["speaker"] == label]
            speaker = reference_speaker(turns, float(segment["start"]), length, reference)
            if speaker is not None:
                keys.append((number, speaker))
                vectors.append(np.asarray(entry["embedding"], dtype=np.float64))
    same, different = [], []
    if vectors:
        units = unit_rows(np.stack(vectors))
        similarity = units @ units.T
        for i, (segment_i, speaker_i) in enumerate(keys):
            for j in range(i + 1, len(keys)):
                segment_j, speaker_j = keys[j]
                if segment_i != segment_j:
                    (same if speaker_i == speaker_j else different).append(float(similarity[i, j]))
    return same, different


def describe(values: list[float]) -> dict:
    if not values:
        return {"pairs": 0}
    array = np.asarray(values)
    return {
        "pairs": int(array.size),
        "min": float(array.min()),
        "p5": float(np.percentile(array, 5)),
        "median": float(np.median(array)),
        "p95": float(np.percentile(array, 95)),
        "max": float(array.max()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="exported model (default: the shipped one)")
    parser.add_argument("--num-meetings", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--output", default=None)
    parser.add_argument("--apply", action="store_true", help="write the best threshold into --model")
    args = parser.parse_args(argv)
    if args.apply and args.model is None:
        parser.error("--apply needs --model (the shipped model is changed by training.tiny.ship)")
    pipe = load_pipeline(args.model)
    speakers = make_speakers(100, "test", seed=0)
    jobs = plan_sessions_for(speakers, "test", args.num_meetings, args.seed, (120.0, 180.0))
    reference, outputs = {}, {}
    for job in jobs:
        row = render_session(job)
        reference[row["id"]] = row["turns"]
        outputs[row["id"]] = segment_outputs(pipe, decode_audio(row["audio"]))
        print(
            f"{row['id']}: {row['end']:.0f} s, {len({t['speaker'] for t in row['turns']})} speakers",
            flush=True,
        )
    same, different = [], []
    for name, model_outputs in outputs.items():
        pairs = linking_pairs(reference[name], model_outputs)
        same += pairs[0]
        different += pairs[1]
    margin = {"same_speaker": describe(same), "different_speakers": describe(different)}
    for kind, figures in margin.items():
        print(
            f"{kind.replace('_', ' ')}: {figures['pairs']} pairs"
            + (
                f", cosine min {figures['min']:.2f} / median {figures['median']:.2f} / max {figures['max']:.2f}"
                if figures["pairs"]
                else ""
            )
        )
    results = {}
    for threshold in args.thresholds:
        hypothesis = {
            name: pipe.postprocess(copy.deepcopy(model_outputs), linking_threshold=threshold)["turns"]
            for name, model_outputs in outputs.items()
        }
        report = score_sessions(reference, hypothesis, mode="cp")
        results[threshold] = {
            "cer": report.cer.rate,
            "cpcer": report.attributed.rate,
            "speaker_count_accuracy": report.speaker_count_accuracy,
        }
        print(
            f"threshold {threshold:.2f}: CER {100 * report.cer.rate:.2f}%  cpCER {100 * report.attributed.rate:.2f}%  "
            f"speaker count right in {100 * (report.speaker_count_accuracy or 0):.0f}% of meetings"
        )
    best = min(results, key=lambda t: (results[t]["cpcer"], abs(t - 0.5)))
    print(f"best threshold: {best}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"results": results, "best": best, "pairs": margin}, handle, indent=1)
    if args.apply:
        current = VoiceThresholds.from_config(pipe.model.config)
        write_thresholds(args.model, replace(current, link=best))
        print(f"wrote link threshold {best} into {args.model}/config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
