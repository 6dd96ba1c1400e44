"""`check --localize` for a .pte: every op's output, through ExecuTorch's intermediate-output taps.

A shipped .pte runs the whole model in one XNNPACK delegate, whose insides the runtime does not expose.
So the program the artifact was lowered from is lowered again with every op's output tapped
(executorch.devtools.intermediate_output_tap: each tapped value becomes one more output of the same
delegate, and `strip_taps_` removes the tap ops before serialization), and run in the ExecuTorch runtime.
The tapped program is not the shipped file: its model outputs must reproduce the artifact's on the same
image (`reproduction_error`), else the artifact is not what this model lowers to and the taps say nothing of it.

executorch 1.5.1, measured on the rewritten programs (width 0.5 @ 64 and 1.0 @ 256; classifier,
segmenter, backbone): 426-440 taps, one delegate, every tapped value within 1e-5 of the eager program's,
~28 s of lowering at width 0.5. (On this project's earlier rewritten programs, 150-200 taps corrupted
the outputs; the current programs do not, and `reproduction_error` would catch it if they did.) A tap on the camera input's cast or layout change is refused by
XNNPACK ("pass through arguments"), so taps start at the first convolution.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import ExportedProgram

from ...errors import ExportError, first_line
from ...progress import step


class TapReference(nn.Module):
    """What `ExecuTorchExporter.lowered` returns. As a module it is the fp32 program (localize's reference
    runs its graph node by node, names as in the program); `source` is the program the artifact was
    lowered from (the fp32 one, or its fp16 cast) and `names` maps its node names to the reference's."""

    def __init__(self, reference: ExportedProgram, source: ExportedProgram, names: dict[str, str]) -> None:
        super().__init__()
        self.program = reference.module()
        self.source = source  # not a module: torch.export programs are plain objects
        self.names = names

    def forward(self, x: torch.Tensor) -> object:
        return self.program(x)


def name_map(reference: ExportedProgram, source: ExportedProgram) -> dict[str, str]:
    """Node names of `source` -> the reference's, by position among the ops that are not dtype casts:
    `source` is the reference traced again, or with casts added (HalfPrecision). Casts are left out
    of localization on both sides; any other difference in the op sequence is refused, never guessed."""
    skip = {
        torch.ops.aten._to_copy.default,
        torch.ops.aten.to.dtype,
        torch.ops.aten._assert_tensor_metadata.default,  # torch.export's dtype check of a cast
    }

    def ops(program: ExportedProgram) -> list[torch.fx.Node]:
        return [n for n in program.graph.nodes if n.op == "call_function" and n.target not in skip]

    ref, src = ops(reference), ops(source)
    if len(ref) != len(src) or any(a.target != b.target for a, b in zip(ref, src, strict=False)):
        raise ExportError("the .pte's source program does not line up with the fp32 program op by op")
    return {b.name: a.name for a, b in zip(ref, src, strict=True)}


def tap_nodes(program: ExportedProgram) -> set[str]:
    """Floating-point op outputs from the first convolution on."""
    chosen: set[str] = set()
    for n in program.graph.nodes:
        if n.op != "call_function":
            continue
        if (
            not chosen
            and n.target is not torch.ops.aten.conv2d.default
            and "convolution" not in str(n.target)
        ):
            continue
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor) and val.is_floating_point():
            chosen.add(n.name)
    return chosen


@dataclass
class Tapped:
    """The tapped program's model outputs and every tapped value (source node name -> value, in order)."""

    outputs: list[np.ndarray]
    values: dict[str, np.ndarray]


def run_tapped(source: ExportedProgram, x: torch.Tensor, names: Iterable[str]) -> Tapped:
    """Lower `source` for XNNPACK with the outputs of the ops in `names` tapped (those `tap_nodes`
    chooses), and run it once on `x`."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.intermediate_output_tap import (
        FULL_TENSOR,
        strip_taps_,
        tap_intermediate_outputs_,
    )
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime, Verification

    chosen = tap_nodes(source) & set(names)
    n_outputs = len(next(n for n in source.graph.nodes if n.op == "output").args[0])
    step(f"ExecuTorch lowering with {len(chosen)} intermediate taps")
    try:
        tapped, specs = tap_intermediate_outputs_(source, rules=[(lambda n: n.name in chosen, FULL_TENSOR)])
        edge = to_edge_transform_and_lower(tapped, partitioner=[XnnpackPartitioner()])
        strip_taps_(edge)
        buffer = edge.to_executorch().buffer
    except Exception as exc:
        raise ExportError(f"ExecuTorch lowering with intermediate taps failed: {first_line(exc)}") from exc
    with tempfile.TemporaryDirectory(prefix="mvit2-taps-") as tmp:
        path = Path(tmp) / "tapped.pte"  # the runtime maps the file: the values are copied out below
        path.write_bytes(bytes(buffer))
        method = Runtime.get().load_program(path, verification=Verification.Minimal).load_method("forward")
        flat = [np.array(o.float().numpy()) for o in method.execute([x])]
    return Tapped(flat[:n_outputs], {s.node_name: flat[s.output_index] for s in specs})


# Two lowerings of one program by one executorch run the same kernels: measured 0 to 1e-6 apart.
REPRODUCTION_TOLERANCE = 1e-4


def reproduction_error(tapped: list[np.ndarray], shipped: list[np.ndarray]) -> float:
    """Largest output difference between the tapped program and the shipped artifact, relative to each
    output's scale."""
    errs = [
        float(np.abs(a.reshape(b.shape) - b).max()) / (float(np.abs(b).max()) or 1.0)
        for a, b in zip(tapped, shipped, strict=True)
    ]
    return max(errs)
