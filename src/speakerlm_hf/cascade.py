"""Cascade baselines: diarization then ASR (SD+ASR), and its transcript corrected by an LLM (SD+ASR+LLM).

    cascade = CascadeSDR.from_speakerlm(pipe)  # SpeakerLM's own speaker extractor and its ASR task
    cascade = CascadeSDR.from_funasr("models/SenseVoiceSmall", "models/campplus")  # funasr models
    result = cascade("meeting.wav", speakers={"Mike": "mike.wav"}, num_speakers=3)
    turns = correct_with_llm(result["turns"], llm, tokenizer)

The cascade runs the energy VAD, cuts each speech region into short overlapping windows, embeds
each window, clusters the embeddings (average-linkage cosine AHC; the threshold estimates the
number of speakers, count hints bound it), gives every 10-ms frame the label of the window whose
centre is nearest, joins each region's runs of one label into turns and transcribes every turn
on its own. Registered speakers name the clusters their enrollment embedding matches (Hungarian
assignment above a similarity threshold); the other clusters are `spk0`, `spk1`, ... in order of
first appearance.

Library code (not shipped to the Hub); funasr is imported only when its models are asked for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .feature_extraction_speakerlm import SAMPLING_RATE, load_waveform
from .linking_speakerlm import (
    DEFAULT_THRESHOLD,
    Embedder,
    cluster_embeddings,
    model_embedder,
    speaker_bounds,
    unit_rows,
)
from .processing_speakerlm import (
    CHAT_TEMPLATE,
    SYSTEM_PROMPT,
    check_speaker_names,
    format_role_transcript,
    is_embedding,
    parse_role_transcript,
)
from .segmentation_speakerlm import (
    FRAMES_PER_SECOND,
    Segment,
    VadConfig,
    mask_runs,
    read_segments,
    segment_recording,
)

__all__ = [
    "CORRECTION_INSTRUCTION",
    "CORRECTION_PROMPT",
    "CascadeConfig",
    "CascadeSDR",
    "Transcriber",
    "speakerlm_transcriber",
    "funasr_transcriber",
    "funasr_embedder",
    "window_spans",
    "frame_labels",
    "assign_registered",
    "correction_messages",
    "parse_correction",
    "correct_with_llm",
]

# The spec's correction prompt; with a chat template its first sentence is the system message.
CORRECTION_INSTRUCTION = (
    "In the speaker diarization transcript below, some words are potentially misplaced. Please correct "
    "those words and move them to the right speaker. Directly show the corrected transcript without "
    "explaining what changes were made or why you made those changes."
)
CORRECTION_PROMPT = f"{SYSTEM_PROMPT} {CORRECTION_INSTRUCTION}"
# A correction whose text is this much shorter or longer than the input is a rewrite, not a correction.
MAX_LENGTH_CHANGE = 0.5
SENSEVOICE_TAG = re.compile(r"<\|[^|]*\|>")

Transcriber = Callable[[Sequence[np.ndarray]], list[str]]


@dataclass(frozen=True)
class CascadeConfig:
    """Settings of the cascade (times in seconds).

    window / hop: the embedding windows cut from each speech region (a shorter region is one window).
    threshold: cosine similarity down to which clusters merge; it sets the estimated speaker count.
    min_turn: runs of one label shorter than this join their longer neighbour within a region.
    registration_threshold: least cosine similarity of a cluster to an enrollment embedding for
        the cluster to take the registered name.
    """

    window: float = 1.5
    hop: float = 0.75
    threshold: float = DEFAULT_THRESHOLD
    min_turn: float = 0.5
    registration_threshold: float = 0.3
    vad: VadConfig = field(default_factory=VadConfig)

    def __post_init__(self):
        if not 0 < self.hop <= self.window:
            raise ValueError(f"need 0 < hop <= window, got hop={self.hop}, window={self.window}")


def window_spans(regions: Sequence[tuple[int, int]], window: int, hop: int) -> list[tuple[int, int, int]]:
    """(region index, start, end) frame spans of the embedding windows; the last window of a region ends with it."""
    spans = []
    for number, (start, end) in enumerate(regions):
        if end - start <= window:
            spans.append((number, start, end))
            continue
        starts = list(range(start, end - window + 1, hop))
        if starts[-1] + window < end:
            starts.append(end - window)
        spans += [(number, s, s + window) for s in starts]
    return spans


def frame_labels(
    regions: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int, int]], labels: Sequence[int]
) -> list[np.ndarray]:
    """The label of every frame of every region: that of the region's window whose centre is nearest."""
    found = []
    spans_array = np.asarray(spans, dtype=np.float64).reshape(-1, 3)
    labels = np.asarray(labels)
    for number, (start, end) in enumerate(regions):
        mine = np.flatnonzero(spans_array[:, 0] == number)
        centres = (spans_array[mine, 1] + spans_array[mine, 2]) / 2
        frames = np.arange(start, end) + 0.5
        nearest = np.abs(frames[:, None] - centres[None, :]).argmin(1)
        found.append(labels[mine][nearest])
    return found


def label_runs(frame_label: np.ndarray, min_frames: int) -> list[tuple[int, int, int]]:
    """(label, start, end) runs of one region's frame labels, runs under `min_frames` merged into the longer neighbour."""
    edges = np.flatnonzero(np.diff(frame_label)) + 1
    bounds = np.concatenate([[0], edges, [frame_label.size]])
    runs = [[int(frame_label[a]), int(a), int(b)] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    while len(runs) > 1:
        lengths = [b - a for _, a, b in runs]
        shortest = int(np.argmin(lengths))
        if lengths[shortest] >= min_frames:
            break
        if shortest == 0:
            neighbour = 1
        elif shortest == len(runs) - 1:
            neighbour = shortest - 1
        else:
            neighbour = shortest - 1 if lengths[shortest - 1] >= lengths[shortest + 1] else shortest + 1
        runs[neighbour][1] = min(runs[neighbour][1], runs[shortest][1])
        runs[neighbour][2] = max(runs[neighbour][2], runs[shortest][2])
        del runs[shortest]
        merged = [runs[0]]
        for run in runs[1:]:  # neighbours that now share a label become one run
            if run[0] == merged[-1][0]:
                merged[-1][2] = run[2]
            else:
                merged.append(run)
        runs = merged
    return [tuple(run) for run in runs]


def assign_registered(
    centroids: np.ndarray, enrolled: Mapping[str, np.ndarray], threshold: float
) -> dict[int, str]:
    """`{cluster: name}`: the Hungarian assignment of clusters to registered speakers by cosine similarity,
    keeping only pairs at least `threshold` similar."""
    if not enrolled or len(centroids) == 0:
        return {}
    names = list(enrolled)
    vectors = unit_rows(np.stack([np.asarray(enrolled[name], dtype=np.float64) for name in names]))
    similarity = unit_rows(centroids) @ vectors.T
    rows, columns = linear_sum_assignment(-similarity)
    return {int(r): names[c] for r, c in zip(rows, columns, strict=True) if similarity[r, c] >= threshold}


def _check_count(value: int | None, name: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class CascadeSDR:
    """SD+ASR: VAD -> windows -> speaker embeddings -> clustering -> turns -> ASR per turn.

    Args:
        embed: clips (16 kHz float32) -> one embedding per clip, e.g. `model_embedder(model)` or
            `funasr_embedder(folder)`.
        transcribe: clips -> one text per clip, e.g. `speakerlm_transcriber(pipe)` or
            `funasr_transcriber(folder)`; None gives turns without text (diarization only).
        config: window, clustering and registration settings.
    """

    def __init__(
        self, embed: Embedder, transcribe: Transcriber | None = None, config: CascadeConfig | None = None
    ):
        self.embed = embed
        self.transcribe = transcribe
        self.config = config or CascadeConfig()

    @classmethod
    def from_speakerlm(cls, pipe, config: CascadeConfig | None = None, **generate_kwargs) -> CascadeSDR:
        """The cascade made of a SpeakerLM pipeline's parts: its speaker extractor and its ASR task."""
        return cls(model_embedder(pipe.model), speakerlm_transcriber(pipe, **generate_kwargs), config)

    @classmethod
    def from_funasr(
        cls, asr_model: str, speaker_model: str, device: str = "cpu", config: CascadeConfig | None = None
    ) -> CascadeSDR:
        """The cascade of funasr models: a local Paraformer or SenseVoice folder and a CAM++ folder."""
        return cls(funasr_embedder(speaker_model, device), funasr_transcriber(asr_model, device), config)

    def enrollment_embeddings(self, speakers: Mapping[str, Any], size: int) -> dict[str, np.ndarray]:
        """`{name: embedding}` of registered speakers given as clips, lists of clips or embeddings of `size`."""
        names = check_speaker_names(list(speakers))
        enrolled = {}
        for name, value in zip(names, speakers.values(), strict=True):
            if is_embedding(value, size):
                vector = value["embedding"] if isinstance(value, Mapping) else value
                enrolled[name] = np.asarray(torch.as_tensor(vector, dtype=torch.float32))
                continue
            clips = value if isinstance(value, list) else [value]
            if not clips:
                raise ValueError(f"registered speaker {name!r} has no enrollment clip")
            waveforms = [
                load_waveform(clip, None, SAMPLING_RATE, f"enrollment clip {k} of {name!r}")
                for k, clip in enumerate(clips)
            ]
            enrolled[name] = unit_rows(self.embed(waveforms)).mean(0)
        return enrolled

    def diarize(
        self,
        audio: object,
        sampling_rate: int | None = None,
        speakers: Mapping[str, Any] | None = None,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> tuple[list[dict], np.ndarray]:
        """(turns `{speaker, start, end}` in time order, the 16 kHz waveform) of a recording.

        The hints count all speakers, registered ones included.
        """
        for name, value in (
            ("num_speakers", num_speakers),
            ("min_speakers", min_speakers),
            ("max_speakers", max_speakers),
        ):
            _check_count(value, name)
        if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
            raise ValueError(f"min_speakers={min_speakers} is more than max_speakers={max_speakers}")
        config = self.config
        plan = segment_recording(audio, sampling_rate, vad=config.vad)
        waveform = next(read_segments(plan.source, [Segment(0.0, plan.duration)]))
        regions = [tuple(run) for run in mask_runs(plan.speech).tolist()]
        if not regions:
            return [], waveform
        hop = SAMPLING_RATE // FRAMES_PER_SECOND
        spans = window_spans(
            regions, round(config.window * FRAMES_PER_SECOND), round(config.hop * FRAMES_PER_SECOND)
        )
        embeddings = np.asarray(
            self.embed([waveform[a * hop : b * hop] for _, a, b in spans]), dtype=np.float64
        )
        durations = np.array([(b - a) / FRAMES_PER_SECOND for _, a, b in spans])
        lower, upper = speaker_bounds(num_speakers, min_speakers, max_speakers, 0)
        labels = cluster_embeddings(
            embeddings, np.arange(len(spans)), durations, config.threshold, lower, upper
        )
        unit = unit_rows(embeddings)
        centroids = np.stack(
            [
                np.average(unit[labels == k], axis=0, weights=durations[labels == k])
                for k in range(labels.max() + 1)
            ]
        )
        names = {}
        if speakers:
            enrolled = self.enrollment_embeddings(speakers, embeddings.shape[1])
            names = assign_registered(centroids, enrolled, config.registration_threshold)

        min_frames = round(config.min_turn * FRAMES_PER_SECOND)
        turns = []
        for (offset, _), labelled in zip(regions, frame_labels(regions, spans, labels), strict=True):
            for label, start, end in label_runs(labelled, min_frames):
                turns.append(
                    {
                        "speaker": label,
                        "start": round((offset + start) / FRAMES_PER_SECOND, 3),
                        "end": round((offset + end) / FRAMES_PER_SECOND, 3),
                    }
                )
        anonymous = [label for label in dict.fromkeys(t["speaker"] for t in turns) if label not in names]
        names.update({label: f"spk{rank}" for rank, label in enumerate(anonymous)})
        for turn in turns:
            turn["speaker"] = names[turn["speaker"]]
        return turns, waveform

    def __call__(
        self,
        audio: object,
        sampling_rate: int | None = None,
        speakers: Mapping[str, Any] | None = None,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> dict[str, Any]:
        """`{"text": role transcript, "turns": [{speaker, text, start, end}]}` of a recording."""
        turns, waveform = self.diarize(
            audio, sampling_rate, speakers, num_speakers, min_speakers, max_speakers
        )
        if self.transcribe is not None and turns:
            clips = [
                waveform[math.floor(t["start"] * SAMPLING_RATE) : math.ceil(t["end"] * SAMPLING_RATE)]
                for t in turns
            ]
            texts = self.transcribe(clips)
            if len(texts) != len(turns):
                raise ValueError(f"the transcriber gave {len(texts)} texts for {len(turns)} turns")
            turns = [{**turn, "text": text.strip()} for turn, text in zip(turns, texts, strict=True)]
            # Turns the ASR found no words in are not turns of a transcript.
            turns = [turn for turn in turns if turn["text"]]
        else:
            turns = [{**turn, "text": ""} for turn in turns]
        turns = [
            {"speaker": t["speaker"], "text": t["text"], "start": t["start"], "end": t["end"]} for t in turns
        ]
        return {"text": format_role_transcript(turns), "turns": turns}


def speakerlm_transcriber(pipe, **generate_kwargs) -> Transcriber:
    """Clips -> texts with a SpeakerLM pipeline's ASR task (`task="asr"`), one clip per model input."""

    def transcribe(clips: Sequence[np.ndarray]) -> list[str]:
        if not clips:
            return []
        inputs = [
            {"raw": np.asarray(clip, dtype=np.float32), "sampling_rate": SAMPLING_RATE} for clip in clips
        ]
        return [output["text"].strip() for output in pipe(inputs, task="asr", **generate_kwargs)]

    return transcribe


def funasr_transcriber(model: str, device: str = "cpu", **generate_kwargs) -> Transcriber:
    """Clips -> texts with funasr's `AutoModel` on a local Paraformer or SenseVoice folder.

    SenseVoice's language, emotion and event tags (`<|en|>`, ...) are removed from its text.
    """
    from funasr import AutoModel

    asr = AutoModel(model=model, device=device, disable_update=True)

    def transcribe(clips: Sequence[np.ndarray]) -> list[str]:
        texts = []
        for clip in clips:
            results = asr.generate(input=np.asarray(clip, dtype=np.float32), **generate_kwargs)
            text = " ".join(str(result.get("text", "")) for result in results)
            texts.append(" ".join(SENSEVOICE_TAG.sub(" ", text).split()))
        return texts

    return transcribe


def funasr_embedder(model: str, device: str = "cpu") -> Embedder:
    """Clips -> speaker embeddings with funasr's `AutoModel` on a local CAM++ (or other speaker model) folder."""
    from funasr import AutoModel

    extractor = AutoModel(model=model, device=device, disable_update=True)

    def embed(clips: Sequence[np.ndarray]) -> np.ndarray:
        vectors = []
        for clip in clips:
            result = extractor.generate(input=np.asarray(clip, dtype=np.float32))[0]["spk_embedding"]
            vectors.append(np.asarray(torch.as_tensor(result, dtype=torch.float32).reshape(-1)))
        return np.stack(vectors)

    return embed


def correction_messages(transcript: str, target: str | None = None) -> list[dict[str, str]]:
    """The chat of the spec's correction prompt: system sentence, then instruction and transcript.

    With `target` (the reference transcript), the assistant answer is appended: a training example
    for fine-tuning a corrector.
    """
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{CORRECTION_INSTRUCTION}\n\n{transcript}"},
    ]
    if target is not None:
        messages.append({"role": "assistant", "content": target})
    return messages


def _characters(turns: Sequence[Mapping]) -> int:
    return sum(len("".join(str(t["text"]).split())) for t in turns)


def parse_correction(text: str, turns: Sequence[Mapping]) -> list[dict] | None:
    """The corrected turns, or None when the answer is not a correction of `turns`.

    Refused: no turn, text outside any turn, a speaker label the transcript did not have, or a
    text length that changed by more than half.
    """
    corrected = parse_role_transcript(text)
    labels = {t["speaker"] for t in turns}
    if not corrected or any(t["speaker"] not in labels for t in corrected):
        return None
    before, after = _characters(turns), _characters(corrected)
    if before and abs(after - before) > MAX_LENGTH_CHANGE * before:
        return None
    return [{"speaker": t["speaker"], "text": t["text"]} for t in corrected]


def correct_with_llm(
    turns: Sequence[Mapping],
    model: torch.nn.Module,
    tokenizer,
    max_new_tokens: int | None = None,
    **generate_kwargs,
) -> tuple[list[dict], bool]:
    """(turns, corrected?): the cascade's transcript re-assigned by a causal LLM with the correction prompt.

    The prompt goes through the tokenizer's chat template (Qwen's layout when it has none); decoding
    is greedy unless `generate_kwargs` say otherwise. When the answer does not parse as a correction
    (see `parse_correction`), the original turns are returned and the flag is False. Corrected turns
    carry no times.
    """
    if not turns:
        return [], False
    transcript = format_role_transcript(turns)
    template = getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
    prompt = tokenizer.apply_chat_template(
        correction_messages(transcript), chat_template=template, tokenize=False, add_generation_prompt=True
    )
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    device = next(model.parameters()).device
    encoded = {key: value.to(device) for key, value in encoded.items()}
    if max_new_tokens is None:
        max_new_tokens = 2 * len(tokenizer(transcript, add_special_tokens=False)["input_ids"]) + 16
    generate_kwargs.setdefault("do_sample", False)
    with torch.no_grad():
        generated = model.generate(**encoded, max_new_tokens=max_new_tokens, **generate_kwargs)
    answer = tokenizer.decode(generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    corrected = parse_correction(answer, turns)
    if corrected is None:
        return [dict(turn) for turn in turns], False
    return corrected, True
