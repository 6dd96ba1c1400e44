"""The three MobileViTV2 models: backbone, image classification, DeepLabV3 segmentation.

Module names match transformers (`mobilevitv2.*`, `classifier`, `segmentation_head.*`) so checkpoints
load with strict key matching. Forward takes `pixel_values` (float32 [B,3,H,W], BGR, in [0,1]).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvLayer, Encoder
from .config import MobileViTV2Config


class MobileViTV2Model(nn.Module):
    """Backbone: returns (last_hidden_state [B,C,h,w], pooler_output [B,C])."""

    task = "backbone"
    output_names = ("last_hidden_state", "pooler_output")

    def __init__(self, config: MobileViTV2Config) -> None:
        super().__init__()
        self.config = config
        self.conv_stem = ConvLayer(config, config.num_channels, config.channels[0], kernel_size=3, stride=2)
        self.encoder = Encoder(config)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.conv_stem(pixel_values))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.features(pixel_values)
        return hidden, hidden.mean(dim=(-2, -1))


class MobileViTV2ForImageClassification(nn.Module):
    """Backbone + linear classifier on the pooled features: returns logits [B, num_labels]."""

    task = "classification"
    output_names = ("logits",)

    def __init__(self, config: MobileViTV2Config) -> None:
        super().__init__()
        self.config = config
        self.mobilevitv2 = MobileViTV2Model(config)
        out = config.channels[-1]
        self.classifier: nn.Module = (
            nn.Linear(out, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.mobilevitv2(pixel_values)[1])


class ASPPPooling(nn.Module):
    def __init__(self, config: MobileViTV2Config, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(output_size=1)
        self.conv_1x1 = ConvLayer(config, in_channels, out_channels, 1, use_activation="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.conv_1x1(self.global_pool(x))
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): 1x1, three dilated 3x3 and image pooling, concatenated."""

    def __init__(self, config: MobileViTV2Config) -> None:
        super().__init__()
        cin, cout = config.channels[-1], config.aspp_out_channels
        self.convs = nn.ModuleList([ConvLayer(config, cin, cout, 1, use_activation="relu")])
        self.convs.extend(
            ConvLayer(config, cin, cout, 3, dilation=rate, use_activation="relu")
            for rate in config.atrous_rates
        )
        self.convs.append(ASPPPooling(config, cin, cout))
        self.project = ConvLayer(config, 5 * cout, cout, 1, use_activation="relu")
        self.dropout = nn.Dropout(config.aspp_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([conv(x) for conv in self.convs], dim=1)))


class DeepLabV3(nn.Module):
    def __init__(self, config: MobileViTV2Config) -> None:
        super().__init__()
        self.aspp = ASPP(config)
        self.dropout = nn.Dropout2d(config.classifier_dropout_prob)
        self.classifier = ConvLayer(
            config,
            config.aspp_out_channels,
            config.num_labels,
            1,
            bias=True,
            use_normalization=False,
            use_activation=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.aspp(x)))


class MobileViTV2ForSemanticSegmentation(nn.Module):
    """Backbone + DeepLabV3 head: returns logits [B, num_labels, H/os, W/os] (not upsampled, as transformers)."""

    task = "segmentation"
    output_names = ("logits",)

    def __init__(self, config: MobileViTV2Config) -> None:
        super().__init__()
        self.config = config
        self.mobilevitv2 = MobileViTV2Model(config)
        self.segmentation_head = DeepLabV3(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.mobilevitv2.features(pixel_values))


MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "backbone": MobileViTV2Model,
    "classification": MobileViTV2ForImageClassification,
    "segmentation": MobileViTV2ForSemanticSegmentation,
}


def build_model(config: MobileViTV2Config, task: str) -> nn.Module:
    """An eval-mode model of `task` with freshly initialised weights."""
    return MODEL_CLASSES[task](config).eval()
