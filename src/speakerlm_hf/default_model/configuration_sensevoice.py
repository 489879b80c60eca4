"""Configuration of the SenseVoice SANM audio encoder."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

# funasr `encoder_conf` key -> our config field.
_FUNASR_KEY_MAP = {
    "output_size": "hidden_size",
    "attention_heads": "num_attention_heads",
    "linear_units": "intermediate_size",
    "num_blocks": "num_blocks",
    "tp_blocks": "tp_blocks",
    "dropout_rate": "dropout",
    "attention_dropout_rate": "attention_dropout",
    "kernel_size": "kernel_size",
    "sanm_shfit": "sanm_shift",
}

# SenseVoiceEncoderSmall hard-codes these choices and silently ignores other values, so a config
# asking for something else was written for a different encoder: refuse it rather than load it as this one.
_FUNASR_FIXED_SETTINGS = {
    "selfattention_layer_type": ("sanm",),
    "input_layer": ("pe", None),
    "pos_enc_class": ("SinusoidalPositionEncoder",),
    "positionwise_layer_type": ("linear",),
    "normalize_before": (True,),
    "concat_after": (False,),
}

# Keys SenseVoiceEncoderSmall accepts but that change nothing at inference (never passed on to a layer).
_FUNASR_IGNORED_KEYS = {
    "positional_dropout_rate",
    "stochastic_depth_rate",
    "positionwise_conv_kernel_size",
    "padding_idx",
}


class SenseVoiceEncoderConfig(PreTrainedConfig):
    r"""Configuration of [`SenseVoiceEncoderModel`], the SANM encoder of SenseVoice.

    The defaults give the encoder of the published SenseVoiceSmall (ModelScope `iic/SenseVoiceSmall`).

    Args:
        input_size: Width of the input features (80-bin fbank stacked by LFR m=7 gives 560).
        hidden_size: Width of every block's output (funasr's `output_size`).
        num_attention_heads: Attention heads per block.
        intermediate_size: Width of the feed-forward hidden layer (funasr's `linear_units`).
        num_blocks: Main blocks, the first of which maps `input_size` to `hidden_size`.
        tp_blocks: Blocks after the main blocks' final norm (funasr's `tp_encoders`).
        kernel_size: Kernel size of the FSMN memory block (a depthwise convolution over time).
        sanm_shift: Extra left context of the FSMN kernel (funasr's `sanm_shfit`); 0 centres it.
        normalize_before: Pre-norm blocks; SenseVoiceEncoderSmall always uses pre-norm, so only `True`.
        dropout: Dropout on block outputs and inside the feed-forward layer.
        attention_dropout: Dropout on attention probabilities and on the FSMN memory.
        layer_norm_eps: Epsilon of every layer norm.
        initializer_range: Standard deviation of the normal initialiser of linear and conv weights.
    """

    model_type = "sensevoice_encoder"

    input_size: int = 560
    hidden_size: int = 512
    num_attention_heads: int = 4
    intermediate_size: int = 2048
    num_blocks: int = 50
    tp_blocks: int = 20
    kernel_size: int = 11
    sanm_shift: int = 0
    normalize_before: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self._check_architecture()

    def _check_architecture(self) -> None:
        if self.input_size < 4 or self.input_size % 2:
            # The sinusoidal encoding splits input_size into sin and cos halves of at least 2 each.
            raise ValueError(f"input_size must be an even number >= 4, got {self.input_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_blocks < 1:
            raise ValueError(
                f"num_blocks must be >= 1 (the first block sets the width), got {self.num_blocks}"
            )
        if self.tp_blocks < 0:
            raise ValueError(f"tp_blocks must be >= 0, got {self.tp_blocks}")
        if self.kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {self.kernel_size}")
        max_shift = self.kernel_size - 1 - (self.kernel_size - 1) // 2
        if not 0 <= self.sanm_shift <= max_shift:
            raise ValueError(
                f"sanm_shift must be in [0, {max_shift}] for kernel_size {self.kernel_size}, got {self.sanm_shift}"
            )
        if not self.normalize_before:
            raise ValueError(
                "normalize_before=False is not supported: SenseVoice encoder blocks are pre-norm"
            )

    @classmethod
    def from_funasr_encoder_conf(
        cls, encoder_conf: dict[str, Any], input_size: int = 560, **kwargs: Any
    ) -> SenseVoiceEncoderConfig:
        """Build a config from funasr's `encoder_conf` for `SenseVoiceEncoderSmall` (as in its config.yaml).

        Extra keyword arguments are passed to the config unchanged.
        """
        unknown = sorted(
            set(encoder_conf) - set(_FUNASR_KEY_MAP) - set(_FUNASR_FIXED_SETTINGS) - _FUNASR_IGNORED_KEYS
        )
        if unknown:
            raise ValueError(f"encoder_conf has keys unknown to SenseVoiceEncoderSmall: {unknown}")
        for key, allowed in _FUNASR_FIXED_SETTINGS.items():
            if key in encoder_conf and encoder_conf[key] not in allowed:
                raise ValueError(
                    f"encoder_conf[{key!r}] = {encoder_conf[key]!r} is not supported; "
                    f"SenseVoiceEncoderSmall uses {allowed[0]!r}"
                )
        mapped = {
            ours: encoder_conf[theirs] for theirs, ours in _FUNASR_KEY_MAP.items() if theirs in encoder_conf
        }
        # funasr's own defaults where the yaml leaves a key out; ours differ (they follow the published model).
        funasr_defaults = {"hidden_size": 256, "num_blocks": 6, "tp_blocks": 0, "attention_dropout": 0.0}
        return cls(input_size=input_size, **{**funasr_defaults, **mapped, **kwargs})


__all__ = ["SenseVoiceEncoderConfig"]
