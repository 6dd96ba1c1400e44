"""Model summary for `mvit2-export info`: config, parameter count, MACs at the configured size."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of convs and linears for one image (the usual GMACs convention)."""
    total = 0

    def conv_hook(mod: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        total += out.numel() * k

    def linear_hook(mod: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    return total


def summarize(model: nn.Module, image_size: int | None = None) -> dict[str, Any]:
    config = model.config
    size = config.image_size if image_size is None else image_size
    config.check_image_size(size)
    info = model.checkpoint
    return {
        "task": model.task,
        "source": info.source,
        "untrained": info.untrained,
        "weights_sha256": info.sha256,
        "width_multiplier": config.width_multiplier,
        "image_size": size,
        "num_labels": config.num_labels if model.task != "backbone" else None,
        "output_stride": config.output_stride,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gmacs": round(count_macs(model, size) / 1e9, 3),
        "outputs": list(model.output_names),
    }
