"""Static Neural Engine (ANE) audit of a saved .mlpackage: known constraints, checked op by op.

Core ML decides placement at load time and does not explain it, so these are heuristics from public
sources (coremltools docs/issues, Apple's ml-ane-transformers notes), not a guarantee:

- rank: ANE tensors are at most rank 5 (a rank-6 reshape splits the model, coremltools#1548, timm#1407).
- dims: a channel or spatial dimension above 16384 does not fit ANE buffers.
- cpu_op: gather/scatter/shape/dynamic-shape/control-flow/sort ops run on the CPU.
- dynamic_shape: outputs without a static shape (ANE needs static shapes).
- fp32_compute: ANE computes in fp16 only; fp32 ops run on CPU/GPU.
- upsample: align_corners bilinear / non-default resize sampling modes fall back.
- attention_layout: reshape/transpose/matmul/einsum/gather inside the separable attention (the rewrites
  keep it to convs and element-wise ops; anything else there means a layout change per layer).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

MAX_RANK = 5
MAX_DIM = 16384
CPU_OPS = {
    "gather", "gather_nd", "gather_along_axis", "scatter", "scatter_nd", "scatter_along_axis",
    "shape", "non_zero", "topk", "argsort", "while_loop", "cond", "cumsum", "fill_like", "range_1d",
}  # fmt: skip
ATTENTION_FORBIDDEN = {"reshape", "transpose", "matmul", "einsum", "gather", "gather_nd", "gather_along_axis"}
# Ops legitimately fp32 in an fp16 program: input/outputs casts, the image scale, the label lookup.
_FP32_EXEMPT = {"cast", "classify"}
_IMAGE_PREPROCESSING = ("__scaled__", "__biased__")  # the ImageType scale/bias ops, fp32 by design


def _finding(op: Any, rule: str, severity: str, detail: str, count: int = 1) -> dict[str, Any]:
    return {
        "op": op.name,
        "op_type": op.type,
        "rule": rule,
        "severity": severity,
        "detail": detail,
        "count": count,
    }


def _attention_ops(ops: list[Any]) -> set[str]:
    """Names of ops in the separable attention: from the qkv split (one of whose outputs feeds a softmax)
    forward to the next conv (out_proj), exclusive."""
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for op in ops:
        for v in op.inputs.values():
            for name in v if isinstance(v, tuple) else (v,):
                consumers[name].append(op)
    region: set[str] = set()
    for op in ops:
        if op.type != "split" or not any(c.type == "softmax" for o in op.outputs for c in consumers[o]):
            continue
        frontier = [c for o in op.outputs for c in consumers[o]]
        while frontier:
            cur = frontier.pop()
            if cur.type in ("conv", "linear") or cur.name in region:
                continue
            region.add(cur.name)
            frontier.extend(c for o in cur.outputs for c in consumers[o])
    return region


def ane_audit(path: str | Path) -> list[dict[str, Any]]:
    """Findings (op, op_type, rule, severity, detail, count) for the saved program at `path`."""
    from .mil.loader import load_mlpackage

    program = load_mlpackage(path)
    consts = {op.outputs[0]: op.const_value for op in program.ops if op.type == "const"}
    ops = [op for op in program.ops if op.type != "const" and not op.type.startswith("constexpr_")]
    findings: list[dict[str, Any]] = []
    fp32: dict[str, list[Any]] = collections.defaultdict(list)
    attention = _attention_ops(ops)
    for op in ops:
        shapes = [s for s in op.out_shapes]
        if any(s is None for s in shapes) and op.type != "classify":
            findings.append(_finding(op, "dynamic_shape", "error", "output shape is not static"))
        for s in (s for s in shapes if s is not None):
            if len(s) > MAX_RANK:
                findings.append(
                    _finding(op, "rank", "error", f"rank {len(s)} output {s} (ANE max rank {MAX_RANK})")
                )
            big = [d for d in s[1:] if d > MAX_DIM]
            if big:
                findings.append(_finding(op, "dims", "error", f"output {s} has a dimension > {MAX_DIM}"))
        if op.type in CPU_OPS:
            findings.append(
                _finding(op, "cpu_op", "error", f"{op.type} is not supported on the Neural Engine")
            )
        if op.type == "reshape" and not isinstance(consts.get(_name(op.inputs.get("shape"))), np.ndarray):
            findings.append(_finding(op, "cpu_op", "warning", "reshape with a non-constant shape"))
        if op.type.startswith(("upsample", "resize")):
            align = consts.get(_name(op.inputs.get("align_corners")))
            mode = consts.get(_name(op.inputs.get("sampling_mode")))
            if bool(align) or (
                mode is not None and str(mode) not in ("DEFAULT", "UNALIGN_CORNERS", "OFFSET_CORNERS")
            ):
                findings.append(
                    _finding(op, "upsample", "warning", f"{op.type} align_corners={align} mode={mode}")
                )
        if op.name in attention and op.type in ATTENTION_FORBIDDEN:
            findings.append(_finding(op, "attention_layout", "warning", f"{op.type} inside the attention"))
        if (
            op.type not in _FP32_EXEMPT
            and not op.name.endswith(_IMAGE_PREPROCESSING)
            and any(d == np.dtype(np.float32) for d in op.out_dtypes)
        ):
            fp32[op.type].append(op)
    for kind, group in sorted(fp32.items()):
        # One finding per op type (an fp32 program would otherwise list every op).
        findings.append(
            _finding(
                group[0],
                "fp32_compute",
                "warning",
                f"{len(group)} {kind} op(s) compute in fp32: the Neural Engine runs fp16 only",
                len(group),
            )
        )
    return findings


def _name(v: Any) -> str | None:
    return v if isinstance(v, str) else None
