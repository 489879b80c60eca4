"""SpeakerLM processor: the spec's prompts, placeholder expansion, enrollment and transcript parsing."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, BatchFeature, ProcessorMixin

from .configuration_speakerlm import (
    AUDIO_AND_ENROLLMENT_INPUTS,
    AUDIO_TOKEN,
    END_TOKEN,
    SPEAKER_TOKEN,
    START_TOKEN,
    SpeakerLMConfig,
)
from .feature_extraction_speakerlm import SpeakerLMFeatureExtractor, pad_features

SYSTEM_PROMPT = "You are a helpful assistant."
ASR_INSTRUCTION = "Transcribe the speech."
SDR_INSTRUCTION = "Transcribe by roles."
SDR_TIMESTAMP_INSTRUCTION = "Transcribe by roles with timestamps."
REGISTRATION_HEADER = "Registered Speaker Embeddings:\n"
TASKS = ("asr", "sdr")
IGNORE_INDEX = -100
MAX_NAME_LENGTH = 64
FORBIDDEN_NAME_CHARACTERS = set("\n\r:[]<>")
ANONYMOUS_LABEL = re.compile(r"spk\d+", re.IGNORECASE)

# Qwen2.5's chat layout, for tokenizers that come without a chat template of their own.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TURN_LINE = re.compile(
    r"^\s*(?:\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s*)?(?P<speaker>[^:\n]+?)\s*:\s?(?P<text>.*)$"
)


def check_speaker_names(names: Sequence[str], reserved: Sequence[str] = ()) -> list[str]:
    """Validate registered names; returns them stripped of surrounding spaces.

    A name becomes a label of the target text (`Name: text`), so it must be non-empty, unique,
    one line, free of `:`, `[`, `]`, `<`, `>`, control characters and special-token text, and
    distinct from the anonymous `spkK` labels.
    """
    cleaned = []
    for raw in names:
        if not isinstance(raw, str):
            raise TypeError(f"speaker name {raw!r} is not a string")
        name = raw.strip()
        if not name:
            raise ValueError(f"speaker name {raw!r} is empty")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"speaker name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters")
        bad = sorted(FORBIDDEN_NAME_CHARACTERS & set(name))
        if bad:
            raise ValueError(f"speaker name {name!r} contains the forbidden character(s) {bad}")
        if any(unicodedata.category(c).startswith("C") for c in name):
            raise ValueError(f"speaker name {name!r} contains control or invisible characters")
        for token in reserved:
            if token and token in name:
                raise ValueError(f"speaker name {name!r} contains the special token {token!r}")
        if ANONYMOUS_LABEL.fullmatch(name):
            raise ValueError(
                f"speaker name {name!r} looks like an anonymous label (spkK); choose another name"
            )
        if name in cleaned:
            raise ValueError(f"speaker name {name!r} is registered twice")
        cleaned.append(name)
    return cleaned


def user_prompt(
    task: str = "sdr",
    names: Sequence[str] = (),
    audio_span: str = AUDIO_TOKEN,
    speaker_spans: Sequence[str] | None = None,
    timestamps: bool = False,
) -> str:
    """The user message of the spec's prompts, with `audio_span` / `speaker_spans` between the markers."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    if task == "asr":
        if names:
            raise ValueError("the ASR task takes no registered speakers")
        return f"{ASR_INSTRUCTION} {START_TOKEN}{audio_span}{END_TOKEN}"
    speaker_spans = [SPEAKER_TOKEN] * len(names) if speaker_spans is None else speaker_spans
    registration = ""
    if names:
        registration = REGISTRATION_HEADER + "".join(
            f"{name}{START_TOKEN}{span}{END_TOKEN};\n"
            for name, span in zip(names, speaker_spans, strict=True)
        )
    instruction = SDR_TIMESTAMP_INSTRUCTION if timestamps else SDR_INSTRUCTION
    return f"{registration}{instruction} {START_TOKEN}{audio_span}{END_TOKEN}"


def flat_prompt(task: str = "sdr", names: Sequence[str] = (), timestamps: bool = False) -> str:
    """The prompt as the paper prints it: `AUDIO` and `EMB(name)` stand for the projected spans."""
    user = user_prompt(task, names, "AUDIO", [f"EMB({name})" for name in names], timestamps)
    return f"{SYSTEM_PROMPT} {user}"


def format_role_transcript(turns: Sequence[Mapping], timestamps: bool = False) -> str:
    """Target text: one `label: text` line per turn, `[start-end] ` first when timestamped."""
    lines = []
    for turn in turns:
        prefix = f"[{turn['start']:.1f}-{turn['end']:.1f}] " if timestamps else ""
        lines.append(f"{prefix}{turn['speaker']}: {turn['text'].strip()}")
    return "\n".join(lines)


def parse_role_transcript(text: str) -> list[dict]:
    """Generated text back into turns `{"speaker", "text"}` (+ `"start"`, `"end"` when timestamped).

    A line without a label continues the previous turn; text before any label is kept under the
    speaker `"unknown"`. Lines end at "\n" only, as the target format writes them (and as
    `SpeakerLabelConstraint` reads them): other control characters stay inside the text.
    """
    turns: list[dict] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        match = TURN_LINE.match(line)
        if match is None:
            if turns:
                turns[-1]["text"] = f"{turns[-1]['text']} {line.strip()}".strip()
            else:
                turns.append({"speaker": "unknown", "text": line.strip()})
            continue
        turn = {"speaker": match["speaker"].strip(), "text": match["text"].strip()}
        if match["start"] is not None:
            turn["start"], turn["end"] = float(match["start"]), float(match["end"])
        turns.append(turn)
    return turns


def is_embedding(value: object, size: int) -> bool:
    """A precomputed enrollment embedding: `{"embedding": vector}` or a 1-D float vector of the extractor's size.

    No clip is that short (clips need at least a second), so the size tells the two apart.
    """
    if isinstance(value, Mapping):
        return "embedding" in value
    if isinstance(value, torch.Tensor):
        return value.ndim == 1 and value.shape[0] == size and value.is_floating_point()
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.shape[0] == size and value.dtype.kind == "f"
    return False


class SpeakerLMProcessor(ProcessorMixin):
    r"""
    Builds SpeakerLM's model inputs: the spec's prompts through the tokenizer's chat template, with
    the audio placeholder expanded to the number of audio tokens and one speaker placeholder per
    registered speaker; audio and enrollment features from the feature extractor.

    Args:
        feature_extractor: a [`SpeakerLMFeatureExtractor`].
        tokenizer: the LLM's tokenizer with SpeakerLM's special tokens added.
        chat_template: defaults to the tokenizer's own, else Qwen2.5's layout.
        audio_token_stride: encoder frames per audio token (the model's `audio_token_stride`).
        speaker_embedding_size: size of the extractor's embeddings (for precomputed ones).
    """

    def __init__(
        self,
        feature_extractor,
        tokenizer,
        chat_template: str | None = None,
        audio_token_stride: int = 2,
        speaker_embedding_size: int = 192,
        **kwargs,
    ):
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
        self.audio_token_stride = audio_token_stride
        self.speaker_embedding_size = speaker_embedding_size
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template, **kwargs)
        missing = [
            t for t in (AUDIO_TOKEN, SPEAKER_TOKEN, START_TOKEN, END_TOKEN) if t not in tokenizer.get_vocab()
        ]
        if missing:
            raise ValueError(f"the tokenizer lacks SpeakerLM's special tokens {missing}; add them first")

    def match_model(self, config) -> None:
        """Produce the inputs `config`'s model reads: the whole input's speaker features when its
        audio tokens carry sliding-window speaker embeddings."""
        self.feature_extractor.return_speaker_features = bool(getattr(config, "audio_speaker_window", 0))

    @property
    def reserved_texts(self) -> list[str]:
        """Texts a speaker name must not contain: every special or added token."""
        added = getattr(self.tokenizer, "added_tokens_decoder", {})
        return sorted({t.content for t in added.values()} | set(self.tokenizer.all_special_tokens))

    def num_audio_tokens(self, num_frames: int) -> int:
        return -(-num_frames // self.audio_token_stride)

    @property
    def audio_token_seconds(self) -> float:
        """Seconds of audio per audio token: `audio_token_stride` encoder frames of `lfr_n` 10 ms fbank frames."""
        return self.audio_token_stride * self.feature_extractor.lfr_n * 0.01

    def prompt_text(
        self, num_audio_tokens: int, task: str = "sdr", names: Sequence[str] = (), timestamps: bool = False
    ) -> str:
        """The whole prompt through the chat template, ending where the assistant's answer starts."""
        user = user_prompt(task, names, AUDIO_TOKEN * num_audio_tokens, None, timestamps)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        return self.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def answer_text(self, target: str) -> str:
        """The assistant turn as the chat template writes it after the prompt (target + end of turn)."""
        probe = [{"role": "user", "content": "x"}]
        prompt = self.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        full = self.apply_chat_template(probe + [{"role": "assistant", "content": target}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(
                "the chat template does not write the assistant turn after the generation prompt"
            )
        return full[len(prompt) :].rstrip("\n")

    def __call__(
        self,
        audio: object | list | None = None,
        speakers: Mapping | Sequence[Mapping | None] | None = None,
        text: str | Sequence[str] | None = None,
        task: str = "sdr",
        sampling_rate: int | None = None,
        timestamps: bool = False,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            audio: one recording or a list (paths, arrays, `{"raw", "sampling_rate"}` dicts).
            speakers: registered speakers, `{name: clip | [clips] | embedding}`, one mapping for the
                whole batch or one per recording (None for No-Regist). Clips over 10 s are cut into
                pieces whose embeddings the model averages.
            text: target transcripts for training; adds `labels` (-100 on the prompt and padding)
                and pads on the right. Without it the batch is left-padded for `generate`.
            task: "sdr" (transcribe by roles) or "asr" (plain transcription).
            timestamps: ask for `[start-end]` turn times.
        """
        if audio is None:
            raise ValueError("SpeakerLMProcessor needs audio")
        batch = audio if isinstance(audio, list) else [audio]
        registrations = self.registrations(speakers, len(batch))
        targets = None if text is None else ([text] if isinstance(text, str) else list(text))
        if targets is not None and len(targets) != len(batch):
            raise ValueError(f"got {len(targets)} target texts for {len(batch)} recordings")

        features = self.feature_extractor(batch, sampling_rate=sampling_rate, return_tensors="pt")
        frames = features["input_features_mask"].sum(-1).tolist()

        sequences, labels = [], []
        enrollment, piece_speaker, embeddings, label_ids = [], [], [], []
        for i, registered in enumerate(registrations):
            names = check_speaker_names(list(registered), self.reserved_texts)
            prompt = self.prompt_text(self.num_audio_tokens(frames[i]), task, names, timestamps)
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            label = [IGNORE_INDEX] * len(ids)
            if targets is not None:
                answer = self.tokenizer(self.answer_text(targets[i]), add_special_tokens=False)["input_ids"]
                ids, label = ids + answer, label + answer
            sequences.append(ids)
            labels.append(label)
            for name, value in zip(names, registered.values(), strict=True):
                slot = len(embeddings)
                label_ids.append(self.label_ids(name))
                if is_embedding(value, self.speaker_embedding_size):
                    vector = value["embedding"] if isinstance(value, Mapping) else value
                    vector = torch.as_tensor(np.asarray(vector), dtype=torch.float32)
                    if vector.shape != (self.speaker_embedding_size,):
                        raise ValueError(
                            f"the embedding of speaker {name!r} has shape {tuple(vector.shape)}; "
                            f"expected ({self.speaker_embedding_size},)"
                        )
                    embeddings.append(vector)
                    continue
                clips = value if isinstance(value, list) else [value]
                pieces = self.feature_extractor.enrollment_features(clips, name)
                enrollment.extend(pieces)
                piece_speaker.extend([slot] * len(pieces))
                embeddings.append(torch.zeros(self.speaker_embedding_size))

        data = dict(features)
        data.update(self.pad_ids(sequences, labels if targets is not None else None))
        if embeddings:
            data["speaker_embeddings"] = torch.stack(embeddings)
            longest = max(len(ids) for ids in label_ids)
            data["speaker_label_ids"] = torch.tensor(
                [ids + [IGNORE_INDEX] * (longest - len(ids)) for ids in label_ids], dtype=torch.long
            )
        if enrollment:
            data["enrollment_features"], data["enrollment_features_mask"] = pad_features(enrollment)
            data["enrollment_speaker_index"] = torch.tensor(piece_speaker, dtype=torch.long)
        return BatchFeature(data, tensor_type=return_tensors)

    def label_ids(self, name: str) -> list[int]:
        """Token ids of a speaker label as a transcript line starts with it."""
        return self.tokenizer(name, add_special_tokens=False)["input_ids"]

    @staticmethod
    def registrations(speakers: Mapping | Sequence | None, batch_size: int) -> list[dict]:
        """One (possibly empty) `{name: enrollment}` dict per recording."""
        if speakers is None:
            return [{} for _ in range(batch_size)]
        if isinstance(speakers, Mapping):
            return [dict(speakers) for _ in range(batch_size)]
        speakers = list(speakers)
        if len(speakers) != batch_size:
            raise ValueError(f"got {len(speakers)} speaker registrations for {batch_size} recordings")
        for item in speakers:
            if item is not None and not isinstance(item, Mapping):
                raise TypeError(
                    f"a registration must be a {{name: clip}} mapping or None, got {type(item).__name__}"
                )
        return [dict(item or {}) for item in speakers]

    def pad_ids(self, sequences: list[list[int]], labels: list[list[int]] | None) -> dict[str, torch.Tensor]:
        """Left padding for generation; right padding (and labels) for training."""
        longest = max(len(s) for s in sequences)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        label_ids = torch.full((len(sequences), longest), IGNORE_INDEX, dtype=torch.long)
        for i, ids in enumerate(sequences):
            span = slice(0, len(ids)) if labels is not None else slice(longest - len(ids), longest)
            input_ids[i, span] = torch.tensor(ids)
            attention_mask[i, span] = 1
            if labels is not None:
                label_ids[i, span] = torch.tensor(labels[i])
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if labels is not None:
            out["labels"] = label_ids
        return out

    def decode(self, token_ids, skip_special_tokens: bool = True, **kwargs) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)

    def post_process(self, generated_ids, **kwargs) -> list[list[dict]]:
        """Generated ids (new tokens only) of each recording -> its turns."""
        return [parse_role_transcript(text) for text in self.batch_decode(generated_ids, **kwargs)]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", *AUDIO_AND_ENROLLMENT_INPUTS]


# Lets AutoProcessor / SpeakerLMProcessor.from_pretrained find the feature extractor of a saved folder.
AutoFeatureExtractor.register(SpeakerLMConfig, SpeakerLMFeatureExtractor, exist_ok=True)
AutoProcessor.register(SpeakerLMConfig, SpeakerLMProcessor, exist_ok=True)

__all__ = [
    "SpeakerLMProcessor",
    "check_speaker_names",
    "user_prompt",
    "flat_prompt",
    "format_role_transcript",
    "parse_role_transcript",
]
