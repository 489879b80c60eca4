"""Configuration of SpeakerLM: audio encoder, speaker-embedding extractor, projectors and the LLM."""

from __future__ import annotations

from collections.abc import Mapping

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_sensevoice import SenseVoiceEncoderConfig
from .configuration_speaker_encoders import CAMPPlusConfig, ERes2NetV2Config

SPEAKER_CONFIG_CLASSES: dict[str, type[PreTrainedConfig]] = {
    ERes2NetV2Config.model_type: ERes2NetV2Config,
    CAMPPlusConfig.model_type: CAMPPlusConfig,
}

# Text of the special tokens SpeakerLM adds to the LLM's tokenizer.
AUDIO_TOKEN = "<|audio_pad|>"
SPEAKER_TOKEN = "<|speaker_pad|>"
START_TOKEN = "<start>"
END_TOKEN = "<end>"
SPECIAL_TOKENS = (AUDIO_TOKEN, SPEAKER_TOKEN, START_TOKEN, END_TOKEN)

# What `config.lora` may hold (the arguments of `add_lora`).
LORA_SETTINGS = ("r", "alpha", "dropout", "target_modules")

# SpecAugment while the audio encoder trains (`spec_augment`): two bands of up to 10 of 80 mel bins,
# and a stretch of up to 5 frames (0.3 s at 60 ms) per 50 frames, about 5% of the time.
SPEC_AUGMENT_DEFAULTS = {
    "num_mel_bins": 80,
    "freq_masks": 2,
    "max_freq_width": 10,
    "time_mask_rate": 0.02,
    "max_time_width": 5,
}


def spec_augment_settings(settings: dict, input_size: int) -> dict:
    """`settings` completed with `SPEC_AUGMENT_DEFAULTS`, checked against the encoder's input size."""
    if not isinstance(settings, dict) or set(settings) - set(SPEC_AUGMENT_DEFAULTS):
        raise ValueError(
            f"spec_augment must be None or a dict of {sorted(SPEC_AUGMENT_DEFAULTS)}, got {settings!r}"
        )
    full = {**SPEC_AUGMENT_DEFAULTS, **settings}
    bins = full["num_mel_bins"]
    if not (isinstance(bins, int) and bins > 0 and input_size % bins == 0):
        raise ValueError(
            f"spec_augment num_mel_bins must divide the audio input size {input_size}, got {bins!r}"
        )
    counts = ("freq_masks", "max_freq_width", "max_time_width")
    if any(not isinstance(full[k], int) or full[k] < 0 for k in counts) or full["max_freq_width"] > bins:
        raise ValueError(f"spec_augment {counts} must be integers >= 0 (widths at most num_mel_bins): {full}")
    if not 0 <= float(full["time_mask_rate"]) <= 1:
        raise ValueError(f"spec_augment time_mask_rate must be in [0, 1], got {full['time_mask_rate']!r}")
    return full


# What `config.voice_thresholds` may hold (see `linking_speakerlm.VoiceThresholds`).
VOICE_THRESHOLD_KEYS = ("cluster", "link", "relabel", "registered", "split", "short")


def voice_threshold_settings(settings) -> dict[str, float]:
    """`settings` (any subset of `VOICE_THRESHOLD_KEYS`) checked: each a cosine similarity in [-1, 1]."""
    if not isinstance(settings, Mapping) or set(settings) - set(VOICE_THRESHOLD_KEYS):
        raise ValueError(
            f"voice_thresholds must be None or a dict of {VOICE_THRESHOLD_KEYS}, got {settings!r}"
        )
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
            raise ValueError(f"voice threshold {key!r} must be a cosine similarity in [-1, 1], got {value!r}")
    return {key: float(value) for key, value in settings.items()}


# Model inputs besides the text: audio features and the registered speakers' enrollment.
AUDIO_AND_ENROLLMENT_INPUTS = (
    "input_features",
    "input_features_mask",
    "speaker_features",
    "speaker_features_mask",
    "enrollment_features",
    "enrollment_features_mask",
    "enrollment_speaker_index",
    "speaker_embeddings",
    "speaker_label_ids",
)


def speaker_config_from_dict(config: dict) -> PreTrainedConfig:
    """Build the speaker-extractor config named by `model_type` (ERes2NetV2 when absent)."""
    model_type = config.get("model_type", ERes2NetV2Config.model_type)
    if model_type not in SPEAKER_CONFIG_CLASSES:
        raise ValueError(
            f"speaker_config.model_type {model_type!r} is not a supported speaker extractor; "
            f"expected one of {sorted(SPEAKER_CONFIG_CLASSES)}"
        )
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    return SPEAKER_CONFIG_CLASSES[model_type](**kwargs)


class SpeakerLMConfig(PreTrainedConfig):
    r"""
    Configuration of [`SpeakerLMForConditionalGeneration`].

    Args:
        audio_config: the SenseVoice SANM encoder ([`SenseVoiceEncoderConfig`]).
        speaker_config: the frozen speaker-embedding extractor, [`ERes2NetV2Config`] (default) or
            [`CAMPPlusConfig`]; a dict picks the class from its `model_type`.
        text_config: any causal LM config (Qwen2 for Qwen2.5-Instruct).
        projector_num_layers / projector_num_heads / projector_intermediate_size / projector_dropout:
            the audio projector's Transformer layers, run at the audio encoder's width.
        audio_token_stride: kernel and stride of the projector's convolution: how many encoder frames
            (60 ms each with LFR 7/6) become one audio token of the LLM.
        audio_speaker_window: 0 (the paper's model) or a window in seconds: each audio token then
            also carries the frozen extractor's embedding of the audio around it (a window of this
            length centred on the token), projected by the speaker projector. This gives the LLM
            the voice signal it needs to tell speakers apart without registration, in the same
            space as the enrolled speakers' embeddings. Needs a CAM++ extractor.
        speaker_label_hints: 0 (the paper's model) or the sharpness of a softmax over cosine
            similarities: with registered speakers, each audio token also gets the mean input
            embedding of the name of the registered speaker whose embedding its window matches
            (unit length, weighted by `softmax(speaker_label_hints * cos(window, enrolled))`,
            scaled to the norm of the token's audio content). The LLM then
            copies the name it hears instead of matching voices to the prompt itself. Needs
            `audio_speaker_window` > 0 and `speaker_label_ids` from the processor.
        audio_ctc: the audio tokens were trained, with an auxiliary CTC loss, to spell the transcript
            when scored against the LLM's input embeddings (the pad token being the blank), so
            decoding can follow their alignment (joint CTC / attention decoding, and speaker labels
            chosen by the voice where the next turn starts; see `generation_speakerlm`). Set by
            training with a CTC weight; false for the paper's model.
        decoding_ctc_weight: None, or the joint CTC / attention decoding weight this model decodes
            with when a call names none (None: `generation_speakerlm.DEFAULT_CTC_WEIGHT`); chosen for
            the model on held-out sessions, as its beam count in `generation_config.json` is (see
            `training/tiny/tune_decoding.py`). Only for a model with `audio_ctc`.
        audio_token_id / speaker_token_id: placeholder ids replaced by projected audio frames and
            projected enrollment embeddings.
        start_token_id / end_token_id: ids of the `<start>` / `<end>` markers around each placeholder span.
        spec_augment: None, or SpecAugment settings applied to the audio features while the audio
            encoder trains (`modeling_speakerlm.spec_augment`): `num_mel_bins` (of each stacked
            frame), `freq_masks`, `max_freq_width` (bins), `time_mask_rate` (masks per valid frame)
            and `max_time_width` (frames); missing keys take `SPEC_AUGMENT_DEFAULTS`. Never applied
            at inference.
        voice_thresholds: None, or the cosine similarities at which the speaker extractor's voices
            count as one speaker (`cluster`, `link`, `relabel`, `registered`, `split`, `short`; see
            `linking_speakerlm.VoiceThresholds`), calibrated for this model's extractor; missing keys
            take the defaults.
        lora: None, or the settings of LoRA adapters the LLM carries unmerged (`r`, `alpha`,
            `dropout`, `target_modules`): set by `add_lora` and cleared by `merge_lora`, so that the
            mid-run checkpoints of a LoRA stage load with their adapters. Exported models have none.
    """

    model_type = "speakerlm"
    sub_configs_defaults = {
        "audio_config": SubConfigSpec(config_class=SenseVoiceEncoderConfig),
        "speaker_config": SubConfigSpec(config_class=ERes2NetV2Config),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    audio_config: dict | PreTrainedConfig | None = None
    speaker_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_num_layers: int = 2
    projector_num_heads: int = 8
    projector_intermediate_size: int = 2048
    projector_dropout: float = 0.0
    audio_token_stride: int = 2
    audio_speaker_window: float = 0.0
    speaker_label_hints: float = 0.0
    audio_ctc: bool = False
    decoding_ctc_weight: float | None = None
    audio_token_id: int | None = None
    speaker_token_id: int | None = None
    start_token_id: int | None = None
    end_token_id: int | None = None
    initializer_range: float = 0.02
    spec_augment: dict | None = None
    voice_thresholds: dict | None = None
    lora: dict | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.speaker_config, dict):
            self.speaker_config = speaker_config_from_dict(self.speaker_config)
        super().__post_init__(**kwargs)
        if self.audio_token_stride < 1:
            raise ValueError(f"audio_token_stride must be >= 1, got {self.audio_token_stride}")
        if self.audio_speaker_window < 0:
            raise ValueError(f"audio_speaker_window must be >= 0 seconds, got {self.audio_speaker_window}")
        if self.audio_speaker_window and self.speaker_config.model_type != "campplus":
            raise ValueError(
                "audio_speaker_window needs a CAM++ speaker extractor (speaker_config.model_type 'campplus')"
            )
        if self.speaker_label_hints < 0:
            raise ValueError(f"speaker_label_hints must be >= 0, got {self.speaker_label_hints}")
        if self.speaker_label_hints and not self.audio_speaker_window:
            raise ValueError("speaker_label_hints needs audio_speaker_window > 0 (the windows it compares)")
        if self.decoding_ctc_weight is not None:
            if not self.audio_ctc:
                raise ValueError(
                    "decoding_ctc_weight needs audio_ctc (audio tokens trained to spell the transcript)"
                )
            if not 0.0 <= float(self.decoding_ctc_weight) < 1.0:
                raise ValueError(f"decoding_ctc_weight must be in [0, 1), got {self.decoding_ctc_weight!r}")
            self.decoding_ctc_weight = float(self.decoding_ctc_weight)
        if self.spec_augment is not None:
            self.spec_augment = spec_augment_settings(self.spec_augment, self.audio_config.input_size)
        if self.voice_thresholds is not None:
            self.voice_thresholds = voice_threshold_settings(self.voice_thresholds)
        if self.lora is not None:
            if not isinstance(self.lora, dict) or set(self.lora) - set(LORA_SETTINGS):
                raise ValueError(f"lora must be None or a dict of {LORA_SETTINGS}, got {self.lora!r}")
        if self.audio_config.hidden_size % self.projector_num_heads:
            raise ValueError(
                f"projector_num_heads ({self.projector_num_heads}) must divide the audio encoder width "
                f"({self.audio_config.hidden_size})"
            )


# Lets AutoConfig read a saved folder once this module is imported (remote code does the same).
AutoConfig.register(SpeakerLMConfig.model_type, SpeakerLMConfig, exist_ok=True)

__all__ = ["SpeakerLMConfig", "SPECIAL_TOKENS", "AUDIO_TOKEN", "SPEAKER_TOKEN", "START_TOKEN", "END_TOKEN"]
