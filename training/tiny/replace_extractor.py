"""Put a (further) trained speaker-embedding extractor into a SpeakerLM checkpoint.

    python -m training.tiny.replace_extractor --model work/tiny/stage4e/final \
        --extractor work/tiny/speaker_extractor2 --out work/tiny/stage4e-x2

The extractor must have the checkpoint's architecture and sizes (`training.tiny.speaker_extractor
--init-from` continues the checkpoint's own one); every other weight, the tokenizer and the
processor are copied unchanged. The extractor stays frozen. The new checkpoint is written into a
temporary sibling folder and moved into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from speakerlm_hf.assemble import check_output_folder, save_atomically
from speakerlm_hf.hub import load_exported
from training.tiny.eval_speaker_extractor import load_extractor


def replace_extractor(
    model_dir: str | os.PathLike,
    extractor_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
) -> int:
    """Write `model_dir` with its speaker encoder taken from `extractor_dir` to `output_dir`; returns
    the number of tensors replaced. Raises ValueError when the extractor does not fit the model."""
    if Path(output_dir).absolute() == Path(model_dir).absolute():
        raise ValueError(f"the output folder {output_dir} is the model folder; write elsewhere")
    check_output_folder(output_dir, overwrite)  # before loading the model
    model, processor = load_exported(model_dir)
    extractor = load_extractor(extractor_dir)
    current = model.speaker_encoder
    if type(extractor) is not type(current):
        raise ValueError(
            f"{extractor_dir} holds a {type(extractor).__name__}, but {model_dir} uses a "
            f"{type(current).__name__} speaker encoder"
        )
    new_state, old_state = extractor.state_dict(), current.state_dict()
    mismatched = sorted(
        name
        for name in new_state.keys() | old_state.keys()
        if name not in new_state or name not in old_state or new_state[name].shape != old_state[name].shape
    )
    if mismatched:
        raise ValueError(
            f"{extractor_dir} does not have the sizes of {model_dir}'s speaker encoder "
            f"({len(mismatched)} tensors differ, e.g. {mismatched[0]})"
        )
    with torch.no_grad():
        current.load_state_dict(new_state, strict=True)
    current.eval().requires_grad_(False)
    save_atomically(model, processor, output_dir, overwrite=overwrite)
    return len(new_state)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.tiny.replace_extractor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="SpeakerLM checkpoint folder")
    parser.add_argument(
        "--extractor",
        required=True,
        help="extractor folder (save_pretrained) or another SpeakerLM checkpoint",
    )
    parser.add_argument("--out", required=True, help="folder for the new checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        count = replace_extractor(args.model, args.extractor, args.out, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"error: {error}") from error
    print(f"{args.out}: {count} speaker-encoder tensors from {args.extractor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
