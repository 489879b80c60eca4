"""The `speakerlm` command: one subcommand per job, each registered by the module that does it."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands through a `register(subparsers)` function.
SUBCOMMAND_MODULES = (
    "speakerlm_hf.assemble",
    "speakerlm_hf.metrics.cli",
    "speakerlm_hf.hub",
    "speakerlm_hf.averaging",
    "speakerlm_hf.data.prepare",
    "speakerlm_hf.transcribe",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speakerlm", description="SpeakerLM: who spoke when, and what, with one multimodal LLM."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"speakerlm {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
