"""int8 for the XNNPACK delegate with its own PT2E quantizer (XNNPACKQuantizer: per-channel symmetric
int8 weights, per-tensor affine int8 activations). `quantize(float_nodes)` and `quantizable_nodes()`
are what exporters/int8_search.py needs to search mixed precision; the exporter runs all-int8 only
today (the search's cost is measured in exporter._int8).

Why PT2E and not a quantizer of our own: it is the quantizer the XNNPACK delegate is built for; its
quantized patterns (conv + activation, add, mul, pooling) are what the partitioner turns into XNNPACK's
int8 kernels. The int8 ISA does not change anything here: XNNPACK's int8 kernels accumulate in int32
on every ISA (no 7-bit weights needed), so `--int8-isa` is only recorded.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import ExportedProgram

from ...errors import ExportError, first_line
from ...model.preprocess import images_to_pixel_values
from .lower import export

CALIBRATION_BATCH = 16


def export_batched(module: nn.Module, example: torch.Tensor) -> ExportedProgram:
    """`module` traced with a dynamic batch dimension (the lowered program is batch 1: `export`)."""
    from ...rewrites.export import dynamic_batch_example

    args, shapes = dynamic_batch_example(example)
    try:
        return torch.export.export(module, args, dynamic_shapes=shapes, strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export of the rewritten program failed: {first_line(exc)}") from exc


def model_inputs(images: np.ndarray, embedded: bool) -> list[torch.Tensor]:
    """uint8 RGB [B,H,W,3] -> one batch-1 input per image, as the program takes it."""
    if embedded:
        return [torch.from_numpy(np.ascontiguousarray(im[None], dtype=np.uint8)) for im in images]
    x = images_to_pixel_values(np.asarray(images, dtype=np.uint8))
    return [torch.from_numpy(x[i : i + 1]) for i in range(len(x))]


def _quantizer(float_nodes: set[str]) -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    class PartialQuantizer(XNNPACKQuantizer):
        """XNNPACK's annotations, minus those of the nodes the search keeps in float."""

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.name in float_nodes:
                    node.meta.pop("quantization_annotation", None)
            return model

    q = PartialQuantizer()
    q.set_global(get_symmetric_quantization_config(is_per_channel=True))
    return q


class PT2EInt8:
    """Calibrate-and-convert for any set of float nodes, from one captured graph."""

    def __init__(self, module: nn.Module, example: torch.Tensor, images: np.ndarray, embedded: bool) -> None:
        self.module = module
        self.example = example
        self.embedded = embedded
        self.images = images  # uint8 RGB calibration images (the search ranks on them too)
        self.inputs = model_inputs(images, embedded)
        # Captured with a dynamic batch so calibration runs in batches: PT2E's observed graph runs
        # node by node in Python (~1.4 s per 128 px image at batch 1 on 2 cores, measured).
        self.captured = export_batched(module, example).module()
        self.settings: dict[str, Any] = {
            "quantizer": "XNNPACKQuantizer (PT2E, torchao)",
            "weights": "int8 symmetric per channel",
            "activations": "int8 affine per tensor",
            "calibration_images": len(images),
        }

    def quantizable_nodes(self) -> list[str]:
        """The nodes XNNPACK's quantizer annotates, in execution order."""
        gm = copy.deepcopy(self.captured)
        _quantizer(set()).annotate(gm)
        return [
            n.name for n in gm.graph.nodes if "quantization_annotation" in n.meta and n.op == "call_function"
        ]

    def quantize(self, float_nodes: list[str]) -> ExportedProgram:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        try:
            observed = prepare_pt2e(copy.deepcopy(self.captured), _quantizer(set(float_nodes)))
            with torch.no_grad():
                for i in range(0, len(self.inputs), CALIBRATION_BATCH):
                    observed(torch.cat(self.inputs[i : i + CALIBRATION_BATCH]))
            converted = convert_pt2e(observed)
        except Exception as exc:
            raise ExportError(f"XNNPACK PT2E quantization failed: {first_line(exc)}") from exc
        return export(converted, self.example)
