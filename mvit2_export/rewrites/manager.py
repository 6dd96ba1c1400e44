"""Apply a named pipeline (or an explicit list of ids): rewrite, validate, re-trace after every rewrite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch._guards import detect_fake_mode
from torch.export import ExportedProgram
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from ..errors import RewriteError
from .base import REGISTRY, RewriteResult
from .export import example_args, has_dynamic_batch, reexport
from .graph_utils import erase_unused
from .pipelines import PIPELINES

Reexport = Literal["end", "each"]


def _run(gm: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = gm(*args)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _check_close(rewrite_id: str, ref: list[torch.Tensor], got: list[torch.Tensor]) -> None:
    """Loose sanity check (the tests hold the 1e-5 bound): catches a wrong rewrite and names it."""
    if len(ref) != len(got):
        raise RewriteError(f"rewrite {rewrite_id} changed the number of outputs ({len(ref)} -> {len(got)})")
    for r, g in zip(ref, got, strict=True):
        if r.shape != g.shape:
            raise RewriteError(
                f"rewrite {rewrite_id} changed an output shape {tuple(r.shape)} -> {tuple(g.shape)}"
            )
        err = (r.float() - g.float()).abs().max().item() if r.numel() else 0.0
        if not err <= 1e-3 * (1.0 + r.float().abs().max().item()):
            raise RewriteError(f"rewrite {rewrite_id} changed the outputs (max abs diff {err:.3g})")


def _retrace_shapes(gm: torch.fx.GraphModule) -> None:
    """Re-run fake-tensor propagation under the program's own (symbolic) shape env.

    Refreshes `meta["val"]` of every node (so the next rewrite sees shapes of nodes just created) and
    fails on any shape/dtype error, for a fraction of the cost of a full torch.export re-trace.
    """
    inputs = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
    mode = detect_fake_mode(inputs)
    if mode is None:
        raise RuntimeError("placeholders carry no fake tensors to re-trace with")
    with mode:
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)


def _resolve(pipeline: str | Sequence[str]) -> list[str]:
    if isinstance(pipeline, str):
        if pipeline not in PIPELINES:
            raise RewriteError(f"unknown pipeline {pipeline!r}; known: {sorted(PIPELINES)}")
        return list(PIPELINES[pipeline])
    ids = list(pipeline)
    unknown = [i for i in ids if i not in REGISTRY]
    if unknown:
        raise RewriteError(f"unknown rewrite(s) {unknown}; known: {list(REGISTRY)}")
    return ids


def apply_pipeline(
    ep: ExportedProgram,
    pipeline: str | Sequence[str],
    verify: bool = True,
    reexport_mode: Reexport = "end",
) -> tuple[ExportedProgram, list[RewriteResult]]:
    """Run the rewrites of `pipeline` ("onnx", "coreml", "tflite", or a list of ids) on a copy of `ep`.

    Rewrites edit the unlifted module `ep.module()`. After each rewrite that fired the graph is linted,
    recompiled and re-traced — by fake-tensor shape propagation (`reexport_mode="end"`, then one
    torch.export at the end) or by a full torch.export (`"each"`, slower) — and, with `verify`, run on
    the example input against the original program. Any failure raises RewriteError naming the
    rewrite; if only the final re-export fails, the pipeline is replayed with "each" to find which.
    Dynamic batch is preserved: the program is re-exported with the same `batch` dim.
    """
    ids = _resolve(pipeline)
    args = example_args(ep)
    dynamic = has_dynamic_batch(ep)
    gm = ep.module()
    ref = _run(gm, args) if verify else []
    results: list[RewriteResult] = []
    for rid in ids:
        try:
            result = REGISTRY.get(rid)().apply(gm)
        except Exception as e:  # a bug in a rewrite: surface which one
            raise RewriteError(f"rewrite {rid} failed: {type(e).__name__}: {e}") from e
        results.append(result)
        if not result.fired:
            continue  # graph untouched: nothing to validate
        try:
            erase_unused(gm)
            gm.graph.lint()
            gm.recompile()
            if reexport_mode == "each":
                gm = reexport(gm, args, dynamic).module()
            else:
                _retrace_shapes(gm)
        except Exception as e:
            raise RewriteError(f"rewrite {rid} broke the program: {type(e).__name__}: {e}") from e
        if verify:
            _check_close(rid, ref, _run(gm, args))
    if not any(r.fired for r in results):
        return ep, results
    try:
        return reexport(gm, args, dynamic), results
    except Exception as e:
        if reexport_mode == "end":  # replay with a re-export per rewrite: raises naming the culprit
            apply_pipeline(ep, ids, verify=False, reexport_mode="each")
        raise RewriteError(f"re-export after rewrites {ids} failed: {type(e).__name__}: {e}") from e
