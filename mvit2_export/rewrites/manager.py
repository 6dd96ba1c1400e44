"""Apply a named pipeline (or an explicit list of ids): rewrite, validate, re-trace after every rewrite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch.export import ExportedProgram

from ..errors import RewriteError
from .base import REGISTRY, RewriteResult
from .export import example_args, has_dynamic_batch, reexport
from .graph_utils import erase_unused
from .pipelines import PIPELINES
from .shape_refresh import ShapeRefresher

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
    verify_each: bool = False,
) -> tuple[ExportedProgram, list[RewriteResult]]:
    """Run the rewrites of `pipeline` ("onnx", "coreml", "tflite", or a list of ids) on a copy of `ep`.

    Rewrites edit the unlifted module `ep.module()`. After each rewrite that fired the graph is linted
    and re-traced — by fake-tensor shape propagation of the changed nodes (`reexport_mode="end"`, then
    one torch.export at the end) or by a full torch.export (`"each"`, slower). With `verify`, the
    rewritten program is run on the example input against the original (after every rewrite with
    `verify_each`, else once at the end and, on a mismatch, replayed rewrite by rewrite to find the
    culprit). Any failure raises RewriteError naming the rewrite; if only the final re-export fails,
    the pipeline is replayed with "each" to find which.
    Dynamic batch is preserved: the program is re-exported with the same `batch` dim.
    """
    ids = _resolve(pipeline)
    gm, results = rewrite_module(ep, ids, verify, reexport_mode, verify_each)
    if not any(r.fired for r in results):
        return ep, results
    try:
        return reexport(gm, example_args(ep), has_dynamic_batch(ep)), results
    except Exception as e:
        if reexport_mode == "end":  # replay with a re-export per rewrite: raises naming the culprit
            rewrite_module(ep, ids, verify=False, reexport_mode="each")
        raise RewriteError(f"re-export after rewrites {ids} failed: {type(e).__name__}: {e}") from e


def rewrite_module(
    ep: ExportedProgram,
    pipeline: str | Sequence[str],
    verify: bool = True,
    reexport_mode: Reexport = "end",
    verify_each: bool = False,
) -> tuple[torch.fx.GraphModule, list[RewriteResult]]:
    """`apply_pipeline` without the final re-export: the rewritten unlifted module, for a converter that
    runs torch.export itself (litert-torch) and would otherwise trace the program twice."""
    ids = _resolve(pipeline)
    args = example_args(ep)
    dynamic = has_dynamic_batch(ep)
    gm = ep.module()
    ref = _run(gm, args) if verify else []
    shapes = ShapeRefresher(gm)
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
            if reexport_mode == "each":
                gm.recompile()
                gm = reexport(gm, args, dynamic).module()
                shapes = ShapeRefresher(gm)
            else:
                shapes.refresh(gm)  # an fx Interpreter: needs no recompiled code
        except Exception as e:
            raise RewriteError(f"rewrite {rid} broke the program: {type(e).__name__}: {e}") from e
        if verify and verify_each:
            gm.recompile()
            _check_close(rid, ref, _run(gm, args))
    gm.recompile()
    if verify and not verify_each and any(r.fired for r in results):
        try:
            _check_close("pipeline", ref, _run(gm, args))
        except RewriteError:  # replay checking after every rewrite: raises naming the culprit
            rewrite_module(ep, ids, verify=True, verify_each=True)
            raise
    return gm, results
