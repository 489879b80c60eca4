"""SpeakerLM Space: who spoke when, and what. Upload a meeting, enroll the people you know, read the transcript.

    python space/app.py [--model FOLDER_OR_HUB_ID] [--examples FOLDER] [--max-minutes 30] [--port 7860]

The model defaults to the one shipped inside the package (`SPEAKERLM_MODEL` overrides it, and a
folder or Hub repo id can be chosen under Options); it is loaded from safetensors with the
installed package's classes, so no code from a model folder runs. Every event handler is a plain
function of plain values (paths, strings, numbers), so the app's logic runs without a browser.
"""

from __future__ import annotations

import argparse
import atexit
import html
import inspect
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr
import soundfile
from matplotlib.figure import Figure

from speakerlm_hf.formats import EXTENSIONS, write_transcript
from speakerlm_hf.processing_speakerlm import check_speaker_names
from speakerlm_hf.transcribe import DEFAULT_MODEL, load_pipeline

MAX_SPEAKERS = 6
# The enrollment table's fields, one name and one clip per row, as handlers receive them (keywords).
NAME_FIELDS = tuple(f"name_{row}" for row in range(1, MAX_SPEAKERS + 1))
CLIP_FIELDS = tuple(f"clip_{row}" for row in range(1, MAX_SPEAKERS + 1))
DEFAULT_MAX_MINUTES = 30.0
# Enrollment needs seconds of speech; longer clips only cost time (they are embedded in 10 s pieces).
MAX_CLIP_SECONDS = 120.0
DEFAULT_EXAMPLES = DEFAULT_MODEL.parent / "examples"
EXAMPLE_MEETING_STEM = "meeting"
ENROLLMENT_FOLDERS = ("enrollment", "speakers")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm")
DOWNLOAD_FORMATS = ("srt", "json", "rttm")
# matplotlib's tab10: distinct, readable on light and dark backgrounds.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
CSS = """
.speakerlm-transcript .turn { border-left: 4px solid; padding: 2px 10px; margin: 6px 0; }
.speakerlm-transcript .turn-speaker { font-weight: 600; margin-right: 8px; }
.speakerlm-transcript .turn-time { opacity: 0.65; font-size: 0.85em; margin-right: 8px; font-variant-numeric: tabular-nums; }
"""
# System fonts only: the default theme would fetch Google fonts, and the app must run offline.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)


@dataclass
class Settings:
    """What the app serves: the model (empty: the shipped default), the examples folder, the upload limit."""

    model: str = field(default_factory=lambda: os.environ.get("SPEAKERLM_MODEL", ""))
    examples: Path = field(
        default_factory=lambda: Path(os.environ.get("SPEAKERLM_EXAMPLES", str(DEFAULT_EXAMPLES)))
    )
    max_minutes: float = field(
        default_factory=lambda: float(os.environ.get("SPEAKERLM_MAX_MINUTES", DEFAULT_MAX_MINUTES))
    )


def _error(message: str) -> gr.Error:
    """A message shown to the user (gr.Error renders HTML, so user text is escaped); no traceback in the log."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{seconds:.1f} s"
    return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"


def audio_duration(path: str | os.PathLike, what: str) -> float:
    """Duration in seconds read from the file's header (soundfile, else ffprobe), without decoding it.

    Raises gr.Error naming `what` when the file is not audio either can read.
    """
    path = os.fspath(path)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise _error(f"{what} is empty or missing; upload it again")
    try:
        return float(soundfile.info(path).duration)
    except (RuntimeError, TypeError, soundfile.LibsndfileError):
        pass
    ffprobe = shutil.which("ffprobe")
    if ffprobe is not None:
        try:
            done = subprocess.run(
                [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return float(done.stdout.strip())
        except (ValueError, subprocess.TimeoutExpired):
            pass
    raise _error(f"{what} could not be read as audio; use WAV, FLAC, MP3, OGG or M4A")


def enrolled_rows(table: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The filled rows of the enrollment table (`name_1`, `clip_1`, ... fields) as (name, clip)."""
    rows = [
        ((table.get(name) or "").strip(), table.get(clip) or None)
        for name, clip in zip(NAME_FIELDS, CLIP_FIELDS, strict=True)
    ]
    return [(name, clip) for name, clip in rows if name or clip]


def collect_speakers(table: Mapping[str, Any]) -> dict[str, str]:
    """`{name: clip}` of the enrollment table; a half-filled row or a bad name raises a gr.Error saying which."""
    rows = enrolled_rows(table)
    for number, (name, clip) in enumerate(rows, start=1):
        if not name:
            raise _error(
                f"Enrolled speaker {number} has a voice clip but no name; type the name their turns should carry"
            )
        if clip is None:
            raise _error(
                f"Enrolled speaker {name!r} has no voice clip; upload or record one, or remove the row"
            )
    try:
        names = check_speaker_names([name for name, _ in rows])
    except (TypeError, ValueError) as error:
        raise _error(f"Enrollment: {error}") from error
    return {name: clip for name, (_, clip) in zip(names, rows, strict=True)}


def registration_mode(**table: Any) -> str:
    """The registration mode that follows from the enrollment table, as a line of Markdown."""
    names = [name for name, _ in enrolled_rows(table) if name]
    if not names:
        return "**No registration**: speakers are labelled spk0, spk1, … in order of first appearance."
    try:
        check_speaker_names(names)
    except (TypeError, ValueError) as error:
        return f"⚠️ {html.escape(str(error))}"
    return (
        f"**Registration** of {len(names)} speaker{'s' if len(names) > 1 else ''} ({', '.join(names)}): "
        "their turns carry their names, anyone else is labelled spkK."
    )


def _row_updates(count: int) -> list[dict]:
    return [gr.update(visible=row < count) for row in range(MAX_SPEAKERS)]


def add_speaker(count: int) -> list:
    """Show one more enrollment row: [count, *row visibility]."""
    if count >= MAX_SPEAKERS:
        gr.Warning(f"At most {MAX_SPEAKERS} speakers can be enrolled here.")
    count = min(count + 1, MAX_SPEAKERS)
    return [count, *_row_updates(count)]


def remove_speaker(index: int, count: int, **table: Any) -> list:
    """Delete enrollment row `index` (from 0); the rows below move up: [*names, *clips, count, *row visibility]."""
    names = [table.get(key) or "" for key in NAME_FIELDS]
    clips = [table.get(key) or None for key in CLIP_FIELDS]
    del names[index], clips[index]
    count = max(1, count - 1)
    return [*names, "", *clips, None, count, *_row_updates(count)]


def reveal_rows(count: int, **table: Any) -> list:
    """Show every row that holds something (an example may fill hidden rows): [count, *row visibility]."""
    filled = [
        row
        for row, (name, clip) in enumerate(zip(NAME_FIELDS, CLIP_FIELDS, strict=True))
        if (table.get(name) or "").strip() or table.get(clip)
    ]
    count = max(count, filled[-1] + 1 if filled else 1)
    return [count, *_row_updates(count)]


def speaker_colors(turns: Sequence[Mapping]) -> dict[str, str]:
    """One palette colour per speaker, in order of first appearance."""
    colors: dict[str, str] = {}
    for turn in turns:
        colors.setdefault(turn["speaker"], PALETTE[len(colors) % len(PALETTE)])
    return colors


def _timed(turn: Mapping) -> bool:
    return turn.get("start") is not None and turn.get("end") is not None


def transcript_html(turns: Sequence[Mapping], colors: Mapping[str, str]) -> str:
    """The turns as speaker-coloured HTML blocks (all text escaped)."""
    if not turns:
        return '<p class="speakerlm-empty">No speech was found in the recording.</p>'
    blocks = []
    for turn in turns:
        speaker, color = html.escape(turn["speaker"]), colors[turn["speaker"]]
        times = (
            f'<span class="turn-time">{turn["start"]:.1f}–{turn["end"]:.1f} s</span>' if _timed(turn) else ""
        )
        blocks.append(
            f'<div class="turn" data-speaker="{speaker}" style="border-left-color: {color}">'
            f'<span class="turn-speaker" style="color: {color}">{speaker}</span>{times}'
            f'<span class="turn-text">{html.escape(turn["text"])}</span></div>'
        )
    return f'<div class="speakerlm-transcript">{"".join(blocks)}</div>'


def turns_table(turns: Sequence[Mapping]) -> list[list[str]]:
    """Rows (speaker, start, end, text), times in seconds with two decimals ('' without timestamps)."""
    return [
        [
            turn["speaker"],
            f"{turn['start']:.2f}" if _timed(turn) else "",
            f"{turn['end']:.2f}" if _timed(turn) else "",
            turn["text"],
        ]
        for turn in turns
    ]


def timeline_figure(
    turns: Sequence[Mapping], colors: Mapping[str, str], duration: float | None = None
) -> Figure | None:
    """Who spoke when: one row of bars per speaker (first speaker on top); None without turn times."""
    timed = [turn for turn in turns if _timed(turn)]
    if not timed:
        return None
    speakers = [speaker for speaker in colors if any(turn["speaker"] == speaker for turn in timed)]
    figure = Figure(figsize=(9, 0.9 + 0.45 * len(speakers)), layout="constrained")
    axes = figure.add_subplot()
    for row, speaker in enumerate(speakers):
        spans = [(t["start"], t["end"] - t["start"]) for t in timed if t["speaker"] == speaker]
        axes.broken_barh(spans, (row - 0.35, 0.7), facecolors=colors[speaker], label=speaker)
    axes.set_yticks(range(len(speakers)), labels=speakers)
    axes.set_ylim(len(speakers) - 0.5, -0.5)
    axes.set_xlim(0, max(duration or 0, max(turn["end"] for turn in timed)))
    axes.set_xlabel("time (s)")
    axes.set_title("Who spoke when", loc="left", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    return figure


_OUTPUT_ROOT: Path | None = None


def _output_folder() -> Path:
    """A fresh folder for one run's downloads, inside one temporary folder removed when the app exits."""
    global _OUTPUT_ROOT
    if _OUTPUT_ROOT is None:
        _OUTPUT_ROOT = Path(tempfile.mkdtemp(prefix="speakerlm-space-"))
        atexit.register(shutil.rmtree, _OUTPUT_ROOT, True)
    return Path(tempfile.mkdtemp(dir=_OUTPUT_ROOT))


def write_downloads(turns: Sequence[Mapping], session: str) -> list[str]:
    """SRT, JSON and RTTM files of the turns (JSON only when the turns have no times)."""
    folder = _output_folder()
    formats = DOWNLOAD_FORMATS if turns and all(_timed(t) for t in turns) else ("json",)
    return [
        str(write_transcript(turns, folder / f"{session}{EXTENSIONS[name]}", name, session_id=session))
        for name in formats
    ]


_PIPELINES: dict[str, Any] = {}
_PIPELINE_LOCK = threading.Lock()


def default_model_missing() -> bool:
    return not (DEFAULT_MODEL / "config.json").is_file()


MISSING_MODEL_MESSAGE = (
    f"The default SpeakerLM model is not installed (expected in {DEFAULT_MODEL}). Enter an exported model "
    "folder or a Hub repo id under Options, or start the app with --model / SPEAKERLM_MODEL."
)


def get_pipeline(model: str) -> Any:
    """The pipeline of `model` (a folder, a Hub repo id, or '' for the shipped default), loaded once.

    One model is kept in memory at a time. Load failures become a gr.Error naming the model.
    """
    model = (model or "").strip()
    if not model and default_model_missing():
        raise _error(MISSING_MODEL_MESSAGE)
    with _PIPELINE_LOCK:
        if model not in _PIPELINES:
            _PIPELINES.clear()
            device = "cuda" if _cuda_available() else None
            try:
                _PIPELINES[model] = load_pipeline(model or None, device=device)
            except (ValueError, TypeError, OSError) as error:
                raise _error(
                    f"The model {model or str(DEFAULT_MODEL)!r} could not be loaded: {error}"
                ) from error
        return _PIPELINES[model]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _speaker_hint(num_speakers: float | None) -> int | None:
    if num_speakers in (None, "", 0):
        return None
    if float(num_speakers) < 0 or float(num_speakers) != int(num_speakers):
        raise _error(f"The number of speakers must be a whole number (0 = unknown), got {num_speakers}")
    return int(num_speakers)


def _without_folders(message: str, paths: Sequence[str]) -> str:
    """The message with the server's upload paths cut to the file names the user knows."""
    for path in paths:
        message = message.replace(path, Path(path).name)
    return message


def transcribe(
    audio: str | None,
    timestamps: bool = True,
    num_speakers: float | None = 0,
    model: str = "",
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio finds the tracker by this default)
    max_minutes: float = DEFAULT_MAX_MINUTES,
    **table: Any,
) -> tuple[str, str, list[list[str]], Figure | None, list[str]]:
    """Run SpeakerLM on a recording with the speakers of the enrollment table.

    `table` holds the enrollment rows as `name_1=..., clip_1=path, name_2=...` (up to
    `MAX_SPEAKERS`); the registration mode follows from it. `model` is a folder, a Hub repo id or
    '' for the shipped default. Returns (summary Markdown, transcript HTML, table rows, timeline
    figure or None, download paths). User mistakes raise gr.Error with a plain message.
    """
    unknown = sorted(set(table) - set(NAME_FIELDS) - set(CLIP_FIELDS))
    if unknown:
        raise TypeError(f"transcribe() got unexpected fields {unknown}; expected name_1..clip_{MAX_SPEAKERS}")
    if not audio:
        raise _error("Upload a recording or record one with the microphone first")
    speakers = collect_speakers(table)
    hint = _speaker_hint(num_speakers)
    audio = os.fspath(audio)
    duration = audio_duration(audio, f"The recording {Path(audio).name!r}")
    if duration > max_minutes * 60:
        raise _error(
            f"The recording lasts {_clock(duration)}; this Space accepts up to {_clock(max_minutes * 60)}. "
            "Cut it into parts, or run SpeakerLM on your machine (speakerlm transcribe) for long files."
        )
    for name, clip in speakers.items():
        seconds = audio_duration(clip, f"The voice clip of {name!r} ({Path(clip).name})")
        if seconds > MAX_CLIP_SECONDS:
            raise _error(
                f"The voice clip of {name!r} lasts {_clock(seconds)}; up to {_clock(MAX_CLIP_SECONDS)} is accepted "
                "(10-30 s of their speech is enough)"
            )
    progress(0.0, desc="Loading the model")
    pipe = get_pipeline(model)
    progress(0.02, desc="Finding speech and embedding the enrolled voices")

    def advance(done: int, total: int) -> None:
        progress((done, total), desc=f"Transcribed {done} of {total} segments", unit="segments")

    started = time.perf_counter()
    try:
        result = pipe(
            audio,
            speakers=speakers or None,
            return_timestamps=bool(timestamps),
            num_speakers=hint,
            progress_callback=advance,
        )
    except (ValueError, TypeError, OSError) as error:
        raise _error(_without_folders(str(error), [audio, *map(os.fspath, speakers.values())])) from error
    elapsed = time.perf_counter() - started
    turns = result["turns"]
    colors = speaker_colors(turns)
    session = Path(audio).stem or "recording"
    summary = (
        f"**{len(turns)} turn{'s' * (len(turns) != 1)}** by **{len(colors)} speaker{'s' * (len(colors) != 1)}**"
        f" ({', '.join(colors) or 'none'}) in {_clock(duration)} of audio; transcribed in {elapsed:.1f} s. "
        + registration_mode(**table)
    )
    if turns and not timestamps:
        summary += " Turn on timestamps for the timeline and the SRT/RTTM files."
    return (
        summary,
        transcript_html(turns, colors),
        turns_table(turns),
        timeline_figure(turns, colors, duration),
        write_downloads(turns, session),
    )


# The table's fields as optional keyword-only parameters: Gradio's API page and gradio_client then
# list them by name (name_1, clip_1, ...) instead of requiring every one.
transcribe.__signature__ = inspect.signature(transcribe).replace(
    parameters=[
        *[p for p in inspect.signature(transcribe).parameters.values() if p.kind != p.VAR_KEYWORD],
        *[inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default="") for name in NAME_FIELDS],
        *[inspect.Parameter(clip, inspect.Parameter.KEYWORD_ONLY, default=None) for clip in CLIP_FIELDS],
    ]
)


@dataclass
class ExampleSet:
    """The bundled meeting and the enrollment clips found in an examples folder."""

    meeting: Path | None
    clips: dict[str, Path]


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
    )


def find_examples(folder: str | os.PathLike) -> ExampleSet:
    """The meeting (`meeting.*`) and the enrollment clips (`enrollment/<Name>.wav`) of an examples folder.

    Without an `enrollment/` (or `speakers/`) subfolder, the other audio files next to the meeting
    are the clips, each named by its file name.
    """
    folder = Path(folder)
    top = _audio_files(folder)
    meeting = next((path for path in top if path.stem.startswith(EXAMPLE_MEETING_STEM)), None)
    clips_folder = next((folder / name for name in ENROLLMENT_FOLDERS if (folder / name).is_dir()), None)
    candidates = _audio_files(clips_folder) if clips_folder else [p for p in top if p != meeting]
    return ExampleSet(meeting, {path.stem: path for path in candidates[:MAX_SPEAKERS]})


def example_rows(examples: ExampleSet) -> tuple[list[list[Any]], list[str]]:
    """gr.Examples rows for the inputs (recording, *names, *clips), and their labels."""
    if examples.meeting is None:
        return [], []
    empty = [""] * MAX_SPEAKERS + [None] * MAX_SPEAKERS
    rows, labels = [[str(examples.meeting), *empty]], ["Meeting, nobody enrolled"]
    if examples.clips:
        names = list(examples.clips) + [""] * (MAX_SPEAKERS - len(examples.clips))
        clips = [str(path) for path in examples.clips.values()]
        clips += [None] * (MAX_SPEAKERS - len(clips))
        rows.append([str(examples.meeting), *names, *clips])
        labels.append(f"Meeting with {', '.join(examples.clips)} enrolled")
    return rows, labels


INTRO = """# SpeakerLM: who spoke when, and what
Upload a meeting (or record one), optionally enroll the people you know by name and a short voice
clip, and get the transcript by speaker, a timeline, and SRT / JSON / RTTM files. One multimodal
LLM does diarization, recognition and speaker naming together
([paper](https://arxiv.org/abs/2508.06372))."""


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The app's layout and events; handlers are the module's plain functions."""
    settings = settings or Settings()
    examples = find_examples(settings.examples)
    with gr.Blocks(title="SpeakerLM", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        if not settings.model and default_model_missing():
            gr.Markdown(f"⚠️ {MISSING_MODEL_MESSAGE}", elem_id="model-missing")
        with gr.Row():
            with gr.Column(scale=5):
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Recording", elem_id="recording"
                )
                gr.Markdown(
                    f"### Enrolled speakers\nA name and a few seconds of each person's voice (up to {MAX_SPEAKERS})."
                )
                mode = gr.Markdown(registration_mode(), elem_id="registration-mode")
                count = gr.State(1)
                rows, names, clips, removes = [], [], [], []
                for index in range(MAX_SPEAKERS):
                    with gr.Row(visible=index == 0) as row:
                        names.append(
                            gr.Textbox(
                                "", label="Name", placeholder="e.g. Mike", scale=2, elem_id=f"name-{index}"
                            )
                        )
                        clips.append(
                            gr.Audio(
                                sources=["upload", "microphone"],
                                type="filepath",
                                label="Voice clip",
                                scale=4,
                                elem_id=f"clip-{index}",
                            )
                        )
                        removes.append(
                            gr.Button("✕", size="sm", scale=0, min_width=40, elem_id=f"remove-{index}")
                        )
                    rows.append(row)
                add = gr.Button("+ Add speaker", size="sm", elem_id="add-speaker")
                with gr.Accordion("Options", open=False):
                    timestamps = gr.Checkbox(True, label="Timestamps (needed for the timeline, SRT and RTTM)")
                    num_speakers = gr.Number(
                        0,
                        precision=0,
                        minimum=0,
                        label="Number of speakers, if you know it (0 = unknown; links speakers across a long recording)",
                    )
                    model = gr.Textbox(
                        settings.model,
                        label="Model: an exported SpeakerLM folder or a Hub repo id (empty = the shipped default)",
                        elem_id="model",
                    )
                run = gr.Button("Transcribe", variant="primary", elem_id="run")
                gr.Markdown(f"Recordings up to {_clock(settings.max_minutes * 60)}.")
            with gr.Column(scale=6):
                summary = gr.Markdown(elem_id="summary")
                transcript = gr.HTML(label="Transcript", elem_id="transcript")
                table = gr.Dataframe(
                    headers=["speaker", "start", "end", "text"],
                    datatype="str",
                    label="Turns",
                    interactive=False,
                    wrap=True,
                    elem_id="turns",
                )
                timeline = gr.Plot(label="Timeline", show_label=False, format="png", elem_id="timeline")
                downloads = gr.File(label="Downloads", file_count="multiple", elem_id="downloads")
        table_fields = dict(zip(NAME_FIELDS + CLIP_FIELDS, [*names, *clips], strict=True))
        if examples.meeting is not None:
            samples, labels = example_rows(examples)
            gr.Examples(
                samples,
                inputs=[audio, *names, *clips],
                example_labels=labels,
                cache_examples=False,
                label="Examples",
            )

        ui = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
        add.click(add_speaker, inputs=count, outputs=[count, *rows], **ui)
        for index, button in enumerate(removes):
            button.click(
                partial(remove_speaker, index),
                inputs=count,
                inputs_kwargs=table_fields,
                outputs=[*names, *clips, count, *rows],
                **ui,
            )
        for component in table_fields.values():
            component.change(
                reveal_rows, inputs=count, inputs_kwargs=table_fields, outputs=[count, *rows], **ui
            )
            component.change(registration_mode, inputs_kwargs=table_fields, outputs=mode, **ui)
        run.click(
            partial(transcribe, max_minutes=settings.max_minutes),
            inputs=[audio, timestamps, num_speakers, model],
            inputs_kwargs=table_fields,
            outputs=[summary, transcript, table, timeline, downloads],
            api_name="transcribe",
            concurrency_limit=1,
        )
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The SpeakerLM Gradio app.")
    defaults = Settings()
    parser.add_argument(
        "--model",
        default=defaults.model,
        help="exported SpeakerLM folder or Hub repo id (default: SPEAKERLM_MODEL, else the model shipped with the package)",
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=defaults.examples,
        help="folder with meeting.* and enrollment/<Name>.wav (default: SPEAKERLM_EXAMPLES, else the package's examples)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=defaults.max_minutes,
        help=f"longest recording accepted, in minutes (default: SPEAKERLM_MAX_MINUTES, else {DEFAULT_MAX_MINUTES:g})",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    if args.max_minutes <= 0:
        parser.error(f"--max-minutes must be positive, got {args.max_minutes}")
    settings = Settings(model=args.model, examples=args.examples, max_minutes=args.max_minutes)
    demo = build_demo(settings)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        theme=THEME,
        css=CSS,
        allowed_paths=[str(settings.examples)] if settings.examples.is_dir() else None,
    )


if __name__ == "__main__":
    main()
