"""Per-op divergence: name the first operation where an artifact departs from PyTorch.

The reference side runs the same rewritten torch.export program the artifact was lowered from, recording
every node's output by node name. Converters keep those names for many values (the dynamo ONNX exporter
names values after FX nodes; coremltools' torch frontend names MIL ops after them, with suffixes such as
`_cast_fp16`). Each artifact-side intermediate whose name and shape match (directly or as NHWC) is
compared in the artifact's execution order; the first one whose relative error exceeds the precision's
tolerance is where the divergence starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

# Per-op tolerance on max|diff| / max|ref| for "this op already diverged".
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.15}
_SUFFIXES = re.compile(r"(_cast_fp(16|32)|_to_fp(16|32)|_fp16|_fp32|_dequantized|_quantized)+$")


@dataclass
class OpDiff:
    name: str
    shape: tuple[int, ...]
    rel_err: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "rel_err": self.rel_err}


@dataclass
class Localization:
    compared: list[OpDiff] = field(default_factory=list)
    tolerance: float = 0.0
    first_divergent: OpDiff | None = None
    largest_jump: tuple[OpDiff, float] | None = None  # (op, ratio to the previous op's error)

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
        }

    def summary(self) -> str:
        if not self.compared:
            return "no intermediate tensor could be matched to the reference"
        if self.first_divergent is None:
            worst = max(self.compared, key=lambda d: d.rel_err)
            return (
                f"{len(self.compared)} intermediates compared, none beyond {self.tolerance:g} "
                f"(worst {worst.name}: {worst.rel_err:.3g}); the difference is in the last ops or outputs"
            )
        d = self.first_divergent
        text = f"first divergent op: {d.name} {list(d.shape)} rel err {d.rel_err:.3g} (tolerance {self.tolerance:g})"
        if self.largest_jump:
            j, ratio = self.largest_jump
            text += f"; largest jump at {j.name} (x{ratio:.3g})"
        return text


def reference_intermediates(
    program: torch.export.ExportedProgram, pixel_values: torch.Tensor
) -> dict[str, np.ndarray]:
    """Every tensor-valued node output of the (rewritten) program, keyed by FX node name."""
    gm = program.module()
    values: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                values[n.name] = out.detach().float().numpy()
            return out

    with torch.no_grad():
        Recorder(gm).run(pixel_values)
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
    result = Localization(tolerance=TOLERANCE.get(precision, TOLERANCE["int8"]))
    prev = None
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
        if prev is not None and prev.rel_err > 0:
            ratio = diff.rel_err / prev.rel_err
            if result.largest_jump is None or ratio > result.largest_jump[1]:
                result.largest_jump = (diff, ratio)
        prev = diff
    return result


def localize_artifact(
    model: nn.Module, exporter: Any, path: Any, entry: dict[str, Any], image: np.ndarray
) -> Localization:
    """Reference intermediates of the program `exporter` lowers, against the artifact's own."""
    from ..exporters.base import images_to_pixel_values
    from ..rewrites import apply_pipeline, export_program

    x = torch.from_numpy(images_to_pixel_values(image[:1]))
    program, _ = apply_pipeline(export_program(model, x, dynamic_batch=False), entry["target"])
    reference = reference_intermediates(program, x)
    artifact = exporter.intermediates(path, entry, image[:1])
    return localize(reference, artifact, entry["precision"])
