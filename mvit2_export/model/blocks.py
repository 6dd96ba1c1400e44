"""MobileViTV2 building blocks, with the module and parameter names of transformers' implementation.

This is the reference every exported artifact is measured against, so it keeps the original
formulation (unfold/fold patching, one-group GroupNorm, softmax over patches, expand_as in the
attention). The export-friendly forms come from `mvit2_export.rewrites`, which are proven equal to it.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import MobileViTV2Config, make_divisible

ACT_MODULES: dict[str, type[nn.Module]] = {
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


class ConvLayer(nn.Module):
    """conv -> optional BatchNorm -> optional activation (transformers' MobileViTV2ConvLayer)."""

    def __init__(
        self,
        config: MobileViTV2Config,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        dilation: int = 1,
        use_normalization: bool = True,
        use_activation: bool | str = True,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias
        )
        self.normalization = (
            nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1) if use_normalization else None
        )
        if use_activation:
            name = use_activation if isinstance(use_activation, str) else config.hidden_act
            self.activation: nn.Module | None = ACT_MODULES[name]()
        else:
            self.activation = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convolution(x)
        if self.normalization is not None:
            x = self.normalization(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 reduce, residual when shapes allow."""

    def __init__(
        self, config: MobileViTV2Config, in_channels: int, out_channels: int, stride: int, dilation: int = 1
    ) -> None:
        super().__init__()
        hidden = make_divisible(int(round(in_channels * config.expand_ratio)), 8)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand_1x1 = ConvLayer(config, in_channels, hidden, kernel_size=1)
        self.conv_3x3 = ConvLayer(
            config, hidden, hidden, kernel_size=3, stride=stride, groups=hidden, dilation=dilation
        )
        self.reduce_1x1 = ConvLayer(config, hidden, out_channels, kernel_size=1, use_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.reduce_1x1(self.conv_3x3(self.expand_1x1(x)))
        return x + out if self.use_residual else out


class MobileNetLayer(nn.Module):
    def __init__(
        self, config: MobileViTV2Config, in_channels: int, out_channels: int, stride: int, num_stages: int
    ) -> None:
        super().__init__()
        self.layer = nn.ModuleList()
        for i in range(num_stages):
            self.layer.append(InvertedResidual(config, in_channels, out_channels, stride if i == 0 else 1))
            in_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layer:
            x = block(x)
        return x


class LinearSelfAttention(nn.Module):
    """Separable self-attention on patches [B, C, P, N]: O(N), element-wise apart from two 1x1 convs."""

    def __init__(self, config: MobileViTV2Config, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.qkv_proj = ConvLayer(
            config, embed_dim, 1 + 2 * embed_dim, 1, bias=True, use_normalization=False, use_activation=False
        )
        self.attn_dropout = nn.Dropout(config.attn_dropout)
        self.out_proj = ConvLayer(
            config, embed_dim, embed_dim, 1, bias=True, use_normalization=False, use_activation=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        query, key, value = torch.split(qkv, [1, self.embed_dim, self.embed_dim], dim=1)
        scores = self.attn_dropout(torch.softmax(query, dim=-1))  # over the N patches
        context = torch.sum(key * scores, dim=-1, keepdim=True)  # [B, C, P, 1]
        out = torch.relu(value) * context.expand_as(value)
        return self.out_proj(out)


class FFN(nn.Module):
    def __init__(self, config: MobileViTV2Config, embed_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(config, embed_dim, latent_dim, 1, bias=True, use_normalization=False)
        self.dropout1 = nn.Dropout(config.ffn_dropout)
        self.conv2 = ConvLayer(
            config, latent_dim, embed_dim, 1, bias=True, use_normalization=False, use_activation=False
        )
        self.dropout2 = nn.Dropout(config.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.conv2(self.dropout1(self.conv1(x))))


class TransformerLayer(nn.Module):
    def __init__(self, config: MobileViTV2Config, embed_dim: int, latent_dim: int) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        self.layernorm_before = nn.GroupNorm(num_groups=1, num_channels=embed_dim, eps=eps)
        self.attention = LinearSelfAttention(config, embed_dim)
        self.dropout1 = nn.Dropout(0.0)
        self.layernorm_after = nn.GroupNorm(num_groups=1, num_channels=embed_dim, eps=eps)
        self.ffn = FFN(config, embed_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.ffn(self.layernorm_after(x))


class Transformer(nn.Module):
    def __init__(self, config: MobileViTV2Config, n_layers: int, d_model: int) -> None:
        super().__init__()
        latent = (config.ffn_multiplier * d_model) // 16 * 16
        self.layer = nn.ModuleList(TransformerLayer(config, d_model, latent) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class MobileViTV2Layer(nn.Module):
    """Local kxk + 1x1 convs, unfold into patches, transformer, GroupNorm, fold back, 1x1 projection."""

    def __init__(
        self,
        config: MobileViTV2Config,
        in_channels: int,
        out_channels: int,
        attn_unit_dim: int,
        n_attn_blocks: int,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        # Always a downsampling block (stride 2, or dilated stride 1 when output_stride asks for it).
        self.downsampling_layer = InvertedResidual(
            config,
            in_channels,
            out_channels,
            stride=2 if dilation == 1 else 1,
            dilation=dilation // 2 if dilation > 1 else 1,
        )
        in_channels = out_channels
        self.conv_kxk = ConvLayer(
            config, in_channels, in_channels, config.conv_kernel_size, groups=in_channels
        )
        self.conv_1x1 = ConvLayer(
            config, in_channels, attn_unit_dim, 1, use_normalization=False, use_activation=False
        )
        self.transformer = Transformer(config, n_attn_blocks, attn_unit_dim)
        self.layernorm = nn.GroupNorm(num_groups=1, num_channels=attn_unit_dim, eps=config.layer_norm_eps)
        self.conv_projection = ConvLayer(config, attn_unit_dim, in_channels, 1, use_activation=False)

    def unfolding(self, fm: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        b, c, h, w = fm.shape
        p = self.patch_size
        patches = nn.functional.unfold(fm, kernel_size=(p, p), stride=(p, p))
        return patches.reshape(b, c, p * p, -1), (h, w)

    def folding(self, patches: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        b, c, pp, n = patches.shape
        p = self.patch_size
        patches = patches.reshape(b, c * pp, n)
        return nn.functional.fold(patches, output_size=output_size, kernel_size=(p, p), stride=(p, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1x1(self.conv_kxk(self.downsampling_layer(x)))
        patches, size = self.unfolding(x)
        patches = self.layernorm(self.transformer(patches))
        return self.conv_projection(self.folding(patches, size))


class Encoder(nn.Module):
    def __init__(self, config: MobileViTV2Config) -> None:
        super().__init__()
        ch = config.channels
        dims = config.attn_unit_dims
        self.layer = nn.ModuleList(
            [
                MobileNetLayer(config, ch[0], ch[1], stride=1, num_stages=1),
                MobileNetLayer(config, ch[1], ch[2], stride=2, num_stages=2),
            ]
        )
        for i, (_stride, dilation) in enumerate(config.layer_strides()):
            self.layer.append(
                MobileViTV2Layer(config, ch[2 + i], ch[3 + i], dims[i], config.n_attn_blocks[i], dilation)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x
