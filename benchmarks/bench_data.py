"""Throughput of stage-2 data: simulated 50 s conversations (+ features, + the full collator) per second.

    python benchmarks/bench_data.py [--workers 2] [--batch-size 4] [--batches 40]

The source is a single-speaker ASR set stored like a Hub dataset (FLAC in parquet, `datasets.Audio`),
made of espeak-ng speech (24 speakers x 8 utterances of 2-12 s). Each figure is samples per second
through a torch DataLoader with `--workers` workers over `simulate_conversations`, after the first
`--warmup` batches (worker start-up), for these collate functions:

- simulation: the samples themselves (decode, place, mix);
- + features: SenseVoice input features of the batch (the feature extractor);
- + collator: `SpeakerLMDataCollator` with a tiny processor (registration draw, transcript,
  tokenisation, audio and enrollment features): everything a training step consumes.

Each is measured clean and with noise + reverberation (synthetic, probability 1). On a shared
machine the wall-clock rates drop with the other load; the CPU milliseconds per sample printed
first (one process, `time.process_time`) do not, and bound the rate of W idle cores at
W * 1000 / ms.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import datasets
import numpy as np
import torch

from speakerlm_hf.data import (
    ConversationSimulator,
    RegistrationSampler,
    SimulationConfig,
    SpeakerLMDataCollator,
    simulate_conversations,
)
from speakerlm_hf.data.audio import encode_flac
from speakerlm_hf.data.shards import write_parquet_shards
from speakerlm_hf.data.toy_corpus import toy_utterances
from speakerlm_hf.testing_utils import tiny_config, tiny_processor, tiny_tokenizer

SOURCE_FEATURES = datasets.Features(
    {
        "audio": datasets.Audio(sampling_rate=16000),
        "text": datasets.Value("string"),
        "speaker": datasets.Value("string"),
    }
)


def build_source(folder: str) -> datasets.Dataset:
    """The espeak-ng utterances as a parquet-backed, map-style `datasets.Dataset` with FLAC audio."""
    rows = toy_utterances(num_speakers=24, per_speaker=8, seed=0)
    encoded = (
        {
            "audio": {"bytes": encode_flac(r["audio"]["array"]), "path": f"{i}.flac"},
            "text": r["text"],
            "speaker": r["speaker"],
        }
        for i, r in enumerate(rows)
    )
    files = write_parquet_shards(encoded, folder, features=SOURCE_FEATURES)
    return datasets.load_dataset(
        "parquet", data_files=[str(f) for f in files], split="train", cache_dir=folder
    )


class Features:
    """Collate to the feature extractor's output only."""

    def __init__(self, extractor):
        self.extractor = extractor

    def __call__(self, batch):
        return self.extractor([b["audio"]["array"] for b in batch])


def cpu_milliseconds(source, config: SimulationConfig, extractor, count: int = 20) -> tuple[float, float]:
    """CPU ms per sample of simulation and of feature extraction, in this process."""
    simulator = ConversationSimulator(source, config, seed=1)
    simulator.simulate(np.random.default_rng(0))  # warm caches
    start = time.process_time()
    samples = [simulator.simulate(np.random.default_rng([1, 0, i])) for i in range(count)]
    simulation = (time.process_time() - start) * 1000 / count
    start = time.process_time()
    for sample in samples:
        extractor([sample["audio"]["array"]])
    return simulation, (time.process_time() - start) * 1000 / count


def samples_per_second(dataset, collate, workers: int, batch_size: int, batches: int, warmup: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate
    )
    count, start = 0, None
    for number, _ in enumerate(loader):
        if number == warmup:
            start = time.perf_counter()
        elif number > warmup:
            count += batch_size
        if number == warmup + batches:
            break
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per figure")
    parser.add_argument("--warmup", type=int, default=4, help="untimed first batches")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, datasets {datasets.__version__}, {os.cpu_count()} cores, {args.workers} workers"
    )

    tokenizer = tiny_tokenizer()
    processor = tiny_processor(tokenizer, tiny_config(tokenizer))
    collates = {
        "simulation": list,
        "+ features": Features(processor.feature_extractor),
        "+ collator": SpeakerLMDataCollator(
            processor, RegistrationSampler(None, probabilities=(1, 1, 0)), seed=0
        ),
    }
    with tempfile.TemporaryDirectory() as folder:
        source = build_source(folder)
        for acoustics, extra in (
            ("clean", {}),
            ("noise+reverb", {"noise_probability": 1.0, "reverb_probability": 1.0}),
        ):
            config = SimulationConfig(duration=50.0, **extra)
            simulation, features = cpu_milliseconds(source, config, processor.feature_extractor)
            print(
                f"{acoustics:13s} CPU per sample: simulation {simulation:5.1f} ms + features {features:5.1f} ms "
                f"-> at most {2000 / (simulation + features):5.1f} samples/s on 2 idle cores"
            )
            dataset = simulate_conversations(source, config, seed=0, num_shards=max(args.workers, 1) * 4)
            for name, collate in collates.items():
                rate = samples_per_second(
                    dataset, collate, args.workers, args.batch_size, args.batches, args.warmup
                )
                print(
                    f"{acoustics:13s} {name:11s} {rate:7.1f} samples/s  ({rate * 50 / 3600:5.2f} h of audio per second)"
                )


if __name__ == "__main__":
    main()
