"""A toy meeting corpus laid out exactly like AliMeeting, spoken by espeak-ng, for tests and smoke runs.

    write_toy_alimeeting("toy/")  # toy/Train_Ali/Train_Ali_far/{audio_dir,textgrid_dir}, .../Train_Ali_near/...

Each session has three speakers taking turns (one overlap, a few long pauses, markup tags and a
noise-only interval as AliMeeting transcripts have them) for about `session_duration` seconds;
far-field audio is an 8-channel 16-bit wav `<session>_MS001.wav`, near-field one headset wav and
TextGrid per speaker `<session>_<gender>_<SPK id>`. One speaker attends two sessions, as people do
in AliMeeting. Needs the `espeak-ng` program.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile

from ..audio_frontend import resample
from .audio import SAMPLING_RATE
from .corpora import Utterance

__all__ = ["TOY_SENTENCES", "write_toy_alimeeting", "write_long_textgrid", "espeak", "toy_utterances"]

TOY_SENTENCES = (
    "good morning everyone, let us start the weekly meeting",
    "thanks, I will share the budget numbers for the second quarter",
    "the release is planned for next tuesday if the tests pass",
    "I agree, but we still need the review from the design team",
    "can we move the deadline to friday afternoon",
    "the customer called again about the invoice",
    "our sales grew by ten percent in the north region",
    "please send me the slides before lunch",
    "who is going to write the summary for the board",
    "we should hire two more engineers this year",
    "the new office opens in september",
    "I think the price is too high for small shops",
    "let us vote on the proposal at the end",
    "the server was down for an hour last night",
    "marketing wants a video for the product launch",
    "that sounds fine to me, any other questions",
)
# (speaker id, gender letter, espeak voice, words per minute)
TOY_SPEAKERS = {
    "SPK0001": ("M", "en+m3", 165),
    "SPK0002": ("F", "en+f2", 175),
    "SPK0003": ("M", "en+m7", 150),
    "SPK0004": ("F", "en+f4", 160),
    "SPK0005": ("M", "en+m1", 185),
}
TOY_VOICES = tuple(f"en+{kind}{n}" for kind, count in (("m", 7), ("f", 5)) for n in range(1, count + 1))
TOY_SESSIONS = {
    "R0001_M0001": ("SPK0001", "SPK0002", "SPK0003"),
    "R0002_M0002": ("SPK0002", "SPK0004", "SPK0005"),
}


def espeak(text: str, voice: str, speed: int = 160) -> np.ndarray:
    """`text` spoken by espeak-ng, float32 at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("the espeak-ng program is not installed")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "out.wav")
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, text], check=True, capture_output=True
        )
        waveform, rate = soundfile.read(path, dtype="float32")
    return resample(waveform, rate, SAMPLING_RATE) if rate != SAMPLING_RATE else waveform


def _format_number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


def write_long_textgrid(
    path: Path, duration: float, tiers: dict[str, list[tuple[float, float, str]]]
) -> None:
    """A long-format (Praat "ooTextFile") TextGrid, one interval tier per name, gaps as empty intervals."""
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        f"xmax = {_format_number(duration)}",
    ]
    lines += ["tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for number, (name, spans) in enumerate(tiers.items(), start=1):
        intervals, cursor = [], 0.0
        for start, end, text in sorted(spans):
            if start > cursor:
                intervals.append((cursor, start, ""))
            intervals.append((start, end, text))
            cursor = end
        if cursor < duration:
            intervals.append((cursor, duration, ""))
        lines += [f"    item [{number}]:", '        class = "IntervalTier"', f'        name = "{name}"']
        lines += [
            "        xmin = 0",
            f"        xmax = {_format_number(duration)}",
            f"        intervals: size = {len(intervals)}",
        ]
        for index, (start, end, text) in enumerate(intervals, start=1):
            escaped = text.replace('"', '""')
            lines += [f"        intervals [{index}]:", f"            xmin = {_format_number(start)}"]
            lines += [f"            xmax = {_format_number(end)}", f'            text = "{escaped}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _session_plan(speakers: tuple[str, ...], rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """(speaker, sentence) turns: everyone once in every run of len(speakers) turns, no one twice in a row."""
    order: list[str] = []
    while len(order) < count:
        block = [str(s) for s in rng.permutation(speakers)]
        if order and block[0] == order[-1]:
            block.append(block.pop(0))
        order += block
    sentences = rng.permutation(len(TOY_SENTENCES))
    return [(order[i], TOY_SENTENCES[sentences[i % len(TOY_SENTENCES)]]) for i in range(count)]


def _whole_milliseconds(waveform: np.ndarray) -> np.ndarray:
    """Zero-padded to a whole number of milliseconds, so TextGrid times are exact."""
    step = SAMPLING_RATE // 1000
    return np.pad(waveform, (0, -waveform.size % step))


def _ms(seconds: float) -> int:
    """Seconds -> samples on the millisecond grid."""
    return round(seconds * 1000) * (SAMPLING_RATE // 1000)


def write_toy_alimeeting(
    root: str | os.PathLike, split: str = "Train", session_duration: float = 90.0, seed: int = 0
) -> dict[str, list[Utterance]]:
    """Write the toy corpus under `root/<split>_Ali/`; returns each session's utterances as written."""
    rng = np.random.default_rng(seed)
    base = Path(root) / f"{split}_Ali"
    far, near = base / f"{split}_Ali_far", base / f"{split}_Ali_near"
    for folder in (far / "audio_dir", far / "textgrid_dir", near / "audio_dir", near / "textgrid_dir"):
        folder.mkdir(parents=True, exist_ok=True)
    plans = {name: _session_plan(speakers, rng, 15) for name, speakers in TOY_SESSIONS.items()}
    wanted = sorted({(speaker, sentence) for plan in plans.values() for speaker, sentence in plan})
    with ThreadPoolExecutor(4) as pool:
        spoken = dict(
            zip(
                wanted,
                pool.map(
                    lambda item: _whole_milliseconds(espeak(item[1], *TOY_SPEAKERS[item[0]][1:])), wanted
                ),
                strict=True,
            )
        )
    written = {}
    for name, plan in plans.items():
        total = round(session_duration * SAMPLING_RATE)
        tracks = {speaker: np.zeros(total, dtype=np.float32) for speaker in TOY_SESSIONS[name]}
        utterances = []
        cursor = _ms(0.5)
        pauses = set(rng.choice(np.arange(2, len(plan)), size=4, replace=False).tolist())
        for index, (speaker, sentence) in enumerate(plan):
            waveform = spoken[(speaker, sentence)]
            if index == 5:  # one overlap: this turn starts 0.8 s before the previous one ends
                cursor -= _ms(0.8)
            elif index in pauses:
                cursor += _ms(rng.uniform(3.0, 5.0))
            else:
                cursor += _ms(rng.uniform(0.4, 1.2))
            if cursor + waveform.size > total:
                break
            tracks[speaker][cursor : cursor + waveform.size] += waveform
            text = sentence
            if index == 2:
                text = f"<sil>{sentence} <%>"
            utterances.append(
                Utterance(speaker, cursor / SAMPLING_RATE, (cursor + waveform.size) / SAMPLING_RATE, text)
            )
            cursor += waveform.size
        # A cough marked as noise only, in a pause: speech activity without words.
        cough_at = cursor + _ms(0.5)
        if cough_at + SAMPLING_RATE // 2 < total:
            speaker = TOY_SESSIONS[name][0]
            tracks[speaker][cough_at : cough_at + SAMPLING_RATE // 2] += 0.05 * rng.standard_normal(
                SAMPLING_RATE // 2
            )
            utterances.append(
                Utterance(
                    speaker, cough_at / SAMPLING_RATE, (cough_at + SAMPLING_RATE // 2) / SAMPLING_RATE, "<%>"
                )
            )
        mixture = sum(tracks.values())
        channels = np.stack([np.roll(mixture, c) * (1.0 - 0.03 * c) for c in range(8)], axis=1)
        soundfile.write(
            far / "audio_dir" / f"{name}_MS001.wav", np.clip(channels, -1, 1), SAMPLING_RATE, subtype="PCM_16"
        )
        tiers = {
            s: [(u.start, u.end, u.text) for u in utterances if u.speaker == s] for s in TOY_SESSIONS[name]
        }
        write_long_textgrid(far / "textgrid_dir" / f"{name}.TextGrid", session_duration, tiers)
        for speaker in TOY_SESSIONS[name]:
            stem = f"{name}_{TOY_SPEAKERS[speaker][0]}_{speaker}"
            headset = tracks[speaker] + 0.1 * (mixture - tracks[speaker])  # some crosstalk
            soundfile.write(
                near / "audio_dir" / f"{stem}.wav", np.clip(headset, -1, 1), SAMPLING_RATE, subtype="PCM_16"
            )
            write_long_textgrid(
                near / "textgrid_dir" / f"{stem}.TextGrid", session_duration, {speaker: tiers[speaker]}
            )
        written[name] = sorted(utterances, key=lambda u: (u.start, u.end, u.speaker))
    return written


def toy_utterances(
    num_speakers: int = 6, per_speaker: int = 6, max_sentences: int = 3, seed: int = 0
) -> list[dict]:
    """A single-speaker ASR set: `{"audio": {"array", "sampling_rate"}, "text", "speaker"}` rows.

    Speaker k speaks with espeak-ng voice k (voices repeat at other speeds beyond twelve
    speakers); an utterance is 1 to `max_sentences` sentences with 0.2 s pauses (about 2-12 s).
    """
    rng = np.random.default_rng(seed)
    plan = []
    for k in range(num_speakers):
        voice, speed = TOY_VOICES[k % len(TOY_VOICES)], 140 + 15 * (k // len(TOY_VOICES)) + 5 * (k % 3)
        for _ in range(per_speaker):
            count = int(rng.integers(1, max_sentences + 1))
            sentences = [TOY_SENTENCES[i] for i in rng.choice(len(TOY_SENTENCES), size=count, replace=False)]
            plan.append((f"S{k:03d}", voice, speed, sentences))
    wanted = sorted(
        {(voice, speed, sentence) for _, voice, speed, sentences in plan for sentence in sentences}
    )
    with ThreadPoolExecutor(4) as pool:
        spoken = dict(
            zip(wanted, pool.map(lambda item: espeak(item[2], item[0], item[1]), wanted), strict=True)
        )
    pause = np.zeros(SAMPLING_RATE // 5, dtype=np.float32)
    rows = []
    for speaker, voice, speed, sentences in plan:
        pieces = [piece for sentence in sentences for piece in (spoken[(voice, speed, sentence)], pause)][:-1]
        audio = np.concatenate(pieces).astype(np.float32)
        rows.append(
            {
                "audio": {"array": audio, "sampling_rate": SAMPLING_RATE},
                "text": " ".join(sentences),
                "speaker": speaker,
            }
        )
    return rows
