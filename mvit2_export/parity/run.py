"""Run the parity check of one artifact: reference model and runner on the same images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.images import parity_images
from ..exporters.base import Runner
from ..model.preprocess import images_to_pixel_values
from .metrics import ParityReport, compare_outputs


def reference_outputs(model: nn.Module, images: np.ndarray, batch: int = 8) -> list[np.ndarray]:
    """The PyTorch reference on uint8 RGB images, outputs as float32 arrays in model.output_names order."""
    chunks: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images_to_pixel_values(images[i : i + batch]))
            out = model(x)
            out = out if isinstance(out, tuple) else (out,)
            chunks.append([o.numpy() for o in out])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def run_parity(
    model: nn.Module,
    runner: Runner,
    precision: str,
    image_size: int,
    images: np.ndarray | None = None,
    rule: str | None = None,
) -> ParityReport:
    """Parity of `runner` against `model` on the parity images, by the rules of class `rule`
    (the exporter's `threshold_class(precision)`)."""
    images = parity_images(image_size) if images is None else images
    ref = reference_outputs(model, images)
    got = runner.run(images)
    return compare_outputs(
        ref,
        got,
        list(model.output_names),
        model.task,
        precision,
        runner.runtime,
        trained=not model.checkpoint.untrained,
        rule=rule,
    )
