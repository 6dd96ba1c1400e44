"""Reference model -> rewritten ATen program -> simplified, checked fp32 ONNX graph.

Exporter choice: torch.onnx dynamo (opset 18). Measured on MobileViTV2 width 1.0 @ 256 after the "onnx"
rewrite pipeline (torch 2.13, onnxruntime 1.31 CPU, 2 threads, ORT_ENABLE_ALL, shared 2-core AMD EPYC):
    dynamo opset 18:      267 nodes raw, 267 after onnxslim;      ORT median 501 / 590 ms (raw / slim)
    TorchScript opset 17: 403 nodes raw (94 Constant, Shape/Slice/Concat/Mod batch plumbing), 267 after
                          onnxslim (same op histogram as dynamo); ORT median 552 / 483 ms
After simplification the graphs are identical, so latency differs only by machine noise (+-20% here).
Dynamo wins on the raw graph (clean without any simplifier, so no dependence on onnxslim's folding) and
is the maintained path (the TorchScript exporter is deprecated since torch 2.9; it also needs
ep.module() re-wrapped because the unlifted module refuses .train()). Its cost is export time:
~9 s CPU vs ~1.3 s for TorchScript on a width-0.5 model, which is why fp32/fp16/int8 share one trace.

Simplifier choice: onnxslim. On the dynamo graph (width 1.0 @ 256) onnxslim 0.1.98 and onnxsim 0.8.1
both give 267 nodes with the same histogram (3.2 s vs 0.5 s) and the same latency within noise
(interleaved medians 528 vs 511 ms, raw 524 ms). onnxslim is a declared dependency of the `onnx`
extra (onnxsim is not, and is a native build on some platforms), and it still matters for graphs the
dynamo optimiser leaves unfolded (e.g. segmentation: 283 -> 281 nodes).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ...errors import ExportError, first_line
from ...model.preprocess import EmbeddedPreprocessing
from ...progress import step
from ...rewrites import Prepared, prepare
from .shrink_constants import shrink_uniform_norm_params

BATCH_DIM = "batch"


@dataclass
class Fp32Graph:
    proto: onnx.ModelProto
    rewrites: list[dict[str, Any]]
    input_name: str
    output_names: list[str]


def example_input(image_size: int, embedded: bool) -> torch.Tensor:
    if embedded:
        return torch.randint(0, 256, (1, image_size, image_size, 3), dtype=torch.uint8)
    return torch.rand(1, 3, image_size, image_size)


def prepared(model: nn.Module, image_size: int, embedded: bool) -> Prepared:
    """The `onnx`-rewritten program this exporter lowers (dynamic batch; preprocessing wrapped in when
    embedded): the one `check --localize` compares against."""
    return prepare(
        model,
        "onnx",
        example_input(image_size, embedded),
        wrap=EmbeddedPreprocessing if embedded else None,
        dynamic_batch=True,
    )


def fp32_graph(model: nn.Module, image_size: int, embedded: bool, opset: int) -> Fp32Graph:
    """The simplified fp32 graph, built once per prepared program and opset (fp32, fp16 and int8 of one
    model share it; tracing and the dynamo exporter dominate export time)."""
    program = prepared(model, image_size, embedded)
    key = ("onnx-fp32", opset)
    if key not in program.derived:
        input_name = "images" if embedded else "pixel_values"
        output_names = list(model.output_names)
        # Not re-exported after the rewrites: the ONNX exporter runs torch.export on the module itself.
        step("dynamo ONNX exporter")
        proto = torch_to_onnx(program.module, program.example, input_name, output_names, opset)
        step("onnxslim")
        proto = simplify(proto)
        shrink_uniform_norm_params(proto)  # on the final graph: all-ones LayerNorm scales become one value
        name_batch_dim(proto)
        step("onnx.checker")
        check(proto)
        program.derived[key] = Fp32Graph(proto, program.rewrites, input_name, output_names)
    return copy.deepcopy(program.derived[key])  # callers convert and annotate their own copy


def torch_to_onnx(
    module: torch.nn.Module, x: torch.Tensor, input_name: str, output_names: list[str], opset: int
) -> onnx.ModelProto:
    """The dynamo exporter (dynamic batch) on the rewritten module; returns one self-contained ModelProto."""
    from ...rewrites.export import dynamic_batch_example

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    args, shapes = dynamic_batch_example(x)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                args,
                dynamic_shapes=shapes,
                dynamo=True,
                input_names=[input_name],
                output_names=output_names,
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; report one line
        raise ExportError(f"torch.onnx.export failed: {first_line(exc)}") from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    # Round-trip through a private temp dir: torch may write weights as external data; onnx.load folds
    # them back into the proto so the artifact is always a single file.
    with tempfile.TemporaryDirectory(prefix="mvit2-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        program.save(str(path))
        proto = onnx.load(str(path), load_external_data=True)
    for init in proto.graph.initializer:
        init.data_location = onnx.TensorProto.DEFAULT
        del init.external_data[:]
    return proto


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim: constant folding, dead-code and shape-op elimination, pattern fusion."""
    import onnxslim

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(proto)
    except Exception as exc:
        raise ExportError(f"onnxslim failed: {first_line(exc)}") from exc
    return slim if isinstance(slim, onnx.ModelProto) else proto


def name_batch_dim(proto: onnx.ModelProto) -> None:
    """Rename the exporter's batch symbol (e.g. "s77") to "batch" everywhere it appears."""
    graph = proto.graph
    dim0 = graph.input[0].type.tensor_type.shape.dim[0]
    old = dim0.dim_param
    if not old or old == BATCH_DIM:
        return
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param == old:
                d.dim_param = BATCH_DIM


def check(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the ONNX graph failed onnx.checker: {first_line(exc)}") from exc
