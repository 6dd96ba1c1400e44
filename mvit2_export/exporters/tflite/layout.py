"""The NHWC I/O wrapper around the rewritten (NCHW) program that litert-torch converts.

All graph changes for TFLite are registered rewrites (the `tflite` pipeline in rewrites/pipelines.py);
this module only fixes the signature: NHWC input, optional embedded preprocessing, named outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TFLiteIO(nn.Module):
    """NHWC in, reference computation, named outputs with 4-D ones channels last.

    Input: float32 BGR [0,1] NHWC, or (embedded preprocessing) uint8 RGB NHWC. The NHWC->NCHW permute at
    the input cancels against the first conv's own layout change in litert-torch's layout pass, as does
    the NCHW->NHWC permute of 4-D outputs at the end: no TRANSPOSE is left at either end.
    """

    def __init__(self, body: nn.Module, output_names: list[str], embedded: bool) -> None:
        super().__init__()
        self.body = body
        self.output_names = output_names
        self.embedded = embedded

    def io(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.embedded:
            x = x.to(torch.float32) * (1.0 / 255.0)
            x = x.flip(-1)
        out = self.body(x.permute(0, 3, 1, 2))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {
            name: (o.permute(0, 2, 3, 1) if o.dim() == 4 else o)
            for name, o in zip(self.output_names, outs, strict=True)
        }


class PixelValuesIO(TFLiteIO):
    """The signature input is named after forward's parameter: `pixel_values` (float32 BGR [0,1])."""

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.io(pixel_values)


class ImagesIO(TFLiteIO):
    """Embedded preprocessing: the signature input is `images` (uint8 RGB)."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.io(images)


def io_module(body: nn.Module, output_names: list[str], embedded: bool) -> TFLiteIO:
    return (ImagesIO if embedded else PixelValuesIO)(body, output_names, embedded)


def to_reference_layout(x: Any, layout: str) -> Any:
    """A runtime output back to the reference layout (NHWC -> NCHW for 4-D outputs)."""
    return x.transpose(0, 3, 1, 2) if layout == "NHWC" else x
