"""Configurations of the speaker-embedding extractors: ERes2NetV2 and CAM++ (3D-Speaker architectures)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

ERES2NETV2_POOLING_FUNCS = ("TSTP", "TAP", "TSDP")
CAMPPLUS_NONLINEARITIES = ("batchnorm", "batchnorm_", "relu", "prelu")


@strict
class ERes2NetV2Config(PreTrainedConfig):
    r"""
    Configuration of [`ERes2NetV2Model`]; the defaults build 3D-Speaker's published
    `ERes2NetV2(feat_dim=80, embedding_size=192)` (baseWidth 26, scale 2, expansion 2).

    feat_dim (`int`, defaults to 80): fbank bins of the input; the network halves it three times.
    embedding_size (`int`, defaults to 192): size of the speaker embedding.
    m_channels (`int`, defaults to 64): channels of the first stage; stages use 1, 2, 4 and 8 times it.
    base_width (`int`, defaults to 26): Res2Net base width; a branch has `floor(planes * base_width / 64)` channels.
    scale (`int`, defaults to 2): number of Res2Net branches in a block.
    expansion (`int`, defaults to 2): output channels of a block are `planes * expansion`.
    num_blocks (`list[int]`, defaults to `[3, 4, 6, 3]`): blocks in each of the four stages.
    pooling_func (`str`, defaults to `"TSTP"`): temporal pooling, one of "TSTP" (mean and std), "TAP" (mean),
        "TSDP" (std).
    two_emb_layer (`bool`, defaults to `False`): add a ReLU, an affine-free BatchNorm and a second linear layer.
    """

    model_type = "eres2netv2"

    feat_dim: int = 80
    embedding_size: int = 192
    m_channels: int = 64
    base_width: int = 26
    scale: int = 2
    expansion: int = 2
    num_blocks: list[int] | tuple[int, ...] = (3, 4, 6, 3)
    pooling_func: str = "TSTP"
    two_emb_layer: bool = False

    def __post_init__(self, **kwargs):
        # a tuple default keeps the dataclass immutable; a list serialises to JSON the same way it loads back
        self.num_blocks = list(self.num_blocks)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Reject settings the network cannot be built with."""
        super().validate_architecture()
        if len(self.num_blocks) != 4 or any(n < 1 for n in self.num_blocks):
            raise ValueError(f"num_blocks must be four positive block counts, got {self.num_blocks}")
        if self.pooling_func not in ERES2NETV2_POOLING_FUNCS:
            raise ValueError(
                f"pooling_func must be one of {ERES2NETV2_POOLING_FUNCS}, got {self.pooling_func!r}"
            )
        if self.m_channels * self.base_width < 64:
            raise ValueError(
                f"m_channels * base_width must be at least 64 so that a branch has a channel, "
                f"got m_channels={self.m_channels}, base_width={self.base_width}"
            )
        if self.feat_dim < 8:
            raise ValueError(f"feat_dim must be at least 8, got {self.feat_dim}")


@strict
class CAMPPlusConfig(PreTrainedConfig):
    r"""
    Configuration of [`CAMPPlusModel`]; the defaults build 3D-Speaker's published
    `CAMPPlus(feat_dim=80, embedding_size=192)`.

    feat_dim (`int`, defaults to 80): fbank bins of the input; the 2-D front end divides it by 8.
    embedding_size (`int`, defaults to 192): size of the speaker embedding.
    growth_rate (`int`, defaults to 32): channels each densely connected layer adds.
    bn_size (`int`, defaults to 4): bottleneck width of a dense layer is `bn_size * growth_rate`.
    init_channels (`int`, defaults to 128): channels of the TDNN layer in front of the dense blocks.
    config_str (`str`, defaults to `"batchnorm-relu"`): "-"-joined normalisation/activation sequence used after
        convolutions, from "batchnorm", "batchnorm_" (no affine), "relu", "prelu".
    head_channels (`int`, defaults to 32): channels of the 2-D residual front end.
    head_blocks_per_stage (`int`, defaults to 2): residual blocks in each of the two front-end stages.
    block_layers (`list[int]`, defaults to `[12, 24, 16]`): dense layers in each dense block.
    block_kernel_sizes (`list[int]`, defaults to `[3, 3, 3]`): kernel size of the dense layers, per block.
    block_dilations (`list[int]`, defaults to `[1, 2, 2]`): dilation of the dense layers, per block.
    context_segment_length (`int`, defaults to 100): frames per segment of the context-aware mask's segment pooling.
    context_reduction (`int`, defaults to 2): bottleneck reduction of the context-aware mask.
    """

    model_type = "campplus"

    feat_dim: int = 80
    embedding_size: int = 192
    growth_rate: int = 32
    bn_size: int = 4
    init_channels: int = 128
    config_str: str = "batchnorm-relu"
    head_channels: int = 32
    head_blocks_per_stage: int = 2
    block_layers: list[int] | tuple[int, ...] = (12, 24, 16)
    block_kernel_sizes: list[int] | tuple[int, ...] = (3, 3, 3)
    block_dilations: list[int] | tuple[int, ...] = (1, 2, 2)
    context_segment_length: int = 100
    context_reduction: int = 2

    def __post_init__(self, **kwargs):
        self.block_layers = list(self.block_layers)
        self.block_kernel_sizes = list(self.block_kernel_sizes)
        self.block_dilations = list(self.block_dilations)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Reject settings the network cannot be built with."""
        super().validate_architecture()
        unknown = [name for name in self.config_str.split("-") if name not in CAMPPLUS_NONLINEARITIES]
        if unknown:
            raise ValueError(
                f"config_str {self.config_str!r} has unknown parts {unknown}; allowed: {CAMPPLUS_NONLINEARITIES}"
            )
        if not len(self.block_layers) == len(self.block_kernel_sizes) == len(self.block_dilations):
            raise ValueError(
                "block_layers, block_kernel_sizes and block_dilations must have one entry per dense block, got "
                f"{self.block_layers}, {self.block_kernel_sizes}, {self.block_dilations}"
            )
        if any(k % 2 == 0 for k in self.block_kernel_sizes):
            raise ValueError(f"block_kernel_sizes must be odd (same padding), got {self.block_kernel_sizes}")
        if self.feat_dim < 8:
            raise ValueError(f"feat_dim must be at least 8, got {self.feat_dim}")


__all__ = ["ERes2NetV2Config", "CAMPPlusConfig"]
