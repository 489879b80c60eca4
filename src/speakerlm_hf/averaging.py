"""Checkpoint averaging: `speakerlm average OUTPUT CHECKPOINT...` (a "model soup" of one model's runs).

Averaging the weights of several checkpoints of the same model (the last checkpoints of a run, or the
ends of short runs that started from the same weights) is the usual last step of ASR recipes: the
average sits in a flatter region of the loss than any single end point and often transcribes unseen
voices better. training/tiny/README.md reports what it did for SpeakerLM-Tiny.

Every checkpoint is loaded with `load_exported` (safetensors only, checked against its config) and
must have the same tensors (names and shapes) and the same tokenizer vocabulary as the first. LoRA
checkpoints are merged before averaging, so the merged weights are averaged, never the low-rank
factors. Floating-point tensors are averaged (weighted if asked) with a float64 running sum;
integer buffers (batch-norm step counters) are taken from the first checkpoint, as are the config,
the generation config and the processor. The result is written to a temporary sibling folder and
moved into place, so a failure leaves no half-written output. Peak memory is about one model plus
a float64 copy of its weights.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .assemble import check_output_folder, save_atomically
from .hub import load_exported

AVERAGE_DESCRIPTION = """\
Average the weights of saved SpeakerLM checkpoints of one model (same architecture and tokenizer):
the last checkpoints of a run, or the ends of short runs that started from the same weights.
Floating-point tensors are averaged (optionally weighted), LoRA checkpoints are merged first, and the
config, generation config and processor come from the first checkpoint. Example:

    speakerlm average outputs/soup outputs/run-a/final outputs/run-b/final outputs/run-c/final
"""


def _loaded(folder: Path):
    model, processor = load_exported(folder)
    if getattr(model.config, "lora", None):
        model.merge_lora()
    return model, processor


def average_checkpoints(
    checkpoints: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    weights: Sequence[float] | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write the (weighted) average of `checkpoints` to `output_dir`; returns counts of the tensors
    averaged and copied. Raises ValueError naming the checkpoint that does not fit."""
    folders = [Path(c) for c in checkpoints]
    if len(folders) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(folders)}")
    if weights is None:
        weights = [1.0] * len(folders)
    weights = [float(w) for w in weights]
    if len(weights) != len(folders):
        raise ValueError(f"{len(weights)} weights given for {len(folders)} checkpoints")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights}")
    target = Path(output_dir).absolute()
    for folder in folders:
        if folder.absolute() == target:
            raise ValueError(f"the output folder {target} is also a checkpoint to average; write elsewhere")
    check_output_folder(target, overwrite)  # before loading every checkpoint

    model, processor = _loaded(folders[0])
    state = model.state_dict()
    shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    vocab = processor.tokenizer.get_vocab()
    averaged = [name for name, tensor in state.items() if tensor.is_floating_point()]
    sums = {name: state[name].detach().to(torch.float64) * weights[0] for name in averaged}
    for folder, weight in zip(folders[1:], weights[1:], strict=True):
        other, other_processor = _loaded(folder)
        other_state = other.state_dict()
        other_shapes = {name: tuple(tensor.shape) for name, tensor in other_state.items()}
        if other_shapes != shapes:
            missing = sorted(shapes.keys() - other_shapes.keys())
            extra = sorted(other_shapes.keys() - shapes.keys())
            reshaped = sorted(n for n in shapes.keys() & other_shapes.keys() if shapes[n] != other_shapes[n])
            problems = "; ".join(
                f"{len(names)} {kind} (e.g. {names[0]})"
                for kind, names in (("missing", missing), ("extra", extra), ("reshaped", reshaped))
                if names
            )
            raise ValueError(f"{folder} is not the same model as {folders[0]}: tensors {problems}")
        if other_processor.tokenizer.get_vocab() != vocab:
            raise ValueError(f"{folder} has a different tokenizer vocabulary from {folders[0]}")
        for name in averaged:
            sums[name].add_(other_state[name].detach().to(torch.float64), alpha=weight)
        del other, other_state
    total = sum(weights)
    with torch.no_grad():
        for name in averaged:
            state[name].copy_((sums[name] / total).to(state[name].dtype))
    save_atomically(model, processor, target, overwrite=overwrite)
    return {"averaged": len(averaged), "copied": len(state) - len(averaged)}


def run_average(args: argparse.Namespace) -> int:
    counts = average_checkpoints(
        args.checkpoints, args.output, weights=args.weights, overwrite=args.overwrite
    )
    print(
        f"wrote {args.output}: {counts['averaged']} tensors averaged over {len(args.checkpoints)} checkpoints, "
        f"{counts['copied']} integer buffers from {args.checkpoints[0]}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `average` subcommand to the project's CLI."""
    parser = subparsers.add_parser(
        "average",
        help="average the weights of checkpoints of one model (a model soup)",
        description=AVERAGE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", type=Path, help="folder to write the averaged model to")
    parser.add_argument("checkpoints", nargs="+", type=Path, help="saved SpeakerLM folders (two or more)")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per checkpoint (default: equal)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(func=run_average)


__all__ = ["average_checkpoints", "register"]
