"""ERes2NetV2 speaker-embedding extractor (3D-Speaker architecture) as a transformers model.

Also holds the checkpoint helpers shared with CAM++: reading a published plain state dict safely
and renaming its keys to this package's module names.
"""

import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_speaker_encoders import ERes2NetV2Config

# Checkpoints saved from a DataParallel wrapper or from funasr's `ERes2NetV2SV` carry one of these.
_WRAPPER_PREFIXES = ("module.", "model.")

RenameRule = tuple[str, str | Callable[[re.Match], str]]


def _strip_wrapper_prefix(keys: Sequence[str]) -> str:
    """Return the wrapper prefix shared by every key ("" if none), peeling nested wrappers."""
    prefix = ""
    while True:
        for candidate in _WRAPPER_PREFIXES:
            if keys and all(key.startswith(prefix + candidate) for key in keys):
                prefix += candidate
                break
        else:
            return prefix


def _shortened(keys: list[str], limit: int = 20) -> str:
    """`keys` as a list literal, cut after `limit` entries: a checkpoint for another size can miss hundreds."""
    if len(keys) <= limit:
        return str(keys)
    return f"{keys[:limit]} and {len(keys) - limit} more"


def rename_checkpoint_keys(
    state_dict: Mapping[str, torch.Tensor],
    rules: Sequence[RenameRule],
    expected_keys: set[str],
    model_name: str,
) -> dict[str, torch.Tensor]:
    """Rename a published state dict's keys with `rules` (first full match wins) and check the result.

    Raises ValueError listing non-tensor values, keys no rule knows, and expected keys left missing.
    """
    non_tensors = sorted(key for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if non_tensors:
        raise ValueError(f"{model_name} state dict has non-tensor values under {non_tensors}")
    prefix = _strip_wrapper_prefix(list(state_dict))
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        name = key[len(prefix) :]
        for pattern, replacement in compiled:
            match = pattern.fullmatch(name)
            if match:
                new_name = replacement(match) if callable(replacement) else match.expand(replacement)
                converted[new_name] = value
                break
        else:
            unknown.append(key)
    unexpected = sorted(set(converted) - expected_keys)
    missing = sorted(expected_keys - set(converted))
    if unknown or unexpected or missing:
        problems = []
        if unknown:
            problems.append(f"unknown keys {_shortened(unknown)}")
        if unexpected:
            problems.append(f"keys this configuration does not have {_shortened(unexpected)}")
        if missing:
            problems.append(f"missing keys {_shortened(missing)}")
        raise ValueError(
            f"{model_name} checkpoint does not match the configuration ({'; '.join(problems)}); "
            "pass the config the checkpoint was trained with"
        )
    return converted


def read_plain_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `torch.save`d state dict with `weights_only=True`, so a pickle cannot run code."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} is not a plain state dict of tensors (refused by weights_only): {err}"
        ) from err
    # Some training recipes wrap the weights as {"state_dict": ...}.
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}, expected a state dict (a mapping of tensors)"
        )
    return dict(loaded)


def expected_state_dict_keys(model_class: type[PreTrainedModel], config) -> set[str]:
    """Keys of `model_class(config)`'s state dict, built on the meta device so no memory is spent."""
    with torch.device("meta"):
        return set(model_class(config).state_dict())


def check_fbank_input(input_features: torch.Tensor, feat_dim: int) -> None:
    """Raise ValueError unless `input_features` is a (batch, frames, feat_dim) tensor."""
    if input_features.dim() != 3 or input_features.shape[-1] != feat_dim:
        raise ValueError(
            f"input_features must have shape (batch, frames, {feat_dim}), got {tuple(input_features.shape)}"
        )


def build_from_plain_checkpoint(
    model_class: type[PreTrainedModel],
    convert: Callable[[Mapping[str, torch.Tensor], object], dict[str, torch.Tensor]],
    path: str | os.PathLike,
    config,
) -> PreTrainedModel:
    """Read `path` safely, convert it with `convert`, and load it strictly into an eval-mode `model_class`."""
    state_dict = convert(read_plain_state_dict(path), config)
    model = model_class(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _clipped_relu(x: torch.Tensor) -> torch.Tensor:
    # 3D-Speaker's residual blocks clip activations at 20 (Hardtanh(0, 20)), unlike the stem's plain ReLU.
    return F.hardtanh(x, 0.0, 20.0)


class ERes2NetV2AttentionalFusion(nn.Module):
    """Attentional feature fusion: a learned per-element gate between two equally shaped feature maps."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = channels // reduction
        self.reduce_conv = nn.Conv2d(2 * channels, hidden, kernel_size=1)
        self.reduce_norm = nn.BatchNorm2d(hidden)
        self.expand_conv = nn.Conv2d(hidden, channels, kernel_size=1)
        self.expand_norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gate = F.silu(self.reduce_norm(self.reduce_conv(torch.cat((x, y), dim=1))))
        # gate in (0, 2): x weighted by gate, y by its complement
        gate = 1.0 + torch.tanh(self.expand_norm(self.expand_conv(gate)))
        return x * gate + y * (2.0 - gate)


class ERes2NetV2Block(nn.Module):
    """Res2Net bottleneck block; branches are joined by addition, or by attentional fusion when `fuse`."""

    def __init__(self, config: ERes2NetV2Config, in_channels: int, planes: int, stride: int, fuse: bool):
        super().__init__()
        self.width = planes * config.base_width // 64
        self.branches = config.scale
        out_channels = planes * config.expansion
        self.conv_in = nn.Conv2d(
            in_channels, self.width * self.branches, kernel_size=1, stride=stride, bias=False
        )
        self.norm_in = nn.BatchNorm2d(self.width * self.branches)
        self.branch_convs = nn.ModuleList(
            nn.Conv2d(self.width, self.width, kernel_size=3, padding=1, bias=False)
            for _ in range(self.branches)
        )
        self.branch_norms = nn.ModuleList(nn.BatchNorm2d(self.width) for _ in range(self.branches))
        self.branch_fusions = (
            nn.ModuleList(ERes2NetV2AttentionalFusion(self.width) for _ in range(self.branches - 1))
            if fuse
            else None
        )
        self.conv_out = nn.Conv2d(self.width * self.branches, out_channels, kernel_size=1, bias=False)
        self.norm_out = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut_conv = nn.Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False
            )
            self.shortcut_norm = nn.BatchNorm2d(out_channels)
        else:
            self.shortcut_conv = None
            self.shortcut_norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(_clipped_relu(self.norm_in(self.conv_in(x))), self.width, dim=1)
        outputs = []
        for i in range(self.branches):
            if i == 0:
                branch = pieces[0]
            elif self.branch_fusions is None:
                branch = branch + pieces[i]
            else:
                branch = self.branch_fusions[i - 1](branch, pieces[i])
            branch = _clipped_relu(self.branch_norms[i](self.branch_convs[i](branch)))
            outputs.append(branch)
        out = self.norm_out(self.conv_out(torch.cat(outputs, dim=1)))
        residual = x if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(x))
        return _clipped_relu(out + residual)


def _temporal_pooling(x: torch.Tensor, pooling_func: str) -> torch.Tensor:
    """Pool (B, C, F, T) over time into (B, n_stats * C * F): mean, std (unbiased, +1e-8 inside the root) or both."""
    stats = []
    if pooling_func in ("TSTP", "TAP"):
        stats.append(x.mean(dim=-1).flatten(start_dim=1))
    if pooling_func in ("TSTP", "TSDP"):
        stats.append(torch.sqrt(x.var(dim=-1) + 1e-8).flatten(start_dim=1))
    return torch.cat(stats, dim=1)


class ERes2NetV2PreTrainedModel(PreTrainedModel):
    config_class = ERes2NetV2Config
    config: ERes2NetV2Config
    base_model_prefix = "eres2netv2"
    main_input_name = "input_features"
    input_modalities = ("audio",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # ResNet-style init; the trained model is always loaded from a checkpoint, this only shapes fresh weights
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ERes2NetV2Model(ERes2NetV2PreTrainedModel):
    """ERes2NetV2: (B, T, feat_dim) mean-normalised fbank -> (B, embedding_size) speaker embedding."""

    def __init__(self, config: ERes2NetV2Config):
        super().__init__(config)
        m = config.m_channels
        self.stem_conv = nn.Conv2d(1, m, kernel_size=3, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(m)
        self.stages = nn.ModuleList()
        in_channels = m
        for index, (multiplier, stride, count) in enumerate(
            zip((1, 2, 4, 8), (1, 2, 2, 2), config.num_blocks, strict=True)
        ):
            planes = m * multiplier
            blocks = []
            for block_index in range(count):
                blocks.append(
                    ERes2NetV2Block(
                        config, in_channels, planes, stride if block_index == 0 else 1, fuse=index >= 2
                    )
                )
                in_channels = planes * config.expansion
            self.stages.append(nn.ModuleList(blocks))
        # the third stage's output, downsampled, is fused into the fourth's
        self.stage3_downsample = nn.Conv2d(
            4 * m * config.expansion, 8 * m * config.expansion, kernel_size=3, stride=2, padding=1, bias=False
        )
        self.stage_fusion = ERes2NetV2AttentionalFusion(8 * m * config.expansion)
        n_stats = 2 if config.pooling_func == "TSTP" else 1
        # frequency is halved three times (stages 2-4), so the 8 * m * expansion channels keep feat_dim // 8 bins
        pooled = (config.feat_dim // 8) * 8 * m * config.expansion * n_stats
        self.embedding = nn.Linear(pooled, config.embedding_size)
        if config.two_emb_layer:
            self.embedding_norm = nn.BatchNorm1d(config.embedding_size, affine=False)
            self.embedding_out = nn.Linear(config.embedding_size, config.embedding_size)
        self.post_init()

    @property
    def embedding_size(self) -> int:
        return self.config.embedding_size

    def forward(self, input_features: torch.FloatTensor) -> torch.FloatTensor:
        """Speaker embeddings (B, embedding_size) of mean-normalised fbank features (B, T, feat_dim)."""
        check_fbank_input(input_features, self.config.feat_dim)
        # (B, T, F) -> (B, 1, F, T): frequency is the image height, time the width
        x = input_features.to(self.stem_conv.weight.dtype).transpose(1, 2).unsqueeze(1)
        x = F.relu(self.stem_norm(self.stem_conv(x)))
        stage_outputs = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
            stage_outputs.append(x)
        fused = self.stage_fusion(stage_outputs[3], self.stage3_downsample(stage_outputs[2]))
        embedding = self.embedding(_temporal_pooling(fused, self.config.pooling_func))
        if self.config.two_emb_layer:
            embedding = self.embedding_out(self.embedding_norm(F.relu(embedding)))
        return embedding


_FUSION_PARTS = {"0": "reduce_conv", "1": "reduce_norm", "3": "expand_conv", "4": "expand_norm"}
_BLOCK_PARTS = {
    "conv1": "conv_in",
    "bn1": "norm_in",
    "conv3": "conv_out",
    "bn3": "norm_out",
    "shortcut.0": "shortcut_conv",
    "shortcut.1": "shortcut_norm",
}


def _stage_prefix(match: re.Match) -> str:
    return f"stages.{int(match['stage']) - 1}.{match['block']}."


# 3D-Speaker / funasr module names -> ours
ERES2NETV2_RENAME_RULES: list[RenameRule] = [
    (r"conv1\.(.+)", r"stem_conv.\1"),
    (r"bn1\.(.+)", r"stem_norm.\1"),
    (
        r"layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?P<part>conv1|bn1|conv3|bn3|shortcut\.[01])\.(?P<tail>.+)",
        lambda m: f"{_stage_prefix(m)}{_BLOCK_PARTS[m['part']]}.{m['tail']}",
    ),
    (
        r"layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?P<part>convs|bns)\.(?P<tail>\d+\..+)",
        lambda m: (
            f"{_stage_prefix(m)}{'branch_convs' if m['part'] == 'convs' else 'branch_norms'}.{m['tail']}"
        ),
    ),
    (
        r"layer(?P<stage>[1-4])\.(?P<block>\d+)\.fuse_models\.(?P<fusion>\d+)\.local_att\.(?P<part>[0134])\.(?P<tail>.+)",
        lambda m: f"{_stage_prefix(m)}branch_fusions.{m['fusion']}.{_FUSION_PARTS[m['part']]}.{m['tail']}",
    ),
    (r"layer3_ds\.(.+)", r"stage3_downsample.\1"),
    (
        r"fuse34\.local_att\.(?P<part>[0134])\.(?P<tail>.+)",
        lambda m: f"stage_fusion.{_FUSION_PARTS[m['part']]}.{m['tail']}",
    ),
    (r"seg_1\.(.+)", r"embedding.\1"),
    (r"seg_bn_1\.(.+)", r"embedding_norm.\1"),
    (r"seg_2\.(.+)", r"embedding_out.\1"),
]


def convert_eres2netv2_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: ERes2NetV2Config | None = None
) -> dict[str, torch.Tensor]:
    """Convert a 3D-Speaker / funasr ERes2NetV2 state dict (optionally `module.`/`model.`-prefixed) to ours.

    BatchNorm running statistics and `num_batches_tracked` are kept. Raises ValueError listing unknown
    and missing keys against `config` (the published default when None).
    """
    config = config if config is not None else ERes2NetV2Config()
    expected = expected_state_dict_keys(ERes2NetV2Model, config)
    return rename_checkpoint_keys(state_dict, ERES2NETV2_RENAME_RULES, expected, "ERes2NetV2")


def load_eres2netv2(path: str | os.PathLike, config: ERes2NetV2Config | None = None) -> ERes2NetV2Model:
    """Build an eval-mode `ERes2NetV2Model` from a published plain state dict such as `pretrained_eres2netv2.ckpt`."""
    config = config if config is not None else ERes2NetV2Config()
    return build_from_plain_checkpoint(ERes2NetV2Model, convert_eres2netv2_state_dict, path, config)


__all__ = [
    "ERes2NetV2PreTrainedModel",
    "ERes2NetV2Model",
    "convert_eres2netv2_state_dict",
    "load_eres2netv2",
]
