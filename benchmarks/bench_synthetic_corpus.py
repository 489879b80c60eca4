"""Generation speed of the synthetic espeak-ng corpus (utterances and audio seconds per wall second).

    python benchmarks/bench_synthetic_corpus.py [--utterances 400] [--workers 1 2]

For each worker count: rendering alone (espeak-ng | sox, trimming, FLAC), then the whole
`generate_corpus` (planning, rendering, parquet shards) into a temporary folder, and the
time that extrapolates to for 40,000 train + 1,000 test utterances.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# training/ is a folder of the repository, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.synthetic.corpus import generate_corpus, plan_utterances, render_utterances
from training.synthetic.grammar import Grammar
from training.synthetic.voices import make_speakers, variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    started = time.perf_counter()
    variants()  # probe the voice space once (cached), outside the timings
    print(f"voice space probed in {time.perf_counter() - started:.1f} s")
    grammar = Grammar()
    speakers = make_speakers(600, "train", seed=0)
    started = time.perf_counter()
    plans = plan_utterances(args.utterances, "train", speakers, seed=0, grammar=grammar)
    print(f"planned {len(plans)} utterances in {time.perf_counter() - started:.2f} s")
    for workers in args.workers:
        started = time.perf_counter()
        seconds = sum(row["duration"] for row in render_utterances(plans, workers))
        elapsed = time.perf_counter() - started
        print(
            f"render   workers={workers}: {len(plans) / elapsed:6.1f} utt/s  {seconds / elapsed:6.0f} audio s/s  "
            f"(mean utterance {seconds / len(plans):.2f} s)"
        )
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            manifest = generate_corpus(
                folder, args.utterances, args.utterances // 40, seed=0, workers=workers
            )
            elapsed = time.perf_counter() - started
        count = args.utterances + args.utterances // 40
        hours = sum(split["audio_hours"] for split in manifest["splits"].values())
        rate = count / elapsed
        print(
            f"corpus   workers={workers}: {rate:6.1f} utt/s  {hours * 3600 / elapsed:6.0f} audio s/s  "
            f"-> 41,000 utterances in about {41_000 / rate / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
