"""Benchmark: cpCER of 1,000 sessions (4 speakers x ~300 characters) against meeteval's cpWER.

Both score the same synthetic sessions in one run: ours from the raw turns (normalisation
included), meeteval from the same turns already normalised and split into characters (its
cpWER is our cpCER on that input). The pooled error counts must agree; the script prints both
timings (best of ``--repeats``) and the ratio meeteval / ours. A second pair times the whole
report (CER + cpCER: our ``score_sessions`` against meeteval's SISO WER on each session's
merged text plus its cpWER).

    python benchmarks/bench_metrics.py [--sessions 1000] [--backend auto|rapidfuzz|numpy]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
import warnings

from speakerlm_hf.metrics import cp_cer, score_sessions, scoring_characters, session_text
from speakerlm_hf.metrics.levenshtein import resolve_backend

CHARACTERS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种"
    "面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本"
)
PUNCTUATION = "，。？！、"


def _utterance(rng: random.Random, length: int) -> str:
    text = "".join(rng.choice(CHARACTERS) for _ in range(length))
    cut = rng.randrange(1, length)
    return text[:cut] + rng.choice(PUNCTUATION) + text[cut:] + rng.choice(PUNCTUATION)


def _corrupt(rng: random.Random, text: str, rate: float) -> str:
    out = []
    for char in text:
        draw = rng.random()
        if draw < rate * 0.6:
            out.append(rng.choice(CHARACTERS))
        elif draw < rate * 0.8:
            continue
        elif draw < rate:
            out.extend((char, rng.choice(CHARACTERS)))
        else:
            out.append(char)
    return "".join(out)


def make_sessions(count: int, speakers: int = 4, characters: int = 300, seed: int = 0):
    """Reference and hypothesis sessions with substitutions, deletions, insertions and
    speaker confusions (turns given to the wrong speaker, anonymous permuted labels)."""
    rng = random.Random(seed)
    reference, hypothesis = {}, {}
    for index in range(count):
        session = f"session{index:04d}"
        ref_turns, hyp_turns = [], []
        labels = [f"spk{k}" for k in range(speakers)]
        rng.shuffle(labels)
        clock = 0.0
        for turn in range(5 * speakers):
            speaker = turn % speakers
            text = _utterance(rng, characters // 5)
            start, end = round(clock, 2), round(clock + rng.uniform(4.0, 8.0), 2)
            clock = end - rng.uniform(0.0, 1.0)
            ref_turns.append({"speaker": f"S{speaker}", "text": text, "start": start, "end": end})
            label = labels[speaker] if rng.random() > 0.1 else rng.choice(labels)
            hyp_turns.append(
                {"speaker": label, "text": _corrupt(rng, text, 0.15), "start": start, "end": end}
            )
        reference[session], hypothesis[session] = ref_turns, hyp_turns
    return reference, hypothesis


def to_seglst(sessions):
    """meeteval SegLST with each scored character as a word."""
    from meeteval.io import SegLST

    return SegLST(
        [
            {
                "session_id": session,
                "speaker": turn["speaker"],
                "words": " ".join(scoring_characters(turn["text"])),
                "start_time": turn["start"],
                "end_time": turn["end"],
            }
            for session, turns in sessions.items()
            for turn in turns
        ]
    )


def to_seglst_merged(sessions):
    """meeteval SegLST with one segment per session (all speakers in time order), for its CER."""
    from meeteval.io import SegLST

    return SegLST(
        [
            {
                "session_id": session,
                "speaker": "all",
                "words": " ".join(session_text(turns)),
            }
            for session, turns in sessions.items()
        ]
    )


def _best_time(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto", choices=("auto", "rapidfuzz", "numpy"))
    args = parser.parse_args()

    import meeteval

    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    reference, hypothesis = make_sessions(args.sessions)
    ref_seglst, hyp_seglst = to_seglst(reference), to_seglst(hypothesis)

    def ours():
        total = None
        for session, turns in reference.items():
            counts = cp_cer(turns, hypothesis[session], backend=args.backend)
            total = counts if total is None else total + counts
        return total

    def theirs():
        return sum(meeteval.wer.api.cpwer(ref_seglst, hyp_seglst).values())

    def theirs_report():
        merged_ref, merged_hyp = to_seglst_merged(reference), to_seglst_merged(hypothesis)
        return sum(meeteval.wer.api.sisower(merged_ref, merged_hyp).values()), theirs()

    ours_time, our_counts = _best_time(ours, args.repeats)
    theirs_time, their_counts = _best_time(theirs, args.repeats)
    report_time, report = _best_time(
        lambda: score_sessions(reference, hypothesis, mode="cp", backend=args.backend), args.repeats
    )
    their_report_time, (their_cer, _) = _best_time(theirs_report, args.repeats)
    if (our_counts.errors, our_counts.reference_length) != (their_counts.errors, their_counts.length):
        raise SystemExit(f"MISMATCH: ours {our_counts} vs meeteval {their_counts}")
    if report.cer.errors != their_cer.errors:
        raise SystemExit(f"CER MISMATCH: ours {report.cer} vs meeteval {their_cer}")
    result = {
        "sessions": args.sessions,
        "backend": resolve_backend(args.backend),
        "meeteval_version": meeteval.__version__ if hasattr(meeteval, "__version__") else None,
        "reference_characters": our_counts.reference_length,
        "cpCER": our_counts.rate,
        "errors_equal": True,
        "ours_cpcer_s": round(ours_time, 3),
        "meeteval_cpwer_s": round(theirs_time, 3),
        "ratio_meeteval_over_ours": round(theirs_time / ours_time, 2),
        "ours_cer_and_cpcer_report_s": round(report_time, 3),
        "meeteval_siso_and_cpwer_s": round(their_report_time, 3),
        "ratio_report_meeteval_over_ours": round(their_report_time / report_time, 2),
        "CER": report.cer.rate,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
