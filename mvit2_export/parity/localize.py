"""Per-op divergence: name the first operation where an artifact departs from PyTorch.

The reference side runs the same rewritten torch.export program the artifact was lowered from, recording
every node's output by node name. Converters keep those names for many values (the dynamo ONNX exporter
names values after FX nodes; coremltools' torch frontend names MIL ops after them, with suffixes such as
`_cast_fp16`). Each artifact-side intermediate whose name and shape match (directly or as NHWC) is
compared in the artifact's execution order; the first one whose relative error exceeds the precision's
tolerance is where the divergence starts.

When the converter keeps no names (litert-torch), the artifact gives a `ValueTrace` and values are
matched by value instead (`localize_by_value`): see there.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..exporters.base import ValueTrace
from .thresholds import localize_tolerance

_SUFFIXES = re.compile(r"(_cast_fp(16|32)|_to_fp(16|32)|_fp16|_fp32|_dequantized|_quantized)+$")


@dataclass
class OpDiff:
    name: str
    shape: tuple[int, ...]
    rel_err: float
    # Matching by value only: the reference value matched (for a divergent op, the ones its inputs
    # matched) and how: "exact" (element-wise in some layout) or "multiset" (layout unknown: a lower bound).
    reference: str | None = None
    match: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "rel_err": self.rel_err}
        d.update({k: v for k, v in (("reference", self.reference), ("match", self.match)) if v is not None})
        return d


@dataclass
class Localization:
    compared: list[OpDiff] = field(default_factory=list)
    tolerance: float = 0.0
    first_divergent: OpDiff | None = None
    largest_jump: tuple[OpDiff, float] | None = None  # (op, ratio to the previous op's error)
    # Matching by value: ops whose output matches no reference value but feeds ones that do (an op the
    # reference does not have on its own, e.g. the LOGISTIC of a SiLU split in two).
    unmatched: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": len(self.compared),
            "tolerance": self.tolerance,
            "first_divergent": self.first_divergent.to_dict() if self.first_divergent else None,
            "largest_jump": (
                {**self.largest_jump[0].to_dict(), "ratio": self.largest_jump[1]}
                if self.largest_jump
                else None
            ),
            "ops": [d.to_dict() for d in self.compared],
            "unmatched": self.unmatched,
        }

    def summary(self, parity_passed: bool = False) -> str:
        """One line; when the artifact passed parity, the largest per-op deviation is reported as such."""
        if not self.compared:
            return "no intermediate tensor could be matched to the reference"
        if parity_passed:
            worst = max(self.compared, key=lambda d: d.rel_err)
            return (
                f"passed: {len(self.compared)} intermediates compared, largest per-op deviation {worst.name} "
                f"{list(worst.shape)} rel err {worst.rel_err:.3g} (per-op tolerance {self.tolerance:g}; the outputs "
                "are within the parity thresholds)"
            )
        if self.first_divergent is None:
            worst = max(self.compared, key=lambda d: d.rel_err)
            return (
                f"{len(self.compared)} intermediates compared, none beyond {self.tolerance:g} "
                f"(worst {worst.name}: {worst.rel_err:.3g}); the difference is in the last ops or outputs"
            )
        d = self.first_divergent
        text = f"first divergent op: {d.name} {list(d.shape)} rel err {d.rel_err:.3g} (tolerance {self.tolerance:g})"
        if d.reference:
            text += f", its inputs match reference {d.reference}"
        if self.largest_jump:
            j, ratio = self.largest_jump
            text += f"; largest jump at {j.name} (x{ratio:.3g})"
        return text


def reference_intermediates(module: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every tensor-valued node output of the rewritten graph(s) in `module`, keyed by FX node name.

    `module` is a GraphModule, or a wrapper around one (TFLite's layout wrapper): the wrapper runs as
    lowered, its graph modules node by node."""
    values: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                values[n.name] = out.detach().float().numpy()
            return out

    graphs = [m for m in module.modules() if isinstance(m, torch.fx.GraphModule)]
    with torch.no_grad():
        if module in graphs:
            Recorder(module).run(x)
            return values
        for gm in graphs:  # an instance attribute shadows the class's forward while we run
            gm.forward = lambda *args, gm=gm: Recorder(gm).run(*args)
        try:
            module(x)
        finally:
            for gm in graphs:
                del gm.forward
    return values


def canonical(name: str) -> str:
    return _SUFFIXES.sub("", name)


def _align(ref: np.ndarray, got: np.ndarray) -> np.ndarray | None:
    """`got` in the reference layout when shapes agree directly or as NHWC vs NCHW; else None."""
    if got.shape == ref.shape:
        return got
    if (
        got.size == ref.size
        and got.ndim == 4
        and ref.ndim == 4
        and got.transpose(0, 3, 1, 2).shape == ref.shape
    ):
        return got.transpose(0, 3, 1, 2)
    if got.size == ref.size and got.squeeze().shape == ref.squeeze().shape:
        return got.reshape(ref.shape)
    return None


def localize(
    reference: dict[str, np.ndarray], artifact: dict[str, np.ndarray], precision: str
) -> Localization:
    """Compare artifact intermediates (in execution order) with the reference by name."""
    result = Localization(tolerance=localize_tolerance(precision))
    for name, got in artifact.items():
        ref = reference.get(name) if name in reference else reference.get(canonical(name))
        if ref is None:
            continue
        aligned = _align(ref, np.asarray(got, dtype=np.float32))
        if aligned is None:
            continue
        scale = float(np.abs(ref).max()) or 1.0
        diff = OpDiff(name, tuple(ref.shape), float(np.abs(aligned - ref).max()) / scale)
        result.compared.append(diff)
        if result.first_divergent is None and not diff.rel_err <= result.tolerance:
            result.first_divergent = diff
    return _with_largest_jump(result)


def _with_largest_jump(result: Localization) -> Localization:
    prev = None
    for diff in result.compared:
        if prev is not None and prev.rel_err > 0:
            ratio = diff.rel_err / prev.rel_err
            if result.largest_jump is None or ratio > result.largest_jump[1]:
                result.largest_jump = (diff, ratio)
        prev = diff
    return result


# Smaller values (norm statistics are scalars) would match some unrelated reference value by chance.
MIN_SIZE = 8


@dataclass
class _RefValue:
    name: str
    value: np.ndarray
    ordered: np.ndarray  # sorted elements: the value as a multiset, whatever its layout
    scale: float
    stats: np.ndarray  # min, max, mean: layout-free, each within tol * scale of a true match's

    @classmethod
    def of(cls, name: str, value: np.ndarray) -> _RefValue:
        ordered = np.sort(value, axis=None)
        stats = np.array([ordered[0], ordered[-1], ordered.mean()])
        return cls(name, value, ordered, float(np.abs(value).max()) or 1.0, stats)


def _views(ref: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """`ref` laid out as `shape` in every way a converter plausibly chose: same element order, NCHW as
    NHWC, or any axis permutation that gives `shape` (the channels-last transformer stages)."""
    views = [ref.reshape(shape)]
    if ref.ndim == 4:
        views.append(ref.transpose(0, 2, 3, 1).reshape(shape))
    if ref.ndim <= 6 and sorted(ref.shape) == sorted(shape):
        perms = {
            p for p in itertools.permutations(range(ref.ndim)) if tuple(ref.shape[i] for i in p) == shape
        }
        views += [ref.transpose(p) for p in sorted(perms) if p != tuple(range(ref.ndim))]
    return views


def _best_match(got: np.ndarray, candidates: list[_RefValue], tol: float) -> OpDiff:
    """The reference value `got` is closest to. The sorted-element distance, max|sort(got) - sort(ref)|,
    is the smallest max-abs difference over every possible layout, so it never hides a real difference
    in the values; an element-wise match in one of `_views` is preferred and reported as "exact"."""
    ordered = np.sort(got, axis=None)
    stats = np.array([ordered[0], ordered[-1], ordered.mean()])
    # Lower bounds of the sorted distance (cheap): a true match is within tol.
    bounds = [float(np.abs(stats - r.stats).max()) / r.scale for r in candidates]
    by_bound = sorted(range(len(candidates)), key=bounds.__getitem__)
    close = [i for i in by_bound if bounds[i] <= tol] or by_bound[:3]
    best: OpDiff | None = None
    for i in close:
        r = candidates[i]
        err = float(np.abs(ordered - r.ordered).max()) / r.scale
        if err <= tol:
            exact = min(float(np.abs(v - got).max()) for v in _views(r.value, got.shape)) / r.scale
            if exact <= tol:
                return OpDiff("", got.shape, exact, r.name, "exact")
        if best is None or err < best.rel_err:
            best = OpDiff("", got.shape, err, r.name if err <= tol else None, "multiset")
    assert best is not None
    return best


def localize_by_value(reference: dict[str, np.ndarray], trace: ValueTrace, precision: str) -> Localization:
    """Match each traced value to the reference value it equals (within the precision's tolerance), in
    any layout, and name the first op whose output equals none while its inputs do.

    Not every artifact op has a reference counterpart (a SiLU becomes LOGISTIC + MUL, a conv gets a PAD):
    an unmatched value that feeds a matched one was right, so it is listed in `unmatched` and not blamed.
    A divergence propagates: nothing computed from a wrong value matches again. So the op blamed is the
    first whose output matches nothing, feeds nothing that matches, and whose inputs were all right.
    """
    tol = localize_tolerance(precision)
    result = Localization(tolerance=tol)
    by_size: dict[int, list[_RefValue]] = {}
    for name, value in reference.items():
        if value.size >= MIN_SIZE:
            by_size.setdefault(value.size, []).append(_RefValue.of(name, value))

    diffs: dict[str, OpDiff] = {}
    for name, got in trace.items():
        candidates = by_size.get(got.size) if got.size >= MIN_SIZE else None
        if candidates:
            d = _best_match(np.asarray(got, dtype=np.float32), candidates, tol)
            d.name = name
            diffs[name] = d

    matched = {n for n, d in diffs.items() if d.rel_err <= tol}
    feeds_match: set[str] = set()  # values from which some matched value was computed
    for name in reversed(trace):
        for i in trace.inputs.get(name, []):
            if name in matched or name in feeds_match:
                feeds_match.add(i)
    right: set[str] = set()  # matched, feeding a match, or not comparable with right inputs
    for name in trace:
        inputs_right = all(i in right for i in trace.inputs.get(name, []))
        if name in matched or name in feeds_match or (name not in diffs and inputs_right):
            right.add(name)
        d = diffs.get(name)
        if d is None:
            continue
        if name in matched:
            result.compared.append(d)
        elif name in feeds_match:
            result.unmatched.append(name)
        else:
            result.compared.append(d)
            if result.first_divergent is None and inputs_right:
                d.reference = (
                    ", ".join(diffs[i].reference for i in trace.inputs.get(name, []) if i in matched) or None
                )
                result.first_divergent = d
    return _with_largest_jump(result)


def localize_artifact(
    model: nn.Module, exporter: Any, path: Any, entry: dict[str, Any], image: np.ndarray
) -> Localization:
    """Reference intermediates of the very module `exporter` lowered (its prepared program, wrappers
    included), against the artifact's own."""
    module, to_input = exporter.lowered(model, entry, int(image.shape[1]))
    reference = reference_intermediates(module, to_input(image[:1]))
    artifact = exporter.intermediates(path, entry, image[:1], lowered=module)
    if isinstance(artifact, ValueTrace):
        return localize_by_value(reference, artifact, entry.precision)
    return localize(reference, artifact, entry.precision)
