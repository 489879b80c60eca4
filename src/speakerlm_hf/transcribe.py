"""`speakerlm transcribe`: recordings of any length -> transcripts by speaker, in the formats asked for.

    speakerlm transcribe meeting.mp3 other.wav --speaker Mike=mike.wav --format srt,json --output-dir out/

The model is a folder written by `speakerlm export` (or a Hub repo id, downloaded first); it is
loaded with the installed package's classes from safetensors only, so no code from the folder
runs. Without `--model`, the default model shipped inside the package is used.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .formats import EXTENSIONS, FORMATS, format_txt, parse_formats, write_transcript

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"
DEFAULT_FORMATS = ("txt", "json")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Files a SpeakerLM export needs; anything else in a Hub repo (pickles, code) is not downloaded.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.md"]

__all__ = [
    "DEFAULT_MODEL",
    "resolve_model",
    "load_pipeline",
    "parse_speakers",
    "transcribe_files",
    "register",
]


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The local folder of `--model`: the default model, an existing folder, or a Hub repo id (downloaded)."""
    if model is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise FileNotFoundError(
                f"the default model is not installed (expected a SpeakerLM export in {DEFAULT_MODEL}); "
                "pass --model with a folder written by `speakerlm export` or a Hub repo id"
            )
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(
            f"--model {str(model)!r} is a file; expected an exported model folder or a Hub repo id"
        )
    text = str(model)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"model folder {text!r} does not exist (and it is not a Hub repo id owner/name)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as error:  # network, authentication and missing-repo errors alike
        raise OSError(f"could not download the model {text!r} from the Hub: {error}") from error


def load_pipeline(model: str | os.PathLike | None = None, device: str | None = None, dtype: str = "auto"):
    """The speaker-diarization-recognition pipeline of an exported model, built with the installed classes."""
    from transformers import pipeline

    from .hub import load_exported, register_auto_classes
    from .pipeline_speakerlm import TASK

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}")
    folder = resolve_model(model)
    speakerlm, processor = load_exported(folder, dtype=dtype)
    register_auto_classes()
    return pipeline(TASK, model=speakerlm, processor=processor, device=device)


def parse_speakers(items: Sequence[str]) -> dict[str, list[str]]:
    """`NAME=CLIP` items -> `{name: [clips]}`; a name given twice gets several clips."""
    speakers: dict[str, list[str]] = {}
    for item in items:
        name, separator, clip = item.partition("=")
        if not separator or not name.strip() or not clip:
            raise ValueError(f"--speaker {item!r} is not NAME=CLIP")
        if not Path(clip).is_file():
            raise FileNotFoundError(f"enrollment clip {clip!r} of speaker {name.strip()!r} does not exist")
        speakers.setdefault(name.strip(), []).append(clip)
    return speakers


def output_paths(audio: Path, output_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    return {name: output_dir / f"{audio.stem}{EXTENSIONS[name]}" for name in formats}


def transcribe_files(
    pipe,
    audio_files: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    speakers: Mapping[str, Any] | None = None,
    progress: bool = True,
    echo: bool = False,
    **call_kwargs,
) -> dict[str, list[Path] | Exception]:
    """Transcribe each file and write its transcripts; returns, per file, the paths written or the error.

    With `echo`, each file's transcript is also printed (as in the TXT output) once it is done.

    A file that cannot be read is reported and skipped; the others are still transcribed.
    """
    from tqdm.auto import tqdm

    files = [Path(path) for path in audio_files]
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems and stems[path.stem] != path:
            raise ValueError(
                f"{stems[path.stem]} and {path} would write the same output files ({path.stem}.*)"
            )
        stems[path.stem] = path
    # The enrollment clips are embedded once for all files.
    registered = pipe.embed_speakers(speakers) if speakers else None
    output_dir = Path(output_dir)
    outcome: dict[str, list[Path] | Exception] = {}
    several = len(files) > 1
    files_bar = tqdm(files, unit="file", disable=not progress or not several, position=0)
    bar = tqdm(total=0, unit="segment", disable=not progress, leave=False, position=int(several))
    try:
        for path in files_bar:
            bar.reset(total=0)
            bar.set_description(path.name)

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = pipe(
                    str(path),
                    speakers=registered,
                    return_timestamps=True,
                    progress_callback=advance,
                    **call_kwargs,
                )
            except (ValueError, OSError) as error:
                outcome[str(path)] = error
                continue
            outcome[str(path)] = [
                write_transcript(result["turns"], target, name, session_id=path.stem)
                for name, target in output_paths(path, output_dir, formats).items()
            ]
            if echo:
                bar.clear()
                print(f"== {path}\n{format_txt(result['turns'])}", flush=True)
    finally:
        bar.close()
        files_bar.close()
    return outcome


def run_transcribe(args: argparse.Namespace) -> int:
    """Handler of `speakerlm transcribe`."""
    formats = parse_formats(args.format or DEFAULT_FORMATS)
    speakers = parse_speakers(args.speaker)
    missing = [path for path in args.audio if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"audio file(s) not found: {', '.join(map(str, missing))}")
    pipe = load_pipeline(args.model, args.device, args.dtype)
    call_kwargs: dict[str, Any] = {"batch_size": args.batch_size}
    names = ("num_speakers", "min_speakers", "max_speakers", "max_new_tokens", "num_beams")
    for name in (*names, "ctc_weight", "speaker_weight", "timestamps_from"):
        if getattr(args, name) is not None:
            call_kwargs[name] = getattr(args, name)
    if args.free_labels:
        call_kwargs["constrain_labels"] = False
    if args.keep_model_labels:
        call_kwargs["relabel_speakers"] = False
    outcome = transcribe_files(
        pipe,
        args.audio,
        args.output_dir,
        formats,
        speakers,
        progress=not args.quiet,
        echo=not args.quiet,
        **call_kwargs,
    )
    failed = 0
    for path, written in outcome.items():
        if isinstance(written, Exception):
            failed += 1
            print(f"speakerlm transcribe: error: {written}", file=sys.stderr)
        elif not args.quiet:
            print(f"{path} -> {', '.join(str(target) for target in written)}")
    return 1 if failed else 0


DESCRIPTION = f"""\
Transcribe recordings by speaker: who spoke when, and what. Recordings of any length are cut at
pauses into segments of at most 50 s, transcribed in batches, and their anonymous speakers are
linked by voice across the whole recording (spk0, spk1, ... in order of first appearance);
registered speakers (--speaker) are labelled by name.

Audio: WAV, FLAC, OGG, MP3 (soundfile) and anything ffmpeg reads; any sampling rate, channels
are averaged. Outputs go to OUTPUT_DIR/<audio name><extension> for each format:
{", ".join(f"{n} ({EXTENSIONS[n]})" for n in FORMATS)}."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `transcribe` subcommand to the project's CLI."""
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe recordings of any length by speaker (JSON, TXT, SRT, VTT, RTTM, STM, SegLST)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("audio", nargs="+", type=Path, help="audio files")
    parser.add_argument(
        "--model",
        help="exported SpeakerLM folder or Hub repo id (default: the model shipped with the package)",
    )
    parser.add_argument(
        "--speaker",
        action="append",
        default=[],
        metavar="NAME=CLIP",
        help="register a speaker by an enrollment clip (at least 1 s); repeat for more speakers or clips",
    )
    parser.add_argument(
        "--format",
        action="append",
        metavar="FORMATS",
        help=f"comma-separated output formats: {', '.join(FORMATS)} or all (default: txt,json)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("."), help="folder for the outputs (default: .)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="segments per generate call (default: 4)")
    parser.add_argument("--num-speakers", type=int, help="exact number of speakers, registered ones included")
    parser.add_argument("--min-speakers", type=int, help="at least this many speakers")
    parser.add_argument("--max-speakers", type=int, help="at most this many speakers")
    parser.add_argument("--max-new-tokens", type=int, help="longest transcript of one segment, in tokens")
    parser.add_argument("--num-beams", type=int, help="beam search width (default: the model's)")
    parser.add_argument(
        "--free-labels",
        action="store_true",
        help="let the model write any speaker label (default: registered names and spk0, spk1, ... only)",
    )
    parser.add_argument(
        "--keep-model-labels",
        action="store_true",
        help="keep the speaker labels the model wrote (default: with turn times from the CTC alignment, "
        "each turn takes the speaker its own audio sounds like)",
    )
    parser.add_argument(
        "--ctc-weight",
        type=float,
        help="joint CTC / attention decoding weight in [0, 1) (default: for a model trained with CTC, as "
        "the default model, its config's decoding_ctc_weight or else 0.8; 0 turns it off)",
    )
    parser.add_argument(
        "--timestamps-from",
        choices=("ctc", "model"),
        help="turn times from the CTC forced alignment of the transcript on the audio (default for models "
        "trained with CTC, as the default model) or written by the model itself (default for others)",
    )
    parser.add_argument(
        "--speaker-weight",
        type=float,
        help="how strongly each turn's label follows the voice where it starts (default: 1.0; 0 turns it off)",
    )
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weights dtype (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    parser.set_defaults(func=run_transcribe)
