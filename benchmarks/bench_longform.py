"""Real-time factor and peak memory of the long-form pipeline against recording length, on CPU.

    python benchmarks/bench_longform.py [--minutes 1 5 30 60] [--model FOLDER] [--threads 1]

Each length is a 16 kHz 16-bit WAV made by tiling a 5-minute espeak-ng meeting of four voices
(with faint hiss), written block by block. Every length runs in a fresh Python process, so
`ru_maxrss` is that run's own peak: "after load" is the peak once the model is loaded and has
transcribed a 5 s clip, "peak" the peak after the recording. RTF = wall time / audio duration;
CPU time is reported too, as other processes on a shared machine inflate wall time.

Without `--model` the tiny random SpeakerLM (testing_utils) is used: its `generate` runs for real
(`--new-tokens` tokens per segment, forced), and its output is then replaced by a fixed two-speaker
transcript of the segment so that speaker embedding and linking run as they would with a trained
model. With `--model` (an exported folder) the model's own output is used. Needs `espeak-ng`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RATE = 16000
VOICES = (("en+m3", 150), ("en+f2", 175), ("en+m7", 140), ("en+f4", 165))


def base_meeting(seconds: float = 300.0, seed: int = 0) -> np.ndarray:
    """A meeting of four espeak-ng voices taking turns with 0.3-2.5 s pauses."""
    from concurrent.futures import ThreadPoolExecutor

    from speakerlm_hf.data.toy_corpus import TOY_SENTENCES, espeak

    rng = np.random.default_rng(seed)
    wanted = [(v, s) for v in range(len(VOICES)) for s in range(len(TOY_SENTENCES))]
    with ThreadPoolExecutor(2) as pool:
        spoken = pool.map(lambda w: espeak(TOY_SENTENCES[w[1]], *VOICES[w[0]]), wanted)
        clips = dict(zip(wanted, spoken, strict=True))
    audio = np.zeros(int(seconds * RATE), dtype=np.float32)
    cursor, previous = int(0.5 * RATE), None
    while True:
        voice = int(rng.choice([v for v in range(len(VOICES)) if v != previous]))
        for _ in range(int(rng.integers(1, 3))):
            clip = clips[(voice, int(rng.integers(len(TOY_SENTENCES))))]
            if cursor + clip.size > audio.size:
                return audio + (10 ** (-50 / 20) * rng.standard_normal(audio.size)).astype(np.float32)
            audio[cursor : cursor + clip.size] = clip
            cursor += clip.size + int(rng.uniform(0.15, 0.4) * RATE)
        cursor += int(rng.uniform(0.3, 2.5) * RATE)
        previous = voice


def write_recording(path: Path, minutes: float, base: np.ndarray) -> None:
    """`minutes` of audio: the base meeting tiled, written block by block (int16)."""
    import soundfile

    remaining = int(minutes * 60 * RATE)
    with soundfile.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as handle:
        while remaining > 0:
            piece = base[:remaining]
            handle.write(piece)
            remaining -= piece.size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def scripted(model, tokenizer, new_tokens: int):
    """Real generation of `new_tokens` tokens, answered with a two-speaker transcript of each segment."""
    import torch

    original = model.generate

    def generate(input_ids, input_features_mask=None, **kwargs):
        original(
            input_ids=input_ids,
            input_features_mask=input_features_mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            **{k: v for k, v in kwargs.items() if k not in ("max_new_tokens", "min_new_tokens")},
        )
        rows = []
        for frames in input_features_mask.sum(-1).tolist():
            seconds = frames * 0.06  # LFR frames are 60 ms
            half = seconds / 2
            text = (
                f"[0.0-{half:.1f}] spk0: we should move the release\n[{half:.1f}-{seconds:.1f}] spk1: I agree"
            )
            rows.append(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        longest = max(len(r) for r in rows)
        new = torch.tensor([r + [tokenizer.pad_token_id] * (longest - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)

    model.generate = generate


def run_one(args: argparse.Namespace) -> None:
    """Child process: load, warm up, transcribe one file; print a JSON line."""
    import soundfile
    import torch
    from transformers import pipeline

    from speakerlm_hf import hub
    from speakerlm_hf.pipeline_speakerlm import TASK
    from speakerlm_hf.testing_utils import tiny_speakerlm

    torch.set_num_threads(args.threads)
    if args.model:
        model, processor = hub.load_exported(args.model)
    else:
        model, processor = tiny_speakerlm()
        scripted(model, processor.tokenizer, args.new_tokens)
    hub.register_auto_classes()
    pipe = pipeline(TASK, model=model, processor=processor)
    kwargs = {"batch_size": args.batch_size, "return_timestamps": True}
    if args.model:
        kwargs["max_new_tokens"] = args.new_tokens
    with tempfile.TemporaryDirectory() as folder:
        warmup = Path(folder) / "warmup.wav"
        soundfile.write(warmup, soundfile.read(args.run_one, frames=5 * RATE, dtype="float32")[0], RATE)
        pipe(str(warmup), **kwargs)
    loaded = peak_rss_mb()
    segments = []
    start, cpu = time.perf_counter(), time.process_time()
    result = pipe(args.run_one, progress_callback=lambda done, total: segments.append(total), **kwargs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    duration = soundfile.info(args.run_one).duration
    speakers = sorted({turn["speaker"] for turn in result["turns"]})
    print(
        json.dumps(
            {
                "duration": duration,
                "wall": wall,
                "cpu": cpu,
                "segments": segments[-1] if segments else 0,
                "turns": len(result["turns"]),
                "speakers": len(speakers),
                "loaded_mb": loaded,
                "peak_mb": peak_rss_mb(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 30, 60])
    parser.add_argument("--model", help="exported SpeakerLM folder (default: the tiny random model)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per segment")
    parser.add_argument("--workdir", type=Path, help="where the recordings are written (default: a temp dir)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(args)
        return

    base = base_meeting()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        for minutes in args.minutes:
            path = Path(folder) / f"meeting_{minutes:g}min.wav"
            write_recording(path, minutes, base)
            command = [sys.executable, __file__, "--run-one", str(path), "--threads", str(args.threads)]
            command += ["--batch-size", str(args.batch_size), "--new-tokens", str(args.new_tokens)]
            if args.model:
                command += ["--model", args.model]
            done = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
            )
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["minutes"] = minutes
            rows.append(row)
            path.unlink()
            print(
                f"{minutes:g} min: {row['wall']:.1f} s, RTF {row['wall'] / row['duration']:.4f}, "
                f"peak {row['peak_mb']:.0f} MB",
                flush=True,
            )

    print()
    print(
        f"model: {args.model or 'tiny random SpeakerLM'}; {args.threads} torch thread(s); batch {args.batch_size}"
    )
    print(
        "| minutes | segments | speakers | wall s | RTF | CPU s | CPU s per audio min "
        "| RSS after load MB | peak RSS MB | growth MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['minutes']:g} | {row['segments']} | {row['speakers']} | {row['wall']:.1f} | "
            f"{row['wall'] / row['duration']:.4f} | {row['cpu']:.1f} | {row['cpu'] / row['duration'] * 60:.2f} | "
            f"{row['loaded_mb']:.0f} | {row['peak_mb']:.0f} | {row['peak_mb'] - row['loaded_mb']:.0f} |"
        )
    if len(rows) > 1:
        print()
        durations = np.array([row["duration"] for row in rows])
        for name in ("wall", "cpu"):
            costs = np.array([row[name] for row in rows])
            slope, intercept = np.polyfit(durations, costs, 1)
            residual = np.abs(costs - (slope * durations + intercept)).max() / costs.max()
            print(
                f"linear fit: {name} = {slope:.4f} x duration + {intercept:.2f} s "
                f"(largest deviation {residual:.1%} of the longest run)"
            )


if __name__ == "__main__":
    main()
