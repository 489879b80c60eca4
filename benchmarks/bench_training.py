"""Training throughput and peak memory per stage of the tiny SpeakerLM on CPU.

    python benchmarks/bench_training.py [--steps 5] [--batch 2] [--threads 2]

Each stage runs in a fresh process (so its peak RSS is its own): the stage's parts are made
trainable (LoRA added in stages 1 and 4), then `--steps` optimizer steps on batches from the
collator over simulated 50 s conversations (stage 1: single utterances). Prints LLM tokens/s,
audio seconds/s and peak RSS.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time


def run_stage(stage_number: int, steps: int, batch_size: int, threads: int, queue) -> None:
    import numpy as np
    import torch

    from speakerlm_hf.data import ConversationSimulator, SimulationConfig, SpeakerLMDataCollator
    from speakerlm_hf.testing_utils import tiny_speakerlm
    from speakerlm_hf.trainer import STAGES, prepare_model_for_stage

    torch.set_num_threads(threads)
    stage = STAGES[stage_number]
    model, processor = tiny_speakerlm()
    prepare_model_for_stage(model, stage, {"r": 8, "alpha": 16})
    rng = np.random.default_rng(0)
    # Band-limited noise bursts stand in for speech: throughput does not depend on the content.
    source = [
        {
            "audio": {
                "array": (rng.standard_normal(int(16000 * rng.uniform(2, 8))) * 0.1).astype(np.float32),
                "sampling_rate": 16000,
            },
            "text": "we should move the release to next week and tell the customer",
            "speaker": f"S{i % 8}",
        }
        for i in range(64)
    ]
    simulator = ConversationSimulator(source, SimulationConfig(duration=50.0), seed=0)
    collator = SpeakerLMDataCollator(processor, task=stage.task)
    if stage.task == "asr":
        batches = [
            collator([source[(s * batch_size + i) % 64] for i in range(batch_size)]) for s in range(steps + 1)
        ]
    else:
        batches = [
            collator([simulator.simulate(np.random.default_rng([s, i])) for i in range(batch_size)])
            for s in range(steps + 1)
        ]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step(batch):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    elapsed = time.perf_counter() - start
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:])
    audio = sum(int(b["input_features_mask"].sum()) for b in batches[1:]) * 0.06
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    queue.put(
        (
            stage_number,
            ",".join(model.trainable_parts()),
            trainable,
            tokens / elapsed,
            audio / elapsed,
            elapsed / steps,
            peak,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    print(f"tiny SpeakerLM, batch {args.batch}, {args.steps} steps, {args.threads} threads (CPU)")
    print(
        f"{'stage':>5} {'trainable parts':<58} {'params':>8} {'tokens/s':>9} {'audio s/s':>9} {'s/step':>7} {'peak RSS':>9}"
    )
    for stage in (1, 2, 3, 4):
        process = context.Process(target=run_stage, args=(stage, args.steps, args.batch, args.threads, queue))
        process.start()
        result = queue.get()
        process.join()
        number, parts, trainable, tokens, audio, seconds, peak = result
        print(
            f"{number:>5} {parts:<58} {trainable / 1e6:>7.2f}M {tokens:>9,.0f} {audio:>9.1f} {seconds:>7.2f} {peak:>7.0f}MB"
        )


if __name__ == "__main__":
    main()
