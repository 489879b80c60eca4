"""``speakerlm score``: score hypothesis transcripts against references (a thin shell over the library).

Also runnable on its own: ``python -m speakerlm_hf.metrics.cli score --ref REF --hyp HYP``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .der import diarization_error
from .readers import FORMATS, SCORE_SUFFIX, Sessions, load_sessions
from .scoring import MODES, score_sessions

CLI_MODES = (*MODES, "der")
DEFAULT_COLLARS = {"tcp": 5.0, "der": 0.0}

__all__ = ["register", "run_score", "main"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ref", required=True, type=Path, help="reference transcript file or folder")
    parser.add_argument("--hyp", required=True, type=Path, help="hypothesis transcript file or folder")
    parser.add_argument(
        "--mode",
        choices=CLI_MODES,
        default="cp",
        help="speaker-attributed metric, or der for who spoke when without the text (default: cp)",
    )
    parser.add_argument(
        "--collar",
        type=float,
        default=None,
        help="tcp collar (default: 5) or DER no-score collar around reference boundaries (default: 0), seconds",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="input format of both sides (default: from the extension, then the content)",
    )
    parser.add_argument("--ref-format", choices=FORMATS, default=None, help="overrides --format for --ref")
    parser.add_argument("--hyp-format", choices=FORMATS, default=None, help="overrides --format for --hyp")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"JSON result path (default: ./speakerlm_<mode>{SCORE_SUFFIX})",
    )
    parser.add_argument("--per-session", action="store_true", help="also print one row per session")
    parser.add_argument(
        "--partial",
        action="store_true",
        help="score only the reference's sessions when the hypothesis has others",
    )


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``score`` subcommand to the project's CLI."""
    parser = subparsers.add_parser(
        "score",
        help="CER, cpCER / saCER / tcpCER and Δ of hypothesis transcripts, or their DER",
        description=(
            "Score transcripts by roles: CER (speakers ignored), the speaker-attributed rate "
            "(cpCER, saCER or tcpCER) and Δ = attributed rate - CER, pooled over sessions; or, "
            "with --mode der, the diarization error rate of their turn times (text ignored). "
            "Inputs: our JSON turn lists, meeteval SegLST JSON, STM, RTTM, AliMeeting '$' files "
            "or the model's '<label>: <text>' transcripts, as files or folders."
        ),
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_score)
    return parser


def _pair_single_sessions(reference: Sessions, hypothesis: Sessions) -> Sessions:
    # One file against one file (e.g. ref.json vs hyp.txt): the two sessions are the same meeting.
    if len(reference) == 1 and len(hypothesis) == 1 and reference.keys() != hypothesis.keys():
        return {next(iter(reference)): next(iter(hypothesis.values()))}
    return hypothesis


def run_score(args: argparse.Namespace) -> int:
    """Handler of ``score``: print the table, write the JSON, return the exit code."""
    collar = DEFAULT_COLLARS.get(args.mode, 5.0) if args.collar is None else args.collar
    try:
        reference = load_sessions(args.ref, args.ref_format or args.format)
        hypothesis = load_sessions(args.hyp, args.hyp_format or args.format)
        hypothesis = _pair_single_sessions(reference, hypothesis)
        if args.mode == "der":
            report = diarization_error(reference, hypothesis, collar=collar, partial=args.partial)
        else:
            report = score_sessions(
                reference, hypothesis, mode=args.mode, collar=collar, partial=args.partial
            )
    except (OSError, ValueError) as error:
        print(f"speakerlm score: error: {error}", file=sys.stderr)
        return 2
    print(report.format_table(per_session=args.per_session))
    output = args.output or Path(f"speakerlm_{args.mode}{SCORE_SUFFIX}")
    output.parent.mkdir(parents=True, exist_ok=True)
    result = report.to_dict()
    result["reference"], result["hypothesis"] = str(args.ref), str(args.hyp)
    output.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point with the single subcommand ``score``."""
    parser = argparse.ArgumentParser(prog="python -m speakerlm_hf.metrics.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
