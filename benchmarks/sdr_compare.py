"""SpeakerLM against the cascades, on one dataset in one run: CER, cpCER, Δcp, saCER, Δsa, real-time factor.

    python benchmarks/sdr_compare.py --data data/synthetic-en --limit 50 [--model FOLDER] [--llm FOLDER]
    python benchmarks/sdr_compare.py --data /data/AliMeeting --split Eval --output compare.json

Systems:
- SD+ASR: `speakerlm_hf.cascade.CascadeSDR` with the SpeakerLM model's own parts (its speaker
  extractor for the embeddings, its ASR task for each turn), or funasr models with `--funasr-asr`
  and `--funasr-speaker` (local folders, e.g. SenseVoiceSmall / Paraformer and CAM++).
- SD+ASR+LLM: the cascade's transcript corrected zero-shot with the spec's prompt by `--llm` (a
  causal LM folder), by default the SpeakerLM model's own LLM.
- SpeakerLM: the `speaker-diarization-recognition` pipeline.

`--data` is a synthetic corpus folder (`training/synthetic`; its test split's utterances are
mixed into 2-4 speaker conversations by the stage-2 simulator, seeded, with enrollment clips of
other utterances), an AliMeeting root (`--split Eval|Test`, cut into 40-50 s segments as the data
preparation does) or a prepared parquet folder (`--split`). No-Regist scores (CER, cpCER, Δcp)
come from SpeakerLM run without registration; Match-Regist scores (saCER, Δsa) from SpeakerLM run
with every present speaker registered by its enrollment clips. The cascade runs once with the
enrollment clips: they only name its clusters, which cpCER does not see. Rates pool errors over
all examples. RTF = processing wall time / audio duration (SpeakerLM: its No-Regist run; the
corrected cascade: the cascade plus the correction).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from speakerlm_hf.cascade import CascadeConfig, CascadeSDR, correct_with_llm
from speakerlm_hf.data import decode_prepared_row
from speakerlm_hf.data.audio import SAMPLING_RATE
from speakerlm_hf.linking_speakerlm import VoiceThresholds
from speakerlm_hf.metrics import score_sessions
from speakerlm_hf.transcribe import load_pipeline

COLUMNS = ("CER", "cpCER", "Δcp", "saCER", "Δsa", "RTF")


def synthetic_rows(folder: Path, limit: int, seed: int) -> Iterator[dict]:
    """Conversations simulated from a synthetic corpus's test utterances (voices never heard in training)."""
    from speakerlm_hf.data import ConversationSimulator, load_prepared

    simulator = ConversationSimulator(load_prepared(folder, "test", streaming=False), seed=seed)
    for index in range(limit):
        yield simulator.simulate(np.random.default_rng([seed, index]), f"synthetic-test-{seed}-{index:04d}")


def alimeeting_rows(root: Path, split: str, mic: str, seed: int) -> Iterator[dict]:
    from speakerlm_hf.data import alimeeting_sessions, session_rows

    for session in alimeeting_sessions(root, split, mic):
        yield from session_rows(session, seed=seed)


def load_examples(
    data: str, split: str | None, limit: int | None, seed: int = 0, mic: str = "far"
) -> list[dict]:
    """The evaluation examples of a synthetic corpus, an AliMeeting root or a prepared folder."""
    folder = Path(data)
    if not folder.exists():
        raise FileNotFoundError(f"--data {data!r} does not exist")
    if (folder / "speakers.json").is_file() and (folder / "manifest.json").is_file():
        rows: Iterator[dict] = synthetic_rows(folder, limit or 20, seed)
    elif folder.is_dir() and any(folder.glob("*_Ali")):
        rows = alimeeting_rows(folder, split or "Eval", mic, seed)
    else:
        from speakerlm_hf.data import load_prepared

        rows = iter(load_prepared(folder, split or "test", streaming=True))
    examples = []
    for row in rows:
        if limit is not None and len(examples) >= limit:
            break
        examples.append(decode_prepared_row(row))
    if not examples:
        raise ValueError(f"--data {data!r} gave no examples")
    return examples


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def format_table(results: dict[str, dict]) -> str:
    """The markdown comparison table (rates in %)."""
    lines = ["| System | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, result in results.items():
        cells = [_rate(result[key]) for key in ("cer", "cp", "delta_cp", "sa", "delta_sa")]
        cells.append("n/a" if result["rtf"] is None else f"{result['rtf']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(
    reference: dict, no_regist: dict, match_regist: dict, seconds: float, audio_seconds: float
) -> dict:
    """Pooled No-Regist and Match-Regist scores and the RTF of one system."""
    cp = score_sessions(reference, no_regist, "cp")
    sa = score_sessions(reference, match_regist, "sa")
    return {
        "cer": cp.cer.rate,
        "cp": cp.attributed.rate,
        "delta_cp": cp.delta,
        "sa": sa.attributed.rate,
        "delta_sa": sa.delta,
        "rtf": seconds / audio_seconds if audio_seconds else None,
        "seconds": seconds,
        "speaker_count_accuracy": cp.speaker_count_accuracy,
    }


def compare(
    examples: Sequence[dict],
    pipe,
    cascade: CascadeSDR,
    llm=None,
    llm_tokenizer=None,
    generate_kwargs: dict | None = None,
    oracle_count: bool = False,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """(pooled results by system, hypotheses by system and example id)."""
    generate_kwargs = generate_kwargs or {}
    reference = {e["id"]: e["turns"] for e in examples}
    hypotheses: dict[str, dict] = {"cascade": {}, "corrected": {}, "no_regist": {}, "match_regist": {}}
    seconds = {"cascade": 0.0, "correction": 0.0, "speakerlm": 0.0}
    corrected_count = 0
    for example in examples:
        audio, name = example["audio"], example["id"]
        hints = {"num_speakers": len({t["speaker"] for t in example["turns"]})} if oracle_count else {}
        start = time.perf_counter()
        result = cascade(audio, speakers=example["enrollment"] or None, **hints)
        seconds["cascade"] += time.perf_counter() - start
        hypotheses["cascade"][name] = result["turns"]
        if llm is not None:
            start = time.perf_counter()
            turns, corrected = correct_with_llm(result["turns"], llm, llm_tokenizer)
            seconds["correction"] += time.perf_counter() - start
            hypotheses["corrected"][name] = turns
            corrected_count += corrected
        start = time.perf_counter()
        hypotheses["no_regist"][name] = pipe(audio, **hints, **generate_kwargs)["turns"]
        seconds["speakerlm"] += time.perf_counter() - start
        speakers = example["enrollment"] or None
        hypotheses["match_regist"][name] = pipe(audio, speakers=speakers, **hints, **generate_kwargs)["turns"]
    audio_seconds = sum(e["audio"].size for e in examples) / SAMPLING_RATE
    results = {
        "SD+ASR": summarize(
            reference, hypotheses["cascade"], hypotheses["cascade"], seconds["cascade"], audio_seconds
        )
    }
    if llm is not None:
        results["SD+ASR+LLM"] = summarize(
            reference,
            hypotheses["corrected"],
            hypotheses["corrected"],
            seconds["cascade"] + seconds["correction"],
            audio_seconds,
        )
        results["SD+ASR+LLM"]["corrected_examples"] = corrected_count
    results["SpeakerLM"] = summarize(
        reference, hypotheses["no_regist"], hypotheses["match_regist"], seconds["speakerlm"], audio_seconds
    )
    return results, hypotheses


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/sdr_compare.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="synthetic corpus, AliMeeting root or prepared folder")
    parser.add_argument("--split", help="AliMeeting split (default Eval) or prepared split (default test)")
    parser.add_argument("--mic", default="far", choices=("far", "near"), help="AliMeeting microphone")
    parser.add_argument("--limit", type=int, help="at most this many examples (synthetic: default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated conversations")
    parser.add_argument("--model", help="exported SpeakerLM folder or Hub id (default: the shipped model)")
    parser.add_argument("--llm", help="causal LM folder for the correction (default: SpeakerLM's own LLM)")
    parser.add_argument("--no-llm", action="store_true", help="leave out the corrected cascade")
    parser.add_argument(
        "--funasr-asr", help="local funasr Paraformer / SenseVoice folder for the cascade's ASR"
    )
    parser.add_argument("--funasr-speaker", help="local funasr CAM++ folder for the cascade's embeddings")
    parser.add_argument(
        "--threshold",
        type=float,
        help="cascade AHC threshold (default: with SpeakerLM's extractor, the model's voice thresholds; "
        f"with funasr's, {CascadeConfig.threshold})",
    )
    parser.add_argument(
        "--oracle-count", action="store_true", help="give every system the true speaker count"
    )
    parser.add_argument("--max-new-tokens", type=int, help="longest SpeakerLM output per segment or turn")
    parser.add_argument("--device", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.funasr_asr) != bool(args.funasr_speaker):
        raise SystemExit("--funasr-asr and --funasr-speaker go together")
    examples = load_examples(args.data, args.split, args.limit, args.seed, args.mic)
    pipe = load_pipeline(args.model, args.device)
    generate_kwargs = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    if args.funasr_asr:
        config = CascadeConfig() if args.threshold is None else CascadeConfig(threshold=args.threshold)
        cascade = CascadeSDR.from_funasr(args.funasr_asr, args.funasr_speaker, args.device or "cpu", config)
    else:
        # the model's extractor: the cosines calibrated for it (`config.voice_thresholds`)
        voices = VoiceThresholds.from_config(pipe.model.config)
        threshold = voices.cluster if args.threshold is None else args.threshold
        config = CascadeConfig(threshold=threshold, registration_threshold=voices.registered)
        cascade = CascadeSDR.from_speakerlm(pipe, config, **generate_kwargs)
    llm = tokenizer = None
    if not args.no_llm:
        if args.llm:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.llm)
            llm = AutoModelForCausalLM.from_pretrained(args.llm).to(pipe.device).eval()
        else:
            llm, tokenizer = pipe.model.language_model, pipe.processor.tokenizer
    results, _ = compare(examples, pipe, cascade, llm, tokenizer, generate_kwargs, args.oracle_count)
    audio_seconds = sum(e["audio"].size for e in examples) / SAMPLING_RATE
    print(f"{len(examples)} examples, {audio_seconds:.1f} s of audio, rates in %")
    print(format_table(results))
    if args.output:
        report = {
            "data": str(args.data),
            "split": args.split,
            "examples": len(examples),
            "audio_seconds": audio_seconds,
            "model": args.model or "default",
            "llm": args.llm or (None if args.no_llm else "speakerlm-own-llm"),
            "cascade": "funasr" if args.funasr_asr else "speakerlm-parts",
            "oracle_count": args.oracle_count,
            "results": results,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
