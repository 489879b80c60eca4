"""CAM++ speaker-embedding extractor (3D-Speaker architecture) as a transformers model."""

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_speaker_encoders import CAMPPlusConfig
from .modeling_eres2netv2 import (
    RenameRule,
    build_from_plain_checkpoint,
    check_fbank_input,
    expected_state_dict_keys,
    rename_checkpoint_keys,
)


def _norm_act(config_str: str, channels: int) -> nn.Sequential:
    """The "-"-joined normalisation/activation sequence of `config_str`, named as in 3D-Speaker's checkpoints."""
    layers = OrderedDict()
    for name in config_str.split("-"):
        if name == "batchnorm":
            layers["batchnorm"] = nn.BatchNorm1d(channels)
        elif name == "batchnorm_":
            layers["batchnorm"] = nn.BatchNorm1d(channels, affine=False)
        elif name == "relu":
            layers["relu"] = nn.ReLU()
        elif name == "prelu":
            layers["prelu"] = nn.PReLU(channels)
        else:
            raise ValueError(f"config_str {config_str!r} has an unknown part {name!r}")
    return nn.Sequential(layers)


class CAMPPlusResBlock(nn.Module):
    """2-D residual block of the front end; it strides over frequency only, keeping every frame."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, channels, kernel_size=3, stride=(stride, 1), padding=1, bias=False
        )
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)
        if stride != 1 or in_channels != channels:
            self.shortcut_conv = nn.Conv2d(
                in_channels, channels, kernel_size=1, stride=(stride, 1), bias=False
            )
            self.shortcut_norm = nn.BatchNorm2d(channels)
        else:
            self.shortcut_conv = None
            self.shortcut_norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        residual = x if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(x))
        return F.relu(out + residual)


class CAMPPlusFrontEnd(nn.Module):
    """Front-end convolution module: (B, F, T) fbank -> (B, channels * F // 8, T) frame features."""

    def __init__(self, config: CAMPPlusConfig):
        super().__init__()
        c = config.head_channels
        self.conv_in = nn.Conv2d(1, c, kernel_size=3, padding=1, bias=False)
        self.norm_in = nn.BatchNorm2d(c)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                CAMPPlusResBlock(c, c, 2 if index == 0 else 1)
                for index in range(config.head_blocks_per_stage)
            )
            for _ in range(2)
        )
        self.conv_out = nn.Conv2d(c, c, kernel_size=3, stride=(2, 1), padding=1, bias=False)
        self.norm_out = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm_in(self.conv_in(x.unsqueeze(1))))
        for stage in self.stages:
            for block in stage:
                x = block(x)
        x = F.relu(self.norm_out(self.conv_out(x)))
        return x.flatten(start_dim=1, end_dim=2)


class CAMPPlusDenseLayer(nn.Module):
    """Densely connected TDNN layer whose output is gated by a context-aware mask (CAM)."""

    def __init__(self, config: CAMPPlusConfig, in_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        bottleneck = config.bn_size * config.growth_rate
        self.segment_length = config.context_segment_length
        self.norm_act_in = _norm_act(config.config_str, in_channels)
        self.bottleneck = nn.Conv1d(in_channels, bottleneck, kernel_size=1, bias=False)
        self.norm_act_mid = _norm_act(config.config_str, bottleneck)
        self.local_conv = nn.Conv1d(
            bottleneck,
            config.growth_rate,
            kernel_size,
            padding=(kernel_size - 1) // 2 * dilation,
            dilation=dilation,
            bias=False,
        )
        self.context_reduce = nn.Conv1d(bottleneck, bottleneck // config.context_reduction, kernel_size=1)
        self.context_expand = nn.Conv1d(
            bottleneck // config.context_reduction, config.growth_rate, kernel_size=1
        )

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        # utterance mean plus the mean of the fixed-length segment each frame falls in (last segment may be short)
        segments = F.avg_pool1d(x, self.segment_length, self.segment_length, ceil_mode=True)
        per_frame = segments.repeat_interleave(self.segment_length, dim=-1)[..., : x.shape[-1]]
        return x.mean(dim=-1, keepdim=True) + per_frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_act_mid(self.bottleneck(self.norm_act_in(x)))
        mask = torch.sigmoid(self.context_expand(F.relu(self.context_reduce(self._context(x)))))
        return self.local_conv(x) * mask


class CAMPPlusTransition(nn.Module):
    """Norm/activation then a 1x1 convolution that halves the channels between dense blocks."""

    def __init__(self, config: CAMPPlusConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.norm_act = _norm_act(config.config_str, in_channels)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm_act(x))


class CAMPPlusTDNN(nn.Module):
    """Strided TDNN layer between the front end and the dense blocks (halves the frame rate)."""

    def __init__(self, config: CAMPPlusConfig, in_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels, config.init_channels, kernel_size=5, stride=2, padding=2, bias=False
        )
        self.norm_act = _norm_act(config.config_str, config.init_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_act(self.conv(x))


class CAMPPlusPreTrainedModel(PreTrainedModel):
    config_class = CAMPPlusConfig
    config: CAMPPlusConfig
    base_model_prefix = "campplus"
    main_input_name = "input_features"
    input_modalities = ("audio",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # the reference initialises its 1-D convolutions and linear layers with Kaiming-normal weights
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)


class CAMPPlusModel(CAMPPlusPreTrainedModel):
    """CAM++: (B, T, feat_dim) mean-normalised fbank -> (B, embedding_size) speaker embedding."""

    def __init__(self, config: CAMPPlusConfig):
        super().__init__(config)
        self.frontend = CAMPPlusFrontEnd(config)
        self.tdnn = CAMPPlusTDNN(config, config.head_channels * (config.feat_dim // 8))
        channels = config.init_channels
        self.dense_blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for num_layers, kernel_size, dilation in zip(
            config.block_layers, config.block_kernel_sizes, config.block_dilations, strict=True
        ):
            self.dense_blocks.append(
                nn.ModuleList(
                    CAMPPlusDenseLayer(config, channels + i * config.growth_rate, kernel_size, dilation)
                    for i in range(num_layers)
                )
            )
            channels += num_layers * config.growth_rate
            self.transitions.append(CAMPPlusTransition(config, channels, channels // 2))
            channels //= 2
        self.out_norm_act = _norm_act(config.config_str, channels)
        self.embedding = nn.Linear(2 * channels, config.embedding_size, bias=False)
        self.embedding_norm = nn.BatchNorm1d(config.embedding_size, affine=False)
        self.post_init()

    @property
    def embedding_size(self) -> int:
        return self.config.embedding_size

    def forward(self, input_features: torch.FloatTensor) -> torch.FloatTensor:
        """Speaker embeddings (B, embedding_size) of mean-normalised fbank features (B, T, feat_dim)."""
        x = self.frame_features(input_features)
        # statistics pooling: mean and unbiased std over frames
        return self.embed_statistics(x.mean(dim=-1), x.std(dim=-1))

    def frame_features(self, input_features: torch.FloatTensor) -> torch.FloatTensor:
        """Frame-level features before statistics pooling: (B, channels, frames / 2)."""
        check_fbank_input(input_features, self.config.feat_dim)
        x = input_features.to(self.frontend.conv_in.weight.dtype).transpose(1, 2)
        x = self.tdnn(self.frontend(x))
        for layers, transition in zip(self.dense_blocks, self.transitions, strict=True):
            for layer in layers:
                x = torch.cat((x, layer(x)), dim=1)
            x = transition(x)
        return self.out_norm_act(x)

    def embed_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> torch.FloatTensor:
        """Embeddings (N, embedding_size) of pooled statistics, each (N, channels)."""
        stats = torch.cat((mean, std), dim=1).to(self.embedding.weight.dtype)
        return self.embedding_norm(self.embedding(stats))

    def windowed_embeddings(
        self, input_features: torch.FloatTensor, lengths: torch.Tensor, centers: torch.Tensor, window: int
    ) -> torch.FloatTensor:
        """Embeddings of windows of `window` input frames around `centers` (B, N) input frames.

        The backbone runs once over each input; each window pools its frames' statistics, so a window
        that covers a whole input gives that input's `forward` embedding. Windows are shifted to lie
        inside the valid frames (`lengths`). Returns (B, N, embedding_size).
        """
        x = self.frame_features(input_features).float()
        batch, channels, frames = x.shape
        ratio = frames / input_features.shape[1]
        valid = torch.clamp(torch.ceil(lengths.to(x.device).float() * ratio).long(), 1, frames)[:, None]
        width = torch.clamp(torch.full_like(valid, max(2, round(window * ratio))), max=valid)
        start = torch.round(centers.to(x.device).float() * ratio).long() - width // 2
        start = torch.minimum(start.clamp_min(0), valid - width)
        end = start + width
        zeros = x.new_zeros(batch, channels, 1)
        sums = torch.cat((zeros, x.cumsum(-1)), -1)
        squares = torch.cat((zeros, (x * x).cumsum(-1)), -1)

        def window_sum(cumulative: torch.Tensor) -> torch.Tensor:
            gather = lambda index: cumulative.gather(-1, index[:, None, :].expand(-1, channels, -1))  # noqa: E731
            return (gather(end) - gather(start)).transpose(1, 2)  # (B, N, C)

        count = width[..., None].float()
        mean = window_sum(sums) / count
        variance = (window_sum(squares) - count * mean * mean) / (count - 1).clamp_min(1)
        std = variance.clamp_min(0).sqrt()
        num = centers.shape[1]
        out = self.embed_statistics(mean.reshape(batch * num, channels), std.reshape(batch * num, channels))
        return out.reshape(batch, num, -1)


_RES_BLOCK_PARTS = {
    "conv1": "conv1",
    "bn1": "norm1",
    "conv2": "conv2",
    "bn2": "norm2",
    "shortcut.0": "shortcut_conv",
    "shortcut.1": "shortcut_norm",
}
_DENSE_LAYER_PARTS = {
    "nonlinear1": "norm_act_in",
    "linear1": "bottleneck",
    "nonlinear2": "norm_act_mid",
    "cam_layer.linear_local": "local_conv",
    "cam_layer.linear1": "context_reduce",
    "cam_layer.linear2": "context_expand",
}
_NORM_ACT_TAIL = r"(?:batchnorm|prelu)\..+"

# 3D-Speaker / funasr module names -> ours
CAMPPLUS_RENAME_RULES: list[RenameRule] = [
    (r"head\.conv1\.(.+)", r"frontend.conv_in.\1"),
    (r"head\.bn1\.(.+)", r"frontend.norm_in.\1"),
    (r"head\.conv2\.(.+)", r"frontend.conv_out.\1"),
    (r"head\.bn2\.(.+)", r"frontend.norm_out.\1"),
    (
        r"head\.layer(?P<stage>[12])\.(?P<block>\d+)\.(?P<part>conv[12]|bn[12]|shortcut\.[01])\.(?P<tail>.+)",
        lambda m: (
            f"frontend.stages.{int(m['stage']) - 1}.{m['block']}.{_RES_BLOCK_PARTS[m['part']]}.{m['tail']}"
        ),
    ),
    (r"xvector\.tdnn\.linear\.(.+)", r"tdnn.conv.\1"),
    (rf"xvector\.tdnn\.nonlinear\.({_NORM_ACT_TAIL})", r"tdnn.norm_act.\1"),
    (
        r"xvector\.block(?P<block>\d+)\.tdnnd(?P<layer>\d+)\."
        r"(?P<part>nonlinear[12]|linear1|cam_layer\.linear_local|cam_layer\.linear[12])\.(?P<tail>.+)",
        lambda m: (
            f"dense_blocks.{int(m['block']) - 1}.{int(m['layer']) - 1}."
            f"{_DENSE_LAYER_PARTS[m['part']]}.{m['tail']}"
        ),
    ),
    (
        rf"xvector\.transit(?P<block>\d+)\.nonlinear\.(?P<tail>{_NORM_ACT_TAIL})",
        lambda m: f"transitions.{int(m['block']) - 1}.norm_act.{m['tail']}",
    ),
    (
        r"xvector\.transit(?P<block>\d+)\.linear\.(?P<tail>.+)",
        lambda m: f"transitions.{int(m['block']) - 1}.conv.{m['tail']}",
    ),
    (rf"xvector\.out_nonlinear\.({_NORM_ACT_TAIL})", r"out_norm_act.\1"),
    (r"xvector\.dense\.linear\.(.+)", r"embedding.\1"),
    (r"xvector\.dense\.nonlinear\.batchnorm\.(.+)", r"embedding_norm.\1"),
]


def convert_campplus_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: CAMPPlusConfig | None = None
) -> dict[str, torch.Tensor]:
    """Convert a 3D-Speaker / funasr CAM++ state dict (optionally `module.`/`model.`-prefixed) to ours.

    BatchNorm running statistics and `num_batches_tracked` are kept; the final 1x1 convolution becomes a
    linear layer. Raises ValueError listing unknown and missing keys against `config` (the published
    default when None).
    """
    config = config if config is not None else CAMPPlusConfig()
    expected = expected_state_dict_keys(CAMPPlusModel, config)
    converted = rename_checkpoint_keys(state_dict, CAMPPLUS_RENAME_RULES, expected, "CAM++")
    weight = converted["embedding.weight"]
    if weight.dim() == 3:
        # a 1x1 Conv1d applied to pooled stats is a bias-free linear layer
        converted["embedding.weight"] = weight.squeeze(-1)
    return converted


def load_campplus(path: str | os.PathLike, config: CAMPPlusConfig | None = None) -> CAMPPlusModel:
    """Build an eval-mode `CAMPPlusModel` from a published plain state dict such as `campplus_cn_common.bin`."""
    config = config if config is not None else CAMPPlusConfig()
    return build_from_plain_checkpoint(CAMPPlusModel, convert_campplus_state_dict, path, config)


__all__ = ["CAMPPlusPreTrainedModel", "CAMPPlusModel", "convert_campplus_state_dict", "load_campplus"]
