"""Deterministic, non-trivial random weights.

Used for the embedded default model and by tests on transformers' models: BatchNorm statistics and norm
affines that are not identity, so that folding and normalisation rewrites are really exercised.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def randomize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and BatchNorm buffer from a seeded generator (independent of the global RNG)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std)

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            normal(module.weight, math.sqrt(2.0 / fan_in))  # He init keeps activations O(1) through depth
            if module.bias is not None:
                normal(module.bias, 0.1)
        elif isinstance(module, nn.BatchNorm2d):
            uniform(module.weight, 0.5, 1.5)
            normal(module.bias, 0.1)
            normal(module.running_mean, 0.1)
            uniform(module.running_var, 0.5, 1.5)
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)) and module.weight is not None:
            uniform(module.weight, 0.5, 1.5)
            normal(module.bias, 0.1)
    return model.eval()
