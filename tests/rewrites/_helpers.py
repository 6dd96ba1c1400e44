"""Shared helpers for rewrite tests: tiny exports, op counts, numeric equivalence, small MobileViTV2s."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mvit2_export.rewrites import apply_pipeline, export_program, op_histogram

ATOL = 1e-5

# Conversion tests take 15-30 s each: they prove the rewritten programs lower on every backend, so they
# run in the default suite; `-m "not slow"` skips them for a quick local loop.
slow = pytest.mark.slow


class Fn(torch.nn.Module):
    """Wrap a function (and optional sub-modules) as a module to export."""

    def __init__(self, fn: Callable[..., torch.Tensor], **modules: torch.nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.mods = torch.nn.ModuleDict(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.mods)


def counts(ep: torch.export.ExportedProgram) -> dict[str, int]:
    return op_histogram(ep.graph)


def rewrite(ep: torch.export.ExportedProgram, rewrite_id: str):
    """Apply one rewrite; returns (new program, its RewriteResult)."""
    new_ep, results = apply_pipeline(ep, [rewrite_id])
    return new_ep, results[0]


def max_diff(a: torch.export.ExportedProgram, b: torch.export.ExportedProgram, x: torch.Tensor) -> float:
    with torch.no_grad():
        ya, yb = a.module()(x), b.module()(x)
    if isinstance(ya, torch.Tensor):
        ya, yb = (ya,), (yb,)
    assert all(torch.isfinite(t).all() for t in ya) and any(t.abs().max() > 0 for t in ya)  # non-trivial
    return max((p - q).abs().max().item() for p, q in zip(ya, yb, strict=True))


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm running stats and affines, so folding/decomposition is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


class Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def hf_model(kind: str, width: float = 0.5, size: int = 64) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.MobileViTV2Config(width_multiplier=width, image_size=size, num_labels=7)
    cls = {
        "classifier": transformers.MobileViTV2ForImageClassification,
        "segmentation": transformers.MobileViTV2ForSemanticSegmentation,
    }[kind]
    return Logits(randomize_norms(cls(cfg)))


def export(fn: Callable[..., torch.Tensor], x: torch.Tensor, dynamic: bool = False, **mods: torch.nn.Module):
    return export_program(Fn(fn, **mods).eval(), x, dynamic_batch=dynamic)


def unfold_fn(k: int, s: int) -> Callable[..., torch.Tensor]:
    """unfold(kernel k, stride s) then the model's reshape to [B, C, P, N] (x2 so the output is an op)."""

    def fn(x: torch.Tensor, m: torch.nn.ModuleDict) -> torch.Tensor:
        b, c = x.shape[:2]
        return torch.nn.functional.unfold(x, kernel_size=k, stride=s).reshape(b, c, k * k, -1) * 2

    return fn
