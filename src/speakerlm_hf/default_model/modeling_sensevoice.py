"""The SenseVoice SANM audio encoder as a transformers model, and a converter for funasr checkpoints.

Numerically equivalent to funasr's `SenseVoiceEncoderSmall`: scaled input + sinusoidal positions, one block
that changes the width (input_size -> hidden_size), `num_blocks - 1` further blocks, a norm, `tp_blocks`
blocks and a last norm. Each block is pre-norm self-attention whose output is summed with an FSMN memory
(a depthwise convolution over time of the values), then a ReLU feed-forward layer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_sensevoice import SenseVoiceEncoderConfig


@dataclass
class SenseVoiceEncoderOutput(ModelOutput):
    """Output of [`SenseVoiceEncoderModel`].

    Args:
        last_hidden_state: `(batch, frames, hidden_size)`; frames past a sample's length hold padding values.
        output_lengths: `(batch,)` valid frames per sample (the encoder keeps the frame rate).
    """

    last_hidden_state: torch.FloatTensor | None = None
    output_lengths: torch.LongTensor | None = None


class SenseVoiceLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype, as funasr does."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        output = F.layer_norm(hidden_states.float(), self.normalized_shape, weight, bias, self.eps)
        return output.to(hidden_states.dtype)


def sinusoidal_position_encoding(num_frames: int, depth: int, device: torch.device) -> torch.Tensor:
    """`(num_frames, depth)` sin/cos table for positions 1..num_frames, as SenseVoice's encoder uses.

    Built in float32 in the same operation order as funasr so that the large position * frequency products
    round identically; callers cast the result to their dtype.
    """
    half = depth // 2
    log_increment = torch.log(torch.tensor(10000.0, device=device)) / (half - 1)
    inv_timescales = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -log_increment)
    positions = torch.arange(1, num_frames + 1, device=device, dtype=torch.float32)
    scaled_time = positions[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=-1)


class SenseVoiceSANMAttention(nn.Module):
    """Multi-head self-attention plus an FSMN memory block over the values (SANM)."""

    def __init__(self, config: SenseVoiceEncoderConfig, in_features: int):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        self.qkv_proj = nn.Linear(in_features, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.fsmn = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            config.kernel_size,
            groups=config.hidden_size,
            bias=False,
        )
        left = (config.kernel_size - 1) // 2 + config.sanm_shift
        self.fsmn_padding = (left, config.kernel_size - 1 - left)
        self.memory_dropout = nn.Dropout(config.attention_dropout)

    def _fsmn_memory(self, values: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # Padded frames are zeroed before the convolution so they never leak into valid frames' memory.
        values = values * frame_mask
        memory = self.fsmn(F.pad(values.transpose(1, 2), self.fsmn_padding)).transpose(1, 2)
        return self.memory_dropout(memory + values) * frame_mask

    def forward(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """`hidden_states` `(B, T, in_features)`, `frame_mask` `(B, T, 1)` with 1 on valid frames."""
        batch, frames, _ = hidden_states.shape
        query, key, value = self.qkv_proj(hidden_states).chunk(3, dim=-1)
        memory = self._fsmn_memory(value, frame_mask)

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, frames, self.num_heads, self.head_dim).transpose(1, 2)

        key_mask = frame_mask.squeeze(-1).bool()[:, None, None, :]
        context = F.scaled_dot_product_attention(
            split_heads(query),
            split_heads(key),
            split_heads(value),
            attn_mask=key_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(batch, frames, -1)
        return self.out_proj(context) + memory


class SenseVoiceFeedForward(nn.Module):
    def __init__(self, config: SenseVoiceEncoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(hidden_states))))


class SenseVoiceEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm SANM block; a block that changes the width has no residual around its attention."""

    def __init__(self, config: SenseVoiceEncoderConfig, in_features: int):
        super().__init__()
        self.has_attention_residual = in_features == config.hidden_size
        self.self_attn_layer_norm = SenseVoiceLayerNorm(in_features, eps=config.layer_norm_eps)
        self.self_attn = SenseVoiceSANMAttention(config, in_features)
        self.final_layer_norm = SenseVoiceLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SenseVoiceFeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        attn_output = self.dropout(self.self_attn(self.self_attn_layer_norm(hidden_states), frame_mask))
        hidden_states = hidden_states + attn_output if self.has_attention_residual else attn_output
        return hidden_states + self.dropout(self.mlp(self.final_layer_norm(hidden_states)))


class SenseVoiceEncoderPreTrainedModel(PreTrainedModel):
    config_class = SenseVoiceEncoderConfig
    config: SenseVoiceEncoderConfig
    base_model_prefix = "sensevoice_encoder"
    main_input_name = "input_features"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SenseVoiceEncoderLayer"]
    _supports_sdpa = True
    # Linear, Conv1d (FSMN) and SenseVoiceLayerNorm are all covered by PreTrainedModel._init_weights.


class SenseVoiceEncoderModel(SenseVoiceEncoderPreTrainedModel):
    """SenseVoice SANM encoder: `(B, T, input_size)` LFR fbank features -> `(B, T, hidden_size)`."""

    def __init__(self, config: SenseVoiceEncoderConfig):
        super().__init__(config)
        widths = [config.input_size] + [config.hidden_size] * (config.num_blocks - 1)
        self.layers = nn.ModuleList([SenseVoiceEncoderLayer(config, width) for width in widths])
        self.layer_norm = SenseVoiceLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.tp_layers = nn.ModuleList(
            [SenseVoiceEncoderLayer(config, config.hidden_size) for _ in range(config.tp_blocks)]
        )
        self.tp_layer_norm = SenseVoiceLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        input_features: torch.FloatTensor,
        feature_lengths: torch.LongTensor | None = None,
    ) -> SenseVoiceEncoderOutput:
        """Encode `input_features` `(B, T, input_size)`; `feature_lengths` `(B,)` gives each sample's valid
        frames (all `T` when omitted). Frames past a length do not affect the valid frames' outputs."""
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.input_size:
            raise ValueError(
                f"input_features must have shape (batch, frames, {self.config.input_size}), "
                f"got {tuple(input_features.shape)}"
            )
        batch, frames, _ = input_features.shape
        if feature_lengths is None:
            feature_lengths = torch.full((batch,), frames, dtype=torch.long, device=input_features.device)
        else:
            feature_lengths = feature_lengths.to(device=input_features.device, dtype=torch.long)
            if feature_lengths.shape != (batch,):
                raise ValueError(
                    f"feature_lengths must have shape ({batch},), got {tuple(feature_lengths.shape)}"
                )
            if bool(((feature_lengths < 1) | (feature_lengths > frames)).any()):
                raise ValueError(
                    f"feature_lengths must lie in [1, {frames}] (the frames of input_features), "
                    f"got {feature_lengths.tolist()}"
                )
        frame_mask = torch.arange(frames, device=input_features.device)[None, :] < feature_lengths[:, None]
        frame_mask = frame_mask.to(input_features.dtype)[:, :, None]

        # funasr scales by sqrt(hidden_size), not sqrt(input_size): keep it, the checkpoint was trained so.
        positions = sinusoidal_position_encoding(frames, self.config.input_size, input_features.device)
        hidden_states = input_features * self.config.hidden_size**0.5 + positions.to(input_features.dtype)

        for layer in self.layers:
            hidden_states = layer(hidden_states, frame_mask)
        hidden_states = self.layer_norm(hidden_states)
        for layer in self.tp_layers:
            hidden_states = layer(hidden_states, frame_mask)
        hidden_states = self.tp_layer_norm(hidden_states)
        return SenseVoiceEncoderOutput(last_hidden_state=hidden_states, output_lengths=feature_lengths)


# funasr module path -> ours, applied inside each block.
_FUNASR_LAYER_PARAM_MAP = {
    "norm1.weight": "self_attn_layer_norm.weight",
    "norm1.bias": "self_attn_layer_norm.bias",
    "self_attn.linear_q_k_v.weight": "self_attn.qkv_proj.weight",
    "self_attn.linear_q_k_v.bias": "self_attn.qkv_proj.bias",
    "self_attn.linear_out.weight": "self_attn.out_proj.weight",
    "self_attn.linear_out.bias": "self_attn.out_proj.bias",
    "self_attn.fsmn_block.weight": "self_attn.fsmn.weight",
    "norm2.weight": "final_layer_norm.weight",
    "norm2.bias": "final_layer_norm.bias",
    "feed_forward.w_1.weight": "mlp.fc1.weight",
    "feed_forward.w_1.bias": "mlp.fc1.bias",
    "feed_forward.w_2.weight": "mlp.fc2.weight",
    "feed_forward.w_2.bias": "mlp.fc2.bias",
}
_FUNASR_TOP_PARAM_MAP = {
    "after_norm.weight": "layer_norm.weight",
    "after_norm.bias": "layer_norm.bias",
    "tp_norm.weight": "tp_layer_norm.weight",
    "tp_norm.bias": "tp_layer_norm.bias",
}
_FUNASR_LAYER_KEY = re.compile(r"(encoders0|encoders|tp_encoders)\.(\d+)\.(.+)")


def _convert_funasr_key(key: str) -> tuple[str, str, int] | None:
    """Our name for one funasr encoder key, with its block group and index; None if the key is unknown."""
    if key in _FUNASR_TOP_PARAM_MAP:
        return _FUNASR_TOP_PARAM_MAP[key], "top", -1
    match = _FUNASR_LAYER_KEY.fullmatch(key)
    if match is None or match.group(3) not in _FUNASR_LAYER_PARAM_MAP:
        return None
    group, index, param = match.group(1), int(match.group(2)), _FUNASR_LAYER_PARAM_MAP[match.group(3)]
    if group == "encoders0":
        # encoders0 holds exactly one block, the width-changing first one.
        return (f"layers.0.{param}", group, index) if index == 0 else None
    if group == "encoders":
        return f"layers.{index + 1}.{param}", group, index
    return f"tp_layers.{index}.{param}", group, index


def convert_sensevoice_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a funasr SenseVoice state dict to [`SenseVoiceEncoderModel`] keys.

    Accepts the full SenseVoiceSmall `model.pt` state dict (only `encoder.*` is kept, `ctc.*`, `embed.*` and
    the rest are dropped) or a bare `SenseVoiceEncoderSmall` state dict. Raises `ValueError` listing unknown
    keys, or keys missing from a complete encoder (every block of 0..max index, both norms).
    """
    if any(key.startswith("encoder.") for key in state_dict):
        state_dict = {
            key[len("encoder.") :]: value for key, value in state_dict.items() if key.startswith("encoder.")
        }

    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    block_counts = {"encoders0": 0, "encoders": 0, "tp_encoders": 0}
    for key, value in state_dict.items():
        target = _convert_funasr_key(key)
        if target is None:
            unknown.append(key)
            continue
        name, group, index = target
        if group in block_counts:
            block_counts[group] = max(block_counts[group], index + 1)
        converted[name] = value
    if unknown:
        raise ValueError(f"state dict has keys unknown to the SenseVoice encoder: {sorted(unknown)}")

    expected = set(_FUNASR_TOP_PARAM_MAP.values())
    num_layers = 1 + block_counts["encoders"]
    for prefix, count in (("layers", num_layers), ("tp_layers", block_counts["tp_encoders"])):
        expected |= {
            f"{prefix}.{i}.{param}" for i in range(count) for param in _FUNASR_LAYER_PARAM_MAP.values()
        }
    missing = sorted(expected - set(converted))
    if missing:
        raise ValueError(f"SenseVoice encoder state dict is missing keys (our names): {missing}")
    return converted


def load_sensevoice_encoder(model_dir: str | os.PathLike) -> SenseVoiceEncoderModel:
    """Load the encoder of a SenseVoice checkpoint in the published funasr layout (`config.yaml` + `model.pt`)."""
    try:
        import yaml  # a transformers dependency, imported here so the module itself needs only torch
    except ImportError as error:
        raise ImportError(
            "load_sensevoice_encoder needs PyYAML to read config.yaml: pip install pyyaml"
        ) from error

    config_path = os.path.join(model_dir, "config.yaml")
    weights_path = os.path.join(model_dir, "model.pt")
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: expected a funasr SenseVoice folder with config.yaml and model.pt"
            )

    with open(config_path, encoding="utf-8") as file:
        funasr_config = yaml.safe_load(file) or {}
    if funasr_config.get("encoder") != "SenseVoiceEncoderSmall":
        raise ValueError(
            f"{config_path}: encoder is {funasr_config.get('encoder')!r}, expected 'SenseVoiceEncoderSmall'"
        )
    frontend_conf = funasr_config.get("frontend_conf") or {}
    # input_size is the LFR-stacked fbank width when the yaml does not state it.
    input_size = funasr_config.get("input_size") or frontend_conf.get("n_mels", 80) * frontend_conf.get(
        "lfr_m", 7
    )
    config = SenseVoiceEncoderConfig.from_funasr_encoder_conf(
        funasr_config.get("encoder_conf") or {}, input_size
    )

    state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    # funasr training checkpoints wrap the weights; the published model.pt is the bare state dict.
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{weights_path} does not hold a state dict (got {type(state_dict).__name__})")
    converted = convert_sensevoice_state_dict(state_dict)

    model = SenseVoiceEncoderModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} does not match {config_path} (num_blocks={config.num_blocks}, "
            f"tp_blocks={config.tp_blocks}): missing {missing}, unexpected {unexpected}"
        )
    wrong_shapes = [
        f"{key}: {tuple(value.shape)} vs {tuple(expected[key].shape)}"
        for key, value in converted.items()
        if value.shape != expected[key].shape
    ]
    if wrong_shapes:
        raise ValueError(f"{weights_path} has shapes that do not match {config_path}: {wrong_shapes}")
    model.load_state_dict(converted, strict=True)
    return model.eval()


__all__ = [
    "SenseVoiceEncoderModel",
    "SenseVoiceEncoderOutput",
    "SenseVoiceEncoderPreTrainedModel",
    "convert_sensevoice_state_dict",
    "load_sensevoice_encoder",
]
