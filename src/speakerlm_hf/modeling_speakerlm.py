"""SpeakerLM: SenseVoice encoder -> audio projector -> LLM, with projected enrollment embeddings.

Audio frames and registered speakers' embeddings take the place of placeholder tokens in the
LLM's input embeddings (`masked_scatter`), so the LLM sees the spec's prompts with the
projected features between the `<start>`/`<end>` markers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from .configuration_speakerlm import AUDIO_AND_ENROLLMENT_INPUTS, SpeakerLMConfig, spec_augment_settings
from .modeling_campplus import CAMPPlusModel
from .modeling_eres2netv2 import ERes2NetV2Model
from .modeling_sensevoice import SenseVoiceEncoderModel

SPEAKER_ENCODER_CLASSES = {"eres2netv2": ERes2NetV2Model, "campplus": CAMPPlusModel}

# The parts `set_trainable_parts` knows; "lora" means the LoRA adapters of the LLM.
MODEL_PARTS = ("audio_encoder", "audio_projector", "speaker_encoder", "speaker_projector", "language_model")
TRAINABLE_PARTS = MODEL_PARTS + ("lora",)

# Inputs consumed once, at prefill; dropped from later decoding steps.
PREFILL_ONLY_INPUTS = AUDIO_AND_ENROLLMENT_INPUTS


def lengths_to_padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """True at padded positions of a (batch, max_length) sequence."""
    return torch.arange(max_length, device=lengths.device)[None, :] >= lengths[:, None]


def feature_lengths(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Valid frames of each padded (batch, frames, dim) input: the mask's sums, or all frames."""
    if mask is None:
        return torch.full((features.shape[0],), features.shape[1], dtype=torch.long, device=features.device)
    return mask.sum(-1).long()


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, settings: dict) -> torch.Tensor:
    """SpecAugment masks (Park et al. 2019) on a batch of stacked fbank frames (batch, frames, dim),
    where `dim` is `num_mel_bins` x frames stacked (low frame rate): per sample `freq_masks` bands of
    up to `max_freq_width` mel bins, the same bins in every stacked frame, and
    `time_mask_rate` x valid frames (rounded) stretches of up to `max_time_width` frames, set to 0
    (the mean of the normalised features). Masks are drawn from torch's global generator."""
    bins = int(settings["num_mel_bins"])
    batch, frames, dim = features.shape
    keep = torch.ones(batch, frames, bins, dtype=torch.bool)
    for row, length in enumerate(lengths.tolist()):
        for _ in range(int(settings["freq_masks"])):
            width = int(torch.randint(0, int(settings["max_freq_width"]) + 1, ()))
            first = int(torch.randint(0, bins - width + 1, ()))
            keep[row, :, first : first + width] = False
        for _ in range(round(float(settings["time_mask_rate"]) * length)):
            width = int(torch.randint(0, int(settings["max_time_width"]) + 1, ()))
            first = int(torch.randint(0, max(1, length - width + 1), ()))
            keep[row, first : first + width] = False
    keep = keep.repeat(1, 1, dim // bins).to(features.device)
    return features * keep.to(features.dtype)


class SpeakerLMProjectorLayer(nn.Module):
    """Pre-norm Transformer layer with padding-aware self-attention."""

    def __init__(self, width: int, num_heads: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ffn_norm = nn.LayerNorm(width)
        self.ffn_in = nn.Linear(width, intermediate_size)
        self.ffn_out = nn.Linear(intermediate_size, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        q, k, v = (
            self.qkv(self.attn_norm(hidden))
            .view(batch, length, 3, self.num_heads, width // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        attend = ~padding_mask[:, None, None, :]
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.dropout.p if self.training else 0.0
        )
        hidden = hidden + self.dropout(self.out(attn.transpose(1, 2).reshape(batch, length, width)))
        return hidden + self.dropout(self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(hidden)))))


class SpeakerLMAudioProjector(nn.Module):
    """Two Transformer layers at the encoder width, then a strided convolution to the LLM width.

    The convolution's kernel and stride (`audio_token_stride`) set how many encoder frames make
    one audio token.
    """

    def __init__(self, config: SpeakerLMConfig):
        super().__init__()
        width = config.audio_config.hidden_size
        self.stride = config.audio_token_stride
        self.layers = nn.ModuleList(
            SpeakerLMProjectorLayer(
                width,
                config.projector_num_heads,
                config.projector_intermediate_size,
                config.projector_dropout,
            )
            for _ in range(config.projector_num_layers)
        )
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(
            width, config.text_config.hidden_size, kernel_size=self.stride, stride=self.stride
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding_mask = lengths_to_padding_mask(lengths, hidden.shape[1])
        for layer in self.layers:
            hidden = layer(hidden, padding_mask)
        hidden = self.norm(hidden).masked_fill(padding_mask[..., None], 0.0)
        hidden = F.pad(hidden, (0, 0, 0, (-hidden.shape[1]) % self.stride))
        return self.conv(hidden.transpose(1, 2)).transpose(1, 2), self.output_lengths(lengths)


@dataclass
class SpeakerLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class SpeakerLMPreTrainedModel(PreTrainedModel):
    config_class = SpeakerLMConfig
    config: SpeakerLMConfig
    base_model_prefix = "speakerlm"
    main_input_name = "input_ids"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_cache_class = True
    _supports_attention_backend = True


class SpeakerLMForConditionalGeneration(SpeakerLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: SpeakerLMConfig):
        super().__init__(config)
        if config.spec_augment is not None:
            # completed and checked here too: `from_pretrained(path, spec_augment=...)` skips the config's checks
            config.spec_augment = spec_augment_settings(config.spec_augment, config.audio_config.input_size)
        self.audio_encoder = SenseVoiceEncoderModel(config.audio_config)
        self.audio_projector = SpeakerLMAudioProjector(config)
        self.speaker_encoder = SPEAKER_ENCODER_CLASSES[config.speaker_config.model_type](
            config.speaker_config
        )
        self.speaker_projector = nn.Linear(
            config.speaker_config.embedding_size, config.text_config.hidden_size
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()
        if config.lora:
            # a mid-run checkpoint of a LoRA stage: its weights are the adapters' and their base layers'
            self.add_lora(**config.lora)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_audio_features(
        self,
        input_features: torch.Tensor,
        input_features_mask: torch.Tensor | None = None,
        speaker_features: torch.Tensor | None = None,
        speaker_features_mask: torch.Tensor | None = None,
        label_hints: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Projected audio tokens of every sample, concatenated in batch order: (total_tokens, hidden).

        With `config.audio_speaker_window`, each token also gets the projected extractor embedding
        of the window of `speaker_features` centred on it; with `config.speaker_label_hints` and
        `label_hints` = (raw embeddings of the registered speakers (S, E), registered speakers per
        sample (B,), label embeddings (S, hidden)), also the label embedding of the registered
        speaker its window sounds like (`speaker_label_hint`).
        """
        tokens, token_lengths, lengths = self.encode_audio(input_features, input_features_mask)
        if self.config.audio_speaker_window:
            if speaker_features is None:
                raise ValueError(
                    "this model's audio tokens carry speaker embeddings (audio_speaker_window > 0): give "
                    "speaker_features (SpeakerLMProcessor does once `processor.match_model(model.config)`)"
                )
            windows = self.audio_speaker_embeddings(
                speaker_features,
                feature_lengths(speaker_features, speaker_features_mask),
                lengths,
                tokens.shape[1],
            )
            content = tokens
            tokens = tokens + self.speaker_projector(windows.to(self.speaker_projector.weight.dtype)).to(
                tokens.dtype
            )
            if self.config.speaker_label_hints and label_hints is not None:
                # as loud as the token's own audio content, whatever scale the projector has grown to
                loudness = content.norm(dim=-1, keepdim=True).detach()
                hints = self.speaker_label_hint(windows, *label_hints)
                tokens = tokens + (hints * loudness.to(hints.dtype)).to(tokens.dtype)
        return tokens[~lengths_to_padding_mask(token_lengths, tokens.shape[1])]

    def encode_audio(
        self, input_features: torch.Tensor, input_features_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The audio projector's tokens (B, T, hidden), tokens per sample and input frames per
        sample: the audio content of the audio tokens, before any speaker window is added."""
        lengths = feature_lengths(input_features, input_features_mask)
        # the encoder's own mode: a frozen encoder stays in eval mode while the rest trains
        if self.config.spec_augment and self.audio_encoder.training:
            input_features = spec_augment(input_features, lengths, self.config.spec_augment)
        encoded = self.audio_encoder(input_features, feature_lengths=lengths)
        tokens, token_lengths = self.audio_projector(encoded.last_hidden_state, encoded.output_lengths)
        return tokens, token_lengths, lengths

    def audio_ctc_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """CTC log-probabilities (..., vocabulary) of audio tokens (the projector's output): scored
        against the LLM's input embeddings, the pad token being the blank. Training's CTC loss
        (`ctc_weight`) and joint decoding (`decoding_guides`) both score them this way."""
        return torch.log_softmax(tokens.float() @ self.get_input_embeddings().weight.float().T, dim=-1)

    @torch.no_grad()
    def decoding_guides(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor,
        input_features_mask: torch.Tensor | None = None,
        speaker_features: torch.Tensor | None = None,
        speaker_features_mask: torch.Tensor | None = None,
        enrollment_features: torch.Tensor | None = None,
        enrollment_features_mask: torch.Tensor | None = None,
        enrollment_speaker_index: torch.Tensor | None = None,
        speaker_embeddings: torch.Tensor | None = None,
        **_: object,
    ) -> dict[str, object]:
        """What `CTCPrefixScorer` steers decoding with, from the processor's inputs.

        - `log_probs` (batch, tokens, vocabulary) and `lengths`: CTC log-probabilities of each
          recording's audio tokens, the projector's output scored against the LLM's input
          embeddings with the pad token as blank, as training with a CTC weight scores them
          (meaningful when `config.audio_ctc`);
        - with `config.audio_speaker_window`: `windows` (batch, tokens, embedding), the extractor's
          raw embedding of the window around each audio token, and `speakers`, each recording's
          registered speakers' raw embeddings (in prompt order).
        """
        tokens, token_lengths, lengths = self.encode_audio(input_features, input_features_mask)
        guides: dict[str, object] = {"log_probs": self.audio_ctc_log_probs(tokens), "lengths": token_lengths}
        if self.config.audio_speaker_window and speaker_features is not None:
            windows = self.audio_speaker_embeddings(
                speaker_features,
                feature_lengths(speaker_features, speaker_features_mask),
                lengths,
                tokens.shape[1],
            )
            counts = (input_ids == self.config.speaker_token_id).sum(1)
            size = self.config.speaker_config.embedding_size
            raw = windows.new_zeros(0, size)
            if int(counts.sum()):
                raw = self.get_speaker_embeddings(
                    int(counts.sum()),
                    enrollment_features,
                    enrollment_features_mask,
                    enrollment_speaker_index,
                    speaker_embeddings,
                )
            guides["windows"] = windows.float()
            guides["speakers"] = list(raw.float().split(counts.tolist()))
        return guides

    def speaker_label_hint(
        self,
        windows: torch.Tensor,
        speaker_embeddings: torch.Tensor,
        speakers_per_sample: torch.Tensor,
        label_embeddings: torch.Tensor,
    ) -> torch.Tensor:
        """(B, N, hidden): for each audio token, the unit-length label embeddings of its sample's
        registered speakers weighted by `softmax(config.speaker_label_hints * cosine(window,
        speaker))`; zero for samples without registered speakers. `get_audio_features` scales it
        to the norm of the token's audio content."""
        hints = windows.new_zeros(
            *windows.shape[:2], label_embeddings.shape[-1], dtype=label_embeddings.dtype
        )
        window_directions = F.normalize(windows.float(), dim=-1)
        counts = speakers_per_sample.tolist()
        speakers = F.normalize(speaker_embeddings.float(), dim=-1).split(counts)
        labels = F.normalize(label_embeddings, dim=-1).split(counts)
        for sample, (speaker_directions, label_directions) in enumerate(zip(speakers, labels, strict=True)):
            if len(speaker_directions):
                similarity = window_directions[sample] @ speaker_directions.T
                weights = torch.softmax(self.config.speaker_label_hints * similarity, dim=-1)
                hints[sample] = weights.to(label_directions.dtype) @ label_directions
        return hints

    def label_embeddings(self, speaker_label_ids: torch.Tensor) -> torch.Tensor:
        """Mean input embedding of each label's tokens (S, hidden); `speaker_label_ids` is padded with -100."""
        valid = speaker_label_ids >= 0
        embedded = self.get_input_embeddings()(speaker_label_ids.clamp_min(0)) * valid[..., None]
        return embedded.sum(1) / valid.sum(1, keepdim=True).clamp_min(1)

    def audio_speaker_embeddings(
        self,
        speaker_features: torch.Tensor,
        speaker_lengths: torch.Tensor,
        input_lengths: torch.Tensor,
        num_tokens: int,
    ) -> torch.Tensor:
        """Raw extractor embeddings (B, num_tokens, embedding_size) of a window around each audio token.

        Token i covers encoder frames [i * stride, (i + 1) * stride); its centre in speaker-feature
        frames follows from the ratio of the two frame counts (6 with LFR 7/6 over 10 ms fbank).
        """
        if not hasattr(self.speaker_encoder, "windowed_embeddings"):
            raise ValueError(
                "audio_speaker_window needs a speaker extractor with windowed_embeddings (CAM++)"
            )
        frames_per_input = speaker_lengths.float() / input_lengths.float().clamp_min(1)
        index = torch.arange(num_tokens, device=speaker_features.device, dtype=torch.float32)
        stride = self.config.audio_token_stride
        centers = (index[None, :] + 0.5) * stride * frames_per_input[:, None].to(index.device)
        window = round(self.config.audio_speaker_window * 100)  # 10 ms fbank frames
        trainable = any(p.requires_grad for p in self.speaker_encoder.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            return self.speaker_encoder.windowed_embeddings(
                speaker_features, speaker_lengths, centers, window
            )

    def get_speaker_embeddings(
        self,
        num_speakers: int,
        enrollment_features: torch.Tensor | None = None,
        enrollment_features_mask: torch.Tensor | None = None,
        enrollment_speaker_index: torch.Tensor | None = None,
        speaker_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One raw embedding per registered speaker: (num_speakers, embedding_size).

        Speakers given as enrollment pieces get the mean of their pieces' embeddings from the
        extractor; the others take their row of the precomputed `speaker_embeddings`.
        """
        size = self.config.speaker_config.embedding_size
        if speaker_embeddings is None:
            if enrollment_features is None:
                raise ValueError(
                    "the prompt registers speakers but neither enrollment audio nor embeddings were given"
                )
            embeddings = enrollment_features.new_zeros(num_speakers, size)
        else:
            embeddings = speaker_embeddings.clone()
        if embeddings.shape != (num_speakers, size):
            raise ValueError(
                f"speaker_embeddings has shape {tuple(embeddings.shape)}; the prompt needs ({num_speakers}, {size})"
            )
        if enrollment_features is None:
            return embeddings
        if (
            enrollment_speaker_index is None
            or enrollment_speaker_index.numel() != enrollment_features.shape[0]
        ):
            raise ValueError("enrollment_speaker_index must give the speaker of every enrollment piece")
        if enrollment_speaker_index.numel() and int(enrollment_speaker_index.max()) >= num_speakers:
            raise ValueError("enrollment_speaker_index refers to a speaker the prompt does not register")
        piece_embeddings = self.embed_enrollment_pieces(enrollment_features, enrollment_features_mask)
        index = enrollment_speaker_index.to(embeddings.device)
        sums = embeddings.new_zeros(num_speakers, size).index_add_(
            0, index, piece_embeddings.to(embeddings.dtype)
        )
        counts = torch.bincount(index, minlength=num_speakers)
        enrolled = counts > 0
        embeddings[enrolled] = sums[enrolled] / counts[enrolled, None].to(embeddings.dtype)
        return embeddings

    def embed_enrollment_pieces(
        self, enrollment_features: torch.Tensor, enrollment_features_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Extractor embedding of each padded enrollment piece, pieces of equal length batched together."""
        if enrollment_features_mask is None:
            lengths = torch.full((enrollment_features.shape[0],), enrollment_features.shape[1])
        else:
            lengths = enrollment_features_mask.sum(-1).long().cpu()
        trainable = any(p.requires_grad for p in self.speaker_encoder.parameters())
        out = enrollment_features.new_zeros(
            enrollment_features.shape[0], self.config.speaker_config.embedding_size
        )
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            for length in lengths.unique().tolist():
                rows = (lengths == length).nonzero().flatten().to(enrollment_features.device)
                out[rows] = self.speaker_encoder(enrollment_features[rows, :length]).to(out.dtype)
        return out

    def scatter_placeholders(
        self,
        inputs_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        token_id: int,
        values: torch.Tensor,
        what: str,
    ) -> torch.Tensor:
        mask = input_ids == token_id
        if int(mask.sum()) != values.shape[0]:
            raise ValueError(
                f"the prompt has {int(mask.sum())} {what} placeholder tokens but {values.shape[0]} {what} "
                "embeddings were computed; build inputs with SpeakerLMProcessor"
            )
        return inputs_embeds.masked_scatter(
            mask[..., None].expand_as(inputs_embeds), values.to(inputs_embeds.dtype)
        )

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        enrollment_features: torch.Tensor | None = None,
        enrollment_features_mask: torch.Tensor | None = None,
        enrollment_speaker_index: torch.Tensor | None = None,
        speaker_embeddings: torch.Tensor | None = None,
        speaker_features: torch.Tensor | None = None,
        speaker_features_mask: torch.Tensor | None = None,
        speaker_label_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text embeddings with projected audio and speaker embeddings at their placeholders."""
        config = self.config
        inputs_embeds = self.get_input_embeddings()(input_ids)
        speaker_mask = input_ids == config.speaker_token_id
        num_speakers = int(speaker_mask.sum())
        raw = None
        if num_speakers:
            raw = self.get_speaker_embeddings(
                num_speakers,
                enrollment_features,
                enrollment_features_mask,
                enrollment_speaker_index,
                speaker_embeddings,
            )
        if (input_ids == config.audio_token_id).any():
            if input_features is None:
                raise ValueError("the prompt has audio placeholders but no input_features were given")
            label_hints = None
            if config.speaker_label_hints and raw is not None:
                if speaker_label_ids is None or speaker_label_ids.shape[0] != num_speakers:
                    raise ValueError(
                        "this model marks audio tokens with the names of matching registered speakers "
                        "(speaker_label_hints > 0): give speaker_label_ids, one row per registered "
                        "speaker (SpeakerLMProcessor does)"
                    )
                label_hints = (raw, speaker_mask.sum(1), self.label_embeddings(speaker_label_ids))
            audio = self.get_audio_features(
                input_features, input_features_mask, speaker_features, speaker_features_mask, label_hints
            )
            inputs_embeds = self.scatter_placeholders(
                inputs_embeds, input_ids, config.audio_token_id, audio, "audio"
            )
        if num_speakers:
            projected = self.speaker_projector(raw.to(self.speaker_projector.weight.dtype))
            inputs_embeds = self.scatter_placeholders(
                inputs_embeds, input_ids, config.speaker_token_id, projected, "speaker"
            )
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        enrollment_features: torch.FloatTensor | None = None,
        enrollment_features_mask: torch.Tensor | None = None,
        enrollment_speaker_index: torch.LongTensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        speaker_features: torch.FloatTensor | None = None,
        speaker_features_mask: torch.Tensor | None = None,
        speaker_label_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> SpeakerLMOutput:
        r"""
        input_features: (batch, frames, 560) LFR+CMVN fbank from `SpeakerLMFeatureExtractor`.
        input_features_mask: (batch, frames), 1 on valid frames.
        enrollment_features / enrollment_features_mask: (pieces, frames, 80) mean-normalised fbank of
            the 2-10 s enrollment pieces; `enrollment_speaker_index` (pieces,) says which registered
            speaker (its placeholder's rank in the batch, row-major) each piece belongs to.
        speaker_embeddings: (speakers, embedding_size) precomputed raw embeddings, one per speaker
            placeholder; rows of speakers that have enrollment pieces are recomputed from them.
        speaker_features / speaker_features_mask: (batch, frames, 80) mean-normalised fbank of the
            whole input, read when `config.audio_speaker_window` > 0.
        speaker_label_ids: (speakers, length) token ids of each registered speaker's name (-100
            padded), read when `config.speaker_label_hints` > 0.
        labels: (batch, length) target ids, -100 on the prompt and padding.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(
                input_ids,
                input_features,
                input_features_mask,
                enrollment_features,
                enrollment_features_mask,
                enrollment_speaker_index,
                speaker_embeddings,
                speaker_features,
                speaker_features_mask,
                speaker_label_ids,
            )
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return SpeakerLMOutput(
            loss=outputs.loss,
            logits=outputs.logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(
            *args, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in PREFILL_ONLY_INPUTS:
                model_inputs.pop(name, None)
        return model_inputs

    def train(self, mode: bool = True):
        """Like `nn.Module.train`, but frozen parts stay in eval mode (no dropout, fixed BatchNorm statistics)."""
        super().train(mode)
        for name in MODEL_PARTS:
            part = getattr(self, name)
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
        return self

    @property
    def has_lora(self) -> bool:
        return any("lora_" in name for name, _ in self.language_model.named_parameters())

    def set_trainable_parts(self, parts: Iterable[str]) -> None:
        """Train exactly the named parts (see `TRAINABLE_PARTS`); freeze everything else.

        "language_model" trains the LLM's own weights, "lora" only its LoRA adapters.
        """
        parts = set(parts)
        unknown = parts - set(TRAINABLE_PARTS)
        if unknown:
            raise ValueError(f"unknown model parts {sorted(unknown)}; expected some of {TRAINABLE_PARTS}")
        if "lora" in parts and not self.has_lora:
            raise ValueError("'lora' is trainable only after add_lora()")
        for name, param in self.named_parameters():
            is_lora = "lora_" in name
            param.requires_grad = ("lora" in parts) if is_lora else name.split(".", 1)[0] in parts
        self.train(self.training)

    def trainable_parts(self) -> list[str]:
        """The parts with at least one trainable parameter."""
        found = set()
        for name, param in self.named_parameters():
            if param.requires_grad:
                found.add("lora" if "lora_" in name else name.split(".", 1)[0])
        return [part for part in TRAINABLE_PARTS if part in found]

    def add_lora(
        self,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.05,
        target_modules: Iterable[str] = (
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ),
    ) -> None:
        """Wrap the LLM with LoRA adapters (peft) on the given module names; `config.lora` records
        the settings until `merge_lora`, so a checkpoint saved meanwhile loads with its adapters."""
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as error:
            raise ImportError(
                "LoRA adapters need the peft package (pip install peft); a checkpoint whose config has "
                "`lora` settings holds unmerged adapters"
            ) from error

        if self.has_lora:
            raise ValueError("the LLM already has LoRA adapters; merge_lora() first")
        target_modules = list(target_modules)
        lora_config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        self.language_model = get_peft_model(self.language_model, lora_config)
        self.config.lora = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": target_modules}
        self._refresh_tied_weights()
        # New adapter modules start in training mode; follow the model's mode (LoRA dropout).
        self.train(self.training)

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the LLM's weights and drop the peft wrapper."""
        if not self.has_lora:
            raise ValueError("the LLM has no LoRA adapters to merge")
        self.language_model = self.language_model.merge_and_unload()
        self.config.lora = None
        self._refresh_tied_weights()

    def _refresh_tied_weights(self) -> None:
        """Tied-weight names (e.g. lm_head -> embed_tokens) under the LLM's current wrapping, which
        saving and `from_pretrained` go by."""
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)


AutoModel.register(SpeakerLMConfig, SpeakerLMForConditionalGeneration, exist_ok=True)

__all__ = [
    "SpeakerLMPreTrainedModel",
    "SpeakerLMForConditionalGeneration",
    "SpeakerLMAudioProjector",
    "TRAINABLE_PARTS",
]
