"""The `speaker-diarization-recognition` pipeline: audio (+ registered speakers) -> transcript by roles.

Recordings of any length: a recording longer than one segment (50 s by default) is cut at pauses
found by an energy VAD, its segments are transcribed in batches, and the anonymous speakers of the
segments are linked into speakers of the whole recording by their voices (see
`segmentation_speakerlm` and `linking_speakerlm`). Audio files are decoded block by block, so an
hours-long file is never held in memory whole.

Remote code: shipped to the Hub next to the model, so it imports only torch, transformers, numpy
and the standard library. Objects loaded from a Hub folder each come from their own copy of the
code, so the processor is used through its methods, never checked with `isinstance`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.pipelines.base import ChunkPipeline

from .feature_extraction_speakerlm import SAMPLING_RATE, pad_features
from .generation_speakerlm import resolve_ctc_weight, transcript_logits_processors, transcripts_aligned_lines
from .linking_speakerlm import (
    DEFAULT_VOICE_THRESHOLDS,
    VoiceThresholds,
    join_touching,
    link_segments,
    local_speaker_embeddings,
    model_embedder,
    model_window_embedder,
    relabel_turns,
    split_turns,
    turn_embeddings,
    turn_span,
)
from .processing_speakerlm import (
    check_speaker_names,
    format_role_transcript,
    is_embedding,
    parse_role_transcript,
)
from .segmentation_speakerlm import read_segments, segment_recording

TASK = "speaker-diarization-recognition"
MODEL_TASKS = ("sdr", "asr")
MAX_SEGMENT_DURATION = 50.0
DEFAULT_BATCH_SIZE = 4
TIMESTAMP_SOURCES = ("ctc", "model")
# CTC emits a word on one audio token or two: a turn's span is widened by this much on each side.
ALIGNED_TURN_PADDING = 0.1
# Entries of a preprocessed batch that describe its segments rather than feed the model.
SEGMENT_KEYS = (
    "segments",
    "waveforms",
    "speech_masks",
    "names",
    "task",
    "link",
    "timestamps",
    "return_times",
    "align",
    "voices",
    "done",
    "total",
    "is_last",
)


def _count(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def line_speaker(line: tuple) -> str:
    """The speaker label of an aligned line (`generation_speakerlm.aligned_lines`: its `label:` bytes first)."""
    return line[0].decode("utf-8", "replace")[:-1].strip()


def place_turns(
    turns: list[dict],
    lines: list | None,
    token_seconds: float,
    duration: float,
    padding: float = ALIGNED_TURN_PADDING,
    words: bool = False,
) -> bool:
    """Give each turn parsed from a transcript the span `aligned_lines` found for its line (audio
    tokens of `token_seconds`), widened by `padding` on each side within the segment's `duration`.
    A turn without words (nothing was said) is dropped, and a turn that goes on where the same
    speaker's previous turn ends (the widened spans touch: no pause between their words) is joined
    to it. Whether the turns got times: not when the alignment failed or its lines are not the
    turns one to one (they are then left as they are). With `words`, each turn also gets its
    words' (start, end) seconds under `"_words"` (for `split_turns`; not part of the output)."""
    if lines is None or len(lines) != len(turns):
        return False
    for turn, line in zip(turns, lines, strict=True):
        if line is not None and line_speaker(line) != turn["speaker"]:
            return False
    placed: list[dict] = []
    for turn, line in zip(turns, lines, strict=True):
        if line is None:
            continue
        first, last = line[1], line[2]
        turn["start"] = round(max(0.0, first * token_seconds - padding), 3)
        turn["end"] = round(min(duration, (last + 1) * token_seconds + padding), 3)
        if words and len(line) > 3:
            turn["_words"] = [(a * token_seconds, (b + 1) * token_seconds) for a, b in line[3]]
        placed.append(turn)
    turns[:] = join_touching(placed)
    return True


def embed_speakers(
    model: torch.nn.Module,
    processor: Any,
    speakers: Mapping | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Registered speakers `{name: clip | [clips] | embedding}` with every clip replaced by its raw
    extractor embedding (`{"embedding": vector}`), the enrollment pieces batched as the processor
    batches them; names and clips are checked (clips at least 1 s, not silent)."""
    if not speakers:
        return {}
    device = device if device is not None else next(model.parameters()).device
    dtype = dtype if dtype is not None else next(model.parameters()).dtype
    names = check_speaker_names(list(speakers), processor.reserved_texts)
    extractor, size = processor.feature_extractor, processor.speaker_embedding_size
    registered: dict[str, Any] = {}
    pieces, owner, slots = [], [], []
    for name, value in zip(names, speakers.values(), strict=True):
        if is_embedding(value, size):
            registered[name] = value
            continue
        clips = value if isinstance(value, list) else [value]
        found = extractor.enrollment_features(clips, name)
        pieces += found
        owner += [len(slots)] * len(found)
        slots.append(name)
        registered[name] = None
    if slots:
        # One batch for all pieces, as the processor would build it, so the numbers match.
        features, mask = pad_features(pieces)
        with torch.no_grad():
            vectors = model.get_speaker_embeddings(
                len(slots),
                features.to(device, dtype),
                mask.to(device),
                torch.tensor(owner, dtype=torch.long, device=device),
            )
        for name, vector in zip(slots, vectors.float().cpu(), strict=True):
            registered[name] = {"embedding": vector}
    return registered


def speaker_voices(registered: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`{name: raw embedding}` of speakers registered by `embed_speakers` (or given as embeddings)."""
    voices = {}
    for name, value in registered.items():
        vector = value["embedding"] if isinstance(value, Mapping) else value
        if isinstance(vector, torch.Tensor):
            vector = vector.detach().float().cpu().numpy()
        voices[name] = np.asarray(vector, dtype=np.float64).ravel()
    return voices


def aligned_turns(
    turns: list[dict],
    lines: list | None,
    token_seconds: float,
    waveform: np.ndarray,
    speech_mask: np.ndarray | None = None,
    embed: Callable | None = None,
    voices: Mapping[str, np.ndarray] | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    thresholds: VoiceThresholds = DEFAULT_VOICE_THRESHOLDS,
    embed_windows: Callable | None = None,
) -> tuple[list[dict], bool]:
    """One segment's turns placed in time by their aligned lines (`place_turns`) and, with an
    `embed`der of the model's speaker extractor, cut where the voice changes within a turn
    (`split_turns`, by `thresholds.split`, its windows by `embed_windows` when given) and
    relabelled by their voices (`relabel_turns`, registered speakers' raw embeddings in `voices`).
    Returns the turns and whether they got times."""
    if not place_turns(turns, lines, token_seconds, waveform.size / SAMPLING_RATE, words=embed is not None):
        return turns, False
    if embed is not None and turns:
        turns = split_turns(
            turns,
            waveform,
            embed,
            thresholds.split,
            speech_mask,
            ALIGNED_TURN_PADDING,
            embed_windows=embed_windows,
        )
        vectors, seconds = turn_embeddings(waveform, turns, embed, speech_mask)
        turns = relabel_turns(
            turns,
            vectors,
            seconds,
            voices,
            threshold=thresholds.relabel,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            min_registered_similarity=thresholds.registered,
            short_threshold=thresholds.short,
        )
    return turns, True


class SpeakerLMPipeline(ChunkPipeline):
    """Who spoke when, and what, in a recording of any length.

    ```python
    pipe = pipeline("speaker-diarization-recognition", model=repo, trust_remote_code=True)
    pipe("meeting.wav", speakers={"Mike": "mike.wav"}, return_timestamps=True)
    # {"text": "[0.5-4.1] Mike: ...\\n[4.8-9.0] spk0: ...",
    #  "turns": [{"speaker": "Mike", "text": "...", "start": 0.5, "end": 4.1}, ...]}
    ```

    An input is a path (any sampling rate and channel count; WAV, FLAC, OGG and MP3 through
    soundfile, other containers through the ffmpeg program), a 1-D float array at 16 kHz, or a
    `{"raw"|"array", "sampling_rate"}` dict; such a dict may carry its own `"speakers"`. A list of
    inputs gives a list of results.

    A recording up to `max_segment_duration` is transcribed whole, as the model was trained. A longer
    one is cut at pauses into segments of at most that length; turn times are then found in every
    segment (whatever `return_timestamps` says), and each anonymous speaker's turns are embedded
    with the model's speaker extractor and clustered across segments, so that `spk0`, `spk1`, ...
    (numbered by first appearance) name the same voice throughout. A recording without speech
    gives no turns.

    Turn times come from `timestamps_from`: "ctc" (the default for a model whose audio tokens were
    trained to spell the transcript, `config.audio_ctc`, as the default model's) decodes the
    transcript as without times and gives each turn the span where CTC forced alignment puts its
    words on the audio tokens (widened by `ALIGNED_TURN_PADDING` on each side); "model" (the
    default for other models, the paper's way) asks the model to write `[start-end]` before each
    turn. With aligned turns, each turn's speaker is then checked against its own voice
    (`relabel_speakers`, see `linking_speakerlm.relabel_turns`): a turn the model gave a registered
    name takes the registered speaker whose enrollment it sounds like, and the anonymous turns are
    clustered by voice into `spk0`, `spk1`, ...

    Call arguments:
        speakers: `{name: clip | [clips] | embedding}` registered for every input (None: No-Regist,
            anonymous `spkK` labels). Names are kept as they are in every segment.
        task: "sdr" (transcribe by roles, the default) or "asr" (plain transcription).
        return_timestamps: turns carry "start" and "end" in seconds of the whole recording.
        timestamps_from: "ctc" or "model", where turn times come from (see above).
        num_speakers / min_speakers / max_speakers: hints on how many people speak, registered
            speakers included, for relabelling turns by voice and linking the segments of a long
            recording.
        batch_size: segments per `generate` call (default 4).
        max_segment_duration: longest segment in seconds (default 50, as in the paper's evaluation).
        linking_threshold: cosine similarity above which two anonymous speakers of different
            segments are taken for one person (default: the model's `config.voice_thresholds`
            `link`, 0.5 when it has none).
        progress_callback: called as `callback(segments_done, segments_total)` after every batch.
        constrain_labels: start every turn with a registered name or an anonymous label in order
            of first appearance, never an invented name (default True; see `generation_speakerlm`).
        ctc_weight: weight of the audio tokens' CTC prefix score in joint CTC / attention decoding,
            in [0, 1); by default, for a model trained with CTC (`config.audio_ctc`, as the default
            model), the weight it was tuned with (`config.decoding_ctc_weight`) or else 0.8, and 0
            for others (the paper's). 0 turns it off.
        speaker_weight: with joint decoding and a model whose audio tokens carry speaker windows,
            how strongly each turn's label follows the voice where the CTC alignment puts the
            turn's start (registered names by their enrollment, anonymous labels by the voice of
            their earlier turns); default 1.0, 0 turns it off.
        relabel_speakers: with aligned turn times (`timestamps_from="ctc"`), give every turn the
            speaker its whole audio sounds like, by the model's speaker extractor (default True;
            False keeps the labels the model wrote).
        generation parameters (`max_new_tokens`, `num_beams`, ...) go to `model.generate`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    # A 50 s meeting segment by roles needs a few hundred tokens; the generation config may set its own.
    _default_generation_config = GenerationConfig(max_new_tokens=1024)

    def __call__(self, inputs: Any, *args, batch_size: int | None = None, **kwargs) -> Any:
        # `batch_size` batches segments inside one recording; transformers' own batching would pad
        # already batched inputs again, so it always sees one recording at a time.
        if batch_size is None:
            batch_size = self._batch_size
        if batch_size is not None:
            kwargs["segment_batch_size"] = batch_size
        return super().__call__(inputs, *args, batch_size=1, **kwargs)

    def _sanitize_parameters(
        self,
        speakers: Mapping | None = None,
        task: str | None = None,
        return_timestamps: bool | None = None,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        segment_batch_size: int | None = None,
        max_segment_duration: float | None = None,
        linking_threshold: float | None = None,
        progress_callback: Callable[[int, int], None] | None = None,
        constrain_labels: bool | None = None,
        ctc_weight: float | None = None,
        speaker_weight: float | None = None,
        timestamps_from: str | None = None,
        relabel_speakers: bool | None = None,
        **generate_kwargs,
    ) -> tuple[dict, dict, dict]:
        preprocess_params: dict[str, Any] = {}
        postprocess_params: dict[str, Any] = {}
        if speakers is not None:
            if not isinstance(speakers, Mapping):
                raise TypeError(
                    f"speakers must be a {{name: clip or embedding}} mapping, got {type(speakers).__name__}"
                )
            preprocess_params["speakers"] = speakers
        if task is not None:
            if task not in MODEL_TASKS:
                raise ValueError(f"task {task!r} is not one of {MODEL_TASKS}")
            preprocess_params["task"] = task
        if return_timestamps is not None:
            preprocess_params["timestamps"] = postprocess_params["timestamps"] = bool(return_timestamps)
        preprocess_params["timestamps_from"] = self._timestamp_source(timestamps_from)
        if segment_batch_size is not None:
            preprocess_params["batch_size"] = _count(segment_batch_size, "batch_size")
        if max_segment_duration is not None:
            if not 1.0 <= float(max_segment_duration):
                raise ValueError(f"max_segment_duration must be at least 1 s, got {max_segment_duration!r}")
            preprocess_params["max_segment_duration"] = float(max_segment_duration)
        hints = {
            name: _count(value, name)
            for name, value in (
                ("num_speakers", num_speakers),
                ("min_speakers", min_speakers),
                ("max_speakers", max_speakers),
            )
            if value is not None
        }
        low, high = hints.get("min_speakers", 1), hints.get("max_speakers")
        if high is not None and low > high:
            raise ValueError(f"min_speakers={low} is more than max_speakers={high}")
        if "num_speakers" in hints and not low <= hints["num_speakers"] <= (high or hints["num_speakers"]):
            raise ValueError(f"num_speakers={hints['num_speakers']} is outside min_speakers..max_speakers")
        postprocess_params.update(hints)
        if linking_threshold is not None:
            postprocess_params["linking_threshold"] = float(linking_threshold)
        forward_params = dict(generate_kwargs)
        if progress_callback is not None:
            forward_params["progress_callback"] = progress_callback
        if constrain_labels is not None:
            forward_params["constrain_labels"] = bool(constrain_labels)
        if ctc_weight is not None:
            forward_params["ctc_weight"] = resolve_ctc_weight(self.model.config, ctc_weight)
        if speaker_weight is not None:
            if not float(speaker_weight) >= 0.0:
                raise ValueError(f"speaker_weight must be >= 0, got {speaker_weight!r}")
            forward_params["speaker_weight"] = float(speaker_weight)
        if relabel_speakers is not None:
            forward_params["relabel_speakers"] = bool(relabel_speakers)
        forward_params.update(hints)
        return preprocess_params, forward_params, postprocess_params

    def _timestamp_source(self, timestamps_from: str | None) -> str:
        """Where turn times come from: `timestamps_from`, by default "ctc" for a model trained with CTC."""
        trained = bool(getattr(self.model.config, "audio_ctc", False))
        if timestamps_from is None:
            return "ctc" if trained else "model"
        if timestamps_from not in TIMESTAMP_SOURCES:
            raise ValueError(f"timestamps_from {timestamps_from!r} is not one of {TIMESTAMP_SOURCES}")
        if timestamps_from == "ctc" and not trained:
            raise ValueError(
                "timestamps_from='ctc': this model's audio tokens were not trained to spell the "
                "transcript (config.audio_ctc is false), so they cannot place its turns; use 'model'"
            )
        return timestamps_from

    def embed_speakers(self, speakers: Mapping | None) -> dict[str, Any]:
        """Registered speakers with every clip replaced by its raw extractor embedding (`{"embedding": vector}`).

        Done once per recording rather than once per segment; the CLI calls it once for all files.
        The clips are checked here (at least 1 s, not silent), before any audio is decoded.
        """
        return embed_speakers(self.model, self.processor, speakers, self.device, self.dtype)

    def preprocess(
        self,
        inputs: Any,
        speakers: Mapping | None = None,
        task: str = "sdr",
        timestamps: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_segment_duration: float = MAX_SEGMENT_DURATION,
        timestamps_from: str = "model",
    ) -> Iterator[dict[str, Any]]:
        if isinstance(inputs, Mapping) and "speakers" in inputs:
            inputs = dict(inputs)
            own = inputs.pop("speakers")
            if speakers is not None and own is not None:
                raise ValueError(
                    "speakers were given both in the input dict and as a call argument; give one"
                )
            speakers = own if own is not None else speakers
        if task == "asr" and speakers:
            raise ValueError("the ASR task takes no registered speakers")
        max_duration = self.processor.feature_extractor.max_duration
        if max_segment_duration > max_duration:
            raise ValueError(
                f"max_segment_duration={max_segment_duration:g} s is over the model's max_duration={max_duration:g} s"
            )
        registered = self.embed_speakers(speakers)
        plan = segment_recording(inputs, max_duration=max_segment_duration)
        segments = plan.segments
        link = task == "sdr" and len(segments) > 1
        # turn times are found by aligning the transcript (and then steer the speakers by voice) or
        # written by the model
        align = task == "sdr" and timestamps_from == "ctc"
        common = {
            "names": list(registered),
            "voices": speaker_voices(registered),
            "task": task,
            "link": link,
            "timestamps": (timestamps or link) and not align,
            "return_times": timestamps,
            "align": align,
            "total": len(segments),
        }
        if not segments:
            yield {**common, "segments": [], "waveforms": [], "speech_masks": [], "done": 0, "is_last": True}
            return
        audio = read_segments(plan.source, segments)
        for first in range(0, len(segments), batch_size):
            batch = segments[first : first + batch_size]
            waveforms = [next(audio) for _ in batch]
            features = self.processor(
                waveforms,
                speakers=registered or None,
                task=task,
                timestamps=common["timestamps"],
                return_tensors="pt",
            )
            # Audio features follow the model's dtype (bf16/fp16 checkpoints); ids and masks stay integer.
            yield {
                **dict(features.to(self.dtype)),
                **common,
                "segments": batch,
                "waveforms": waveforms,
                "speech_masks": [plan.speech_mask(segment) for segment in batch],
                "done": first + len(batch),
                "is_last": first + batch_size >= len(segments),
            }

    def _forward(
        self,
        model_inputs: dict[str, Any],
        progress_callback: Callable[[int, int], None] | None = None,
        constrain_labels: bool = True,
        ctc_weight: float | None = None,
        speaker_weight: float | None = None,
        relabel_speakers: bool = True,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        **generate_kwargs,
    ) -> dict[str, Any]:
        info = {key: model_inputs.pop(key) for key in SEGMENT_KEYS}
        results = []
        if info["segments"]:
            prompt_length = model_inputs["input_ids"].shape[1]
            generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
            # A plain transcript (ASR) has no labels: no constraint, CTC only.
            processors = transcript_logits_processors(
                self.model,
                self.processor.tokenizer,
                model_inputs,
                info["names"],
                constrain_labels=constrain_labels,
                timestamps=info["timestamps"],
                ctc_weight=ctc_weight,
                speaker_weight=speaker_weight,
                roles=info["task"] == "sdr",
            )
            if processors:
                generate_kwargs["logits_processor"] = LogitsProcessorList(
                    [*(generate_kwargs.get("logits_processor") or []), *processors]
                )
            generated = self.model.generate(**model_inputs, **generate_kwargs)
            # generate(input_ids=...) returns the prompt followed by the new tokens.
            texts = self.processor.batch_decode(generated[:, prompt_length:])
            placements = [None] * len(texts)
            if info["align"]:
                placements = transcripts_aligned_lines(
                    self.model,
                    self.processor.tokenizer,
                    model_inputs,
                    processors,
                    generated[:, prompt_length:],
                )
            relabel = info["align"] and relabel_speakers
            thresholds = VoiceThresholds.from_config(self.model.config)
            embed = model_embedder(self.model) if info["link"] or relabel else None
            windows = model_window_embedder(self.model) if relabel and thresholds.split > -1 else None
            # a segment holds at most the recording's people, and all of them when it is the recording
            bounds = {"max_speakers": num_speakers or max_speakers}
            if info["total"] == 1:
                bounds["min_speakers"] = num_speakers or min_speakers
            for segment, waveform, mask, text, lines in zip(
                info["segments"], info["waveforms"], info["speech_masks"], texts, placements, strict=True
            ):
                turns, placed = parse_role_transcript(text), False
                if info["align"]:
                    turns, placed = aligned_turns(
                        turns,
                        lines,
                        self.processor.audio_token_seconds,
                        waveform,
                        mask,
                        embed if relabel else None,
                        info["voices"],
                        thresholds=thresholds,
                        embed_windows=windows,
                        **bounds,
                    )
                if placed:
                    text = format_role_transcript(turns, timestamps=info["return_times"] or info["link"])
                result = {"start": segment.start, "end": segment.end, "text": text, "turns": turns}
                if info["link"]:
                    result["speakers"] = local_speaker_embeddings(waveform, turns, embed, info["names"], mask)
                results.append(result)
        if progress_callback is not None:
            progress_callback(info["done"], info["total"])
        return {
            "results": results,
            "names": info["names"],
            "task": info["task"],
            "link": info["link"],
            "is_last": info["is_last"],
        }

    def postprocess(
        self,
        model_outputs: list[dict[str, Any]],
        timestamps: bool = False,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        linking_threshold: float | None = None,
    ) -> dict[str, Any]:
        segments = [result for output in model_outputs for result in output["results"]]
        first = model_outputs[0]
        if not segments:
            return {"text": "", "turns": []}
        if first["link"]:
            if linking_threshold is None:
                linking_threshold = VoiceThresholds.from_config(self.model.config).link
            turns = link_segments(
                segments, first["names"], num_speakers, min_speakers, max_speakers, linking_threshold
            )
        else:
            turns = []
            for segment in segments:
                for turn in segment["turns"]:
                    turn = dict(turn)
                    if timestamps or len(segments) > 1:
                        start, end = turn_span(turn, segment["end"] - segment["start"])
                        turn["start"], turn["end"] = (
                            round(segment["start"] + start, 3),
                            round(segment["start"] + end, 3),
                        )
                    turns.append(turn)
        if not timestamps:
            for turn in turns:
                turn.pop("start", None)
                turn.pop("end", None)
        if len(segments) == 1:
            # One segment is the whole recording: the text is the model's own.
            return {"text": segments[0]["text"], "turns": turns}
        if first["task"] == "asr":
            return {
                "text": " ".join(s["text"].strip() for s in segments if s["text"].strip()),
                "turns": turns,
            }
        return {"text": format_role_transcript(turns, timestamps), "turns": turns}


__all__ = [
    "SpeakerLMPipeline",
    "TASK",
    "line_speaker",
    "place_turns",
    "aligned_turns",
    "embed_speakers",
    "speaker_voices",
]
