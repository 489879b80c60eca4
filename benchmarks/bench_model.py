"""Forward and generate throughput of the tiny SpeakerLM on CPU.

    python benchmarks/bench_model.py [--threads 2] [--seconds 20] [--batch 4]

Prints prefill tokens/s of a training-style forward (with loss and backward) and of inference,
and decoding tokens/s of batched greedy `generate` with the KV cache.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from speakerlm_hf.testing_utils import tiny_speakerlm


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio length per recording")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, processor = tiny_speakerlm()
    rng = np.random.default_rng(0)
    audio = [
        rng.standard_normal(int(16000 * args.seconds)).astype(np.float32) * 0.1 for _ in range(args.batch)
    ]
    speakers = {"Mike": rng.standard_normal(16000 * 5).astype(np.float32) * 0.1}
    target = "spk0: " + "we should move the release to next week. " * 4
    train_batch = processor(audio, speakers=speakers, text=[target] * args.batch)
    infer_batch = processor(audio, speakers=speakers)
    tokens = int(train_batch["attention_mask"].sum())
    params = sum(p.numel() for p in model.parameters())
    print(f"tiny SpeakerLM: {params / 1e6:.2f} M parameters, {args.threads} threads")
    print(f"batch {args.batch} x {args.seconds:.0f} s audio, {tokens} LLM tokens in the training batch")

    def train_step():
        model.zero_grad()
        model(**train_batch).loss.backward()

    model.train()
    step = timed(train_step, 3)
    print(f"training forward+backward: {step * 1000:.0f} ms/step, {tokens / step:,.0f} tokens/s")
    model.eval()
    with torch.no_grad():
        prefill = timed(lambda: model(**infer_batch), 3)
    prompt_tokens = int(infer_batch["attention_mask"].sum())
    print(f"inference prefill: {prefill * 1000:.0f} ms, {prompt_tokens / prefill:,.0f} tokens/s")

    def generate():
        return model.generate(
            **infer_batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False
        )

    total = timed(generate, 1)
    decode = max(total - prefill, 1e-9)
    new_tokens = args.batch * args.new_tokens
    print(
        f"generate: {total * 1000:.0f} ms for {args.new_tokens} new tokens x {args.batch}, "
        f"decoding {new_tokens / decode:,.0f} tokens/s ({decode / args.new_tokens * 1000:.1f} ms/step)"
    )


if __name__ == "__main__":
    main()
