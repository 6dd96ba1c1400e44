"""Reference model -> ExecuTorch program: the `executorch` rewrite pipeline, torch.export, then
`to_edge_transform_and_lower` with one backend's partitioner, and the delegation table of the result."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram

from ...errors import ExportError, first_line
from ...progress import step
from ...rewrites import Prepared, prepare
from .rewrites import PIPELINE

METADATA_METHOD = "mvit2_export_metadata"  # a constant method: the tool's metadata as UTF-8 JSON bytes


def example_input(image_size: int, embedded: bool) -> torch.Tensor:
    if embedded:
        return torch.randint(0, 256, (1, image_size, image_size, 3), dtype=torch.uint8)
    return torch.rand(1, 3, image_size, image_size)


class CameraInput(nn.Module):
    """Embedded preprocessing XNNPACK can delegate: uint8 RGB NHWC in, the reference's BGR [0, 1] NCHW
    to the model. The RGB->BGR flip and the 1/255 scale are one 1x1 convolution (an anti-diagonal 3x3
    matrix over the channels): the generic wrapper's `flip` has no XNNPACK kernel and, with the
    copies around it, cut the program into pieces (measured: aten::flip and two clones on the portable
    kernels). The uint8 -> float cast stays outside the delegate: one op on H x W x 3 values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("rgb_to_bgr", torch.eye(3).flip(0).reshape(3, 3, 1, 1) / 255.0)

    def forward(self, images: torch.Tensor) -> Any:
        x = images.to(torch.float32).permute(0, 3, 1, 2).contiguous()  # else the strides stay NHWC and
        # ExecuTorch's dim-order pass cuts the program at two channels-last clones (measured)
        return self.model(torch.nn.functional.conv2d(x, self.rgb_to_bgr))


def prepared(model: nn.Module, image_size: int, embedded: bool, dynamic_batch: bool = False) -> Prepared:
    """The rewritten program, from the one cache. The .pte is batch 1 (phone runtimes run one image at a
    time); int8 calibration traces it with a dynamic batch to calibrate in batches."""
    example = example_input(image_size, embedded)
    wrap = CameraInput if embedded else None
    return prepare(model, PIPELINE, example, wrap=wrap, dynamic_batch=dynamic_batch)


def export(module: nn.Module, example: torch.Tensor) -> ExportedProgram:
    """torch.export at batch 1. Not `rewrites.export_program`: it calls `.eval()`, which the unlifted
    programs `prepare` returns (and PT2E's converted ones) refuse ("Calling eval() is not supported")."""
    try:
        return torch.export.export(module, (example,), strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export of the rewritten program failed: {first_line(exc)}") from exc


def partitioner(backend: str, precision: str) -> Any:
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS17,
    )
    return CoreMLPartitioner(compile_specs=specs)


@dataclass
class Lowered:
    """A serialized program and how it was delegated."""

    buffer: bytes
    delegation: dict[str, Any]


def delegation_table(graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """Delegated / not delegated per op type and the number of delegate pieces (ExecuTorch's devtools)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    plumbing = {"getitem", "executorch_call_delegate"}
    by_op = {
        op: {"delegated": b.delegated, "not_delegated": b.non_delegated}
        for op, b in sorted(info.delegation_by_operator.items())
    }
    outside = {op: c["not_delegated"] for op, c in by_op.items() if c["not_delegated"] and op not in plumbing}
    return {
        "delegate_pieces": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "not_delegated_compute": outside,
        "by_op": by_op,
    }


def to_pte(program: ExportedProgram, backend: str, precision: str, metadata: dict[str, Any]) -> Lowered:
    """Partition, lower and serialize; the tool's metadata rides along as a constant method."""
    from executorch.exir import to_edge_transform_and_lower

    step(f"ExecuTorch lowering ({backend})")
    blob = bytearray(json.dumps(metadata, sort_keys=True).encode())
    try:
        edge = to_edge_transform_and_lower(
            program,
            partitioner=[partitioner(backend, precision)],
            constant_methods={METADATA_METHOD: torch.frombuffer(blob, dtype=torch.uint8)},
        )
        table = delegation_table(edge.exported_program().graph_module)
        buffer = edge.to_executorch().buffer
    except Exception as exc:  # lowering errors are long: keep the first line
        raise ExportError(f"ExecuTorch lowering ({backend}) failed: {first_line(exc)}") from exc
    return Lowered(bytes(buffer), table)
