"""Tune the long-form pipeline's `linking_threshold` on long held-out meetings.

    python -m training.tiny.tune_linking --model src/speakerlm_hf/default_model --num-meetings 6

Renders meetings of 2-4 test voices lasting 2-3 minutes (so the pipeline cuts them into several
segments whose anonymous speakers must be linked), transcribes each once, then links the same
segment outputs with every threshold and reports cpCER and the speaker-count accuracy. The
threshold is the cosine similarity above which two anonymous speakers of different segments
are merged. `--apply` writes the best one into the model's `config.voice_thresholds` (`link`),
which the pipeline then links with by default.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace

import numpy as np

from speakerlm_hf.data.audio import decode_audio
from speakerlm_hf.linking_speakerlm import VoiceThresholds
from speakerlm_hf.metrics import score_sessions
from speakerlm_hf.transcribe import load_pipeline

from ..synthetic.voices import make_speakers
from .meetings import plan_sessions_for, render_session
from .tune_voices import write_thresholds


def segment_outputs(pipe, audio: np.ndarray) -> list[dict]:
    """The pipeline's per-batch model outputs for `audio` (No-Regist), before linking."""
    preprocess, forward, _ = pipe._sanitize_parameters()
    return [pipe._forward(chunk, **forward) for chunk in pipe.preprocess(audio, **preprocess)]


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
            json.dump({"results": results, "best": best}, handle, indent=1)
    if args.apply:
        current = VoiceThresholds.from_config(pipe.model.config)
        write_thresholds(args.model, replace(current, link=best))
        print(f"wrote link threshold {best} into {args.model}/config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
