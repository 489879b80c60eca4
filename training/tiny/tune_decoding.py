"""Choose how a model decodes: its joint CTC / attention weight and its beam search.

    python -m training.tiny.tune_decoding --model work/tiny/stage4ag-avg --data work/tiny/meetings-test \
        --first 100 --count 50 --ctc-weight 0.5 0.6 0.7 0.8 --num-beams 1 4 --apply

Greedy decoding commits to each token as it comes; the CTC prefix score
(`generation_speakerlm.CTCPrefixScorer`) then cannot take back a word the LLM began wrongly (a
word cut short, a name spelled as the language model expects it). A beam keeps a few transcripts
alive until the audio decides between them, and the best CTC weight moves with it. This decodes
held-out sessions that the reported evaluation does not use (`--first`; the evaluation takes
the first 100) with every (CTC weight, beams) pair of the grid in the three registration modes,
turns placed, cut and relabelled by voice with the model's own voice thresholds as
`training.tiny.evaluate` does, and picks the pair of the lowest mean of No-Regist cpCER and
Match- and Over-Regist saCER (ties: the nearest to the model's current choice).

`--apply` writes the choice into the model folder: `decoding_ctc_weight` into config.json (the
pipeline's default CTC weight for the model) and `num_beams` with `length_penalty` into
generation_config.json (which `generate` reads), each file replaced atomically. With beams the
length penalty is 0: joint scores are sums of log-probabilities that CTC already ties to the audio, so
a transcript is neither rewarded nor punished for its length.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from speakerlm_hf.generation_speakerlm import resolve_ctc_weight
from speakerlm_hf.linking_speakerlm import VoiceThresholds
from speakerlm_hf.pipeline_speakerlm import embed_speakers

from .evaluate import MODES, score, timed_turns, transcribe
from .tune_voices import (
    HeldOut,
    best_value,
    held_out_arguments,
    show_report,
    write_json_atomically,
)

RATES = {"no": "cpcer", "match": "sacer", "over": "sacer"}


def beam_settings(num_beams: int) -> dict:
    """The generation settings of a decoding with `num_beams` beams: with beams no length penalty;
    greedy keeps the default (a length penalty without beams is an invalid flag to `generate`)."""
    return {"num_beams": int(num_beams), "length_penalty": 0.0 if num_beams > 1 else 1.0}


def write_decoding(model_dir: str, ctc_weight: float, num_beams: int) -> None:
    """Make (`ctc_weight`, `num_beams`) the model folder's default decoding."""
    folder = Path(model_dir)
    config = json.loads((folder / "config.json").read_text())
    if not config.get("audio_ctc"):
        raise ValueError(f"{model_dir}: the model was not trained with CTC (audio_ctc), it has no CTC weight")
    if not 0.0 <= ctc_weight < 1.0 or num_beams < 1:
        raise ValueError(f"a CTC weight in [0, 1) and at least one beam, got {ctc_weight} and {num_beams}")
    generation = folder / "generation_config.json"
    if not generation.is_file():
        raise FileNotFoundError(f"{model_dir} has no generation_config.json")
    write_json_atomically(generation, beam_settings(num_beams))
    write_json_atomically(folder / "config.json", {"decoding_ctc_weight": float(ctc_weight)})


def tune(
    model_dir: str,
    data: str,
    first: int,
    count: int,
    extra: int,
    ctc_weights: list[float],
    beams: list[int],
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 400,
) -> dict:
    held_out = HeldOut.load(model_dir, data, first, count, extra, seed)
    model, processor, sessions = held_out.model, held_out.processor, held_out.sessions
    current = (
        resolve_ctc_weight(model.config, None),
        int(getattr(model.generation_config, "num_beams", None) or 1),
    )
    registered = {
        mode: [embed_speakers(model, processor, clips) or None for clips in held_out.speakers[mode]]
        for mode in MODES
    }
    thresholds = VoiceThresholds.from_config(model.config)
    grid = []
    for ctc_weight in ctc_weights:
        for num_beams in beams:
            model.generation_config.update(**beam_settings(num_beams))
            entry = {"ctc_weight": ctc_weight, "num_beams": num_beams}
            for mode in MODES:
                texts, placements = transcribe(
                    model,
                    processor,
                    sessions,
                    registered[mode],
                    batch_size,
                    max_new_tokens,
                    ctc_weight=ctc_weight,
                )
                turns = timed_turns(
                    sessions,
                    registered[mode],
                    texts,
                    placements,
                    processor.audio_token_seconds,
                    held_out.embed,
                    thresholds,
                    held_out.windows,
                    held_out.masks,
                )
                entry[mode] = score(sessions, turns, mode)
            entry["mean_rate"] = float(np.mean([entry[mode][RATES[mode]] for mode in MODES]))
            print(
                f"ctc weight {ctc_weight:.2f} beams {num_beams}: "
                + " / ".join(f"{100 * entry[mode][RATES[mode]]:.2f}" for mode in MODES)
                + f" (mean {100 * entry['mean_rate']:.2f}%)",
                flush=True,
            )
            grid.append(entry)
    chosen = best_value({(e["ctc_weight"], e["num_beams"]): e["mean_rate"] for e in grid}, current)
    return {
        "sessions": [first, first + len(sessions)],
        "current": {"ctc_weight": current[0], "num_beams": current[1]},
        "chosen": {"ctc_weight": chosen[0], "num_beams": chosen[1]},
        "grid": grid,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    held_out_arguments(parser, "a SpeakerLM folder trained with CTC", count=50)
    parser.add_argument("--ctc-weight", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--num-beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--output", default=None, help="JSON with every score")
    parser.add_argument("--apply", action="store_true", help="write the chosen decoding into the model")
    args = parser.parse_args(argv)
    for weight in args.ctc_weight:
        if not 0.0 <= weight < 1.0:
            parser.error(f"--ctc-weight values must be in [0, 1), got {weight}")
    if min(args.num_beams) < 1:
        parser.error("--num-beams values must be at least 1")
    report = tune(
        args.model,
        args.data,
        args.first,
        args.count,
        args.extra_speakers,
        args.ctc_weight,
        args.num_beams,
    )
    show_report(report, args.output)
    if args.apply:
        write_decoding(args.model, report["chosen"]["ctc_weight"], report["chosen"]["num_beams"])
        print(f"wrote the decoding into {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
