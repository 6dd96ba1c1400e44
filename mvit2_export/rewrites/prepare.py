"""Trace -> rewrite -> cache, once for every exporter and for `check --localize`.

    prepared = prepare(model, "onnx", example, wrap=EmbeddedPreprocessing, dynamic_batch=True)
    prepared.module      # the rewritten GraphModule (or prepared.program.module() when re-exported)
    prepared.derived     # what a backend built from it (e.g. the fp32 ONNX graph), cached with it

Tracing and rewriting are the slow half of an export: fp32, fp16 and int8 of one model share one
prepared program, and `check --localize` compares an artifact against the very program its exporter
lowered (wrappers included). One cache, one rule: the entry is found by the model object (its id, checked
against a weak reference; the entry's traced module keeps the model alive, so the id cannot be reused
while cached) plus a fingerprint of its weights (sha1 of every tensor of its state dict, so a model
edited in place is traced again), the pipeline, the example's shape and dtype, the batch mode and the
wrapper.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram

from ..errors import ExportError, first_line
from ..progress import step
from .export import export_program
from .manager import apply_pipeline, rewrite_module


@dataclass
class Prepared:
    """A rewritten program and what was done to it. Shared by every caller: read, never mutate."""

    module: torch.fx.GraphModule | nn.Module  # what to lower or run
    rewrites: list[dict[str, Any]]
    traced: nn.Module  # the module that was traced (the model, or its wrapper)
    example: torch.Tensor
    program: ExportedProgram | None = None  # set when re-exported after the rewrites
    derived: dict[Hashable, Any] = field(default_factory=dict)  # per-backend results built from it


CACHE_SIZE = 8
_CACHE: OrderedDict[tuple[Any, ...], tuple[weakref.ref[nn.Module], Prepared]] = OrderedDict()


def weights_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def prepare(
    model: nn.Module,
    pipeline: str | tuple[str, ...],
    example: torch.Tensor,
    *,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    wrap_key: Hashable = None,
    dynamic_batch: bool = False,
    reexport: bool = False,
) -> Prepared:
    """`model` (or `wrap(model)`) traced on `example`, rewritten by `pipeline`; cached (module docstring).

    `wrap_key` names what `wrap` depends on besides the model (e.g. Core ML's argmax output);
    `reexport` re-exports the rewritten graph into an ExportedProgram (Core ML converts programs)."""
    key = (
        id(model),
        weights_fingerprint(model),
        pipeline,
        tuple(example.shape),
        str(example.dtype),
        dynamic_batch,
        reexport,
        getattr(wrap, "__qualname__", None),
        wrap_key,
    )
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is model:
        _CACHE.move_to_end(key)
        return hit[1]
    traced = (wrap(model) if wrap is not None else model).eval()
    step("torch.export trace")
    try:
        ep = export_program(traced, example, dynamic_batch=dynamic_batch)
    except Exception as exc:  # torch.export raises many types; report one line
        raise ExportError(f"torch.export failed: {first_line(exc)}") from exc
    step("rewrite pipeline")
    if reexport:
        program, results = apply_pipeline(ep, pipeline)  # raises RewriteError naming the rewrite
        prepared = Prepared(program.module(), [r.to_dict() for r in results], traced, example, program)
    else:
        gm, results = rewrite_module(ep, pipeline)
        prepared = Prepared(gm, [r.to_dict() for r in results], traced, example)
    _CACHE[key] = (weakref.ref(model), prepared)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return prepared
