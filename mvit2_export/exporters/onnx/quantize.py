"""fp16 conversion (onnxconverter-common) and static int8 QDQ quantization (onnxruntime.quantization)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ...errors import BackendMissingError, ExportError, UsageError
from ..base import images_to_pixel_values

# Which ops to quantize, measured at width 1.0 @ 256 (random weights; agreement vs our fp32 ONNX on the 12
# parity images; ORT 1.31, 2 threads, AVX2 without VNNI, shared machine so +-20% noise):
#   QDQ U8S8 Conv/Gemm/MatMul        cosine 0.9946  top-1 10/12  1.1-1.4x faster than fp32
#   QDQ U8S8 + Mul/Add/Sigmoid       cosine 0.9923  top-1  9/12  1.4x
#   QDQ U8S8 all ops                 cosine 0.9924  top-1 10/12  1.3x
#   QOperator U8S8 Conv/Gemm/MatMul  cosine 0.9946  top-1 10/12  1.0x
#   QDQ S8S8 Conv/Gemm/MatMul        cosine 0.9940  top-1 10/12  0.7x (no VNNI: s8s8 kernels are slow)
# Quantizing the norm/softmax/attention element-wise chain costs agreement for little speed, so only the
# MAC-heavy ops are quantized, with uint8 activations (the fast u8s8 kernels on AVX2).
# Profile (quiet machine, kernel ms/run): fp32 Conv 152 of 211 total; int8 QLinearConv 83, but the
# DequantizeLinear/QuantizeLinear around the float ops cost 67 and Sigmoid*Mul loses its QuickGelu fusion, so
# Conv-only int8 is ~1.1x. backend["int8_op_types"]="all" keeps the chain in int8 (155 ms, ~1.36x) at a
# lower agreement; on this CPU (AVX2, no VNNI) QLinearConv itself is only 1.8x fp32 Conv, so 2x is out of reach.
INT8_OP_TYPES = ("Conv", "Gemm", "MatMul")


def to_fp16(proto: onnx.ModelProto, fp16_io: bool) -> onnx.ModelProto:
    """Weights and compute in fp16; IO stays fp32 unless `fp16_io` (uint8 inputs are never touched)."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise BackendMissingError("onnx (fp16)", "onnx", "missing onnxconverter-common") from exc
    proto = copy.deepcopy(proto)
    _detach_consumed_outputs(proto)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = float16.convert_float_to_float16(proto, keep_io_types=not fp16_io)
    _retarget_input_casts(out)
    return out


def _detach_consumed_outputs(proto: onnx.ModelProto) -> None:
    """keep_io_types casts each graph output back to fp32 under the output's name, so nodes that also read
    that output (the backbone's pooler reads last_hidden_state) would get fp32 where fp16 is typed. Give
    such outputs an Identity so the internal tensor and the graph output are different names."""
    graph = proto.graph
    consumed = {name for node in graph.node for name in node.input}
    for out in graph.output:
        if out.name not in consumed:
            continue
        internal = f"{out.name}__internal"
        for node in graph.node:
            node.input[:] = [internal if n == out.name else n for n in node.input]
            node.output[:] = [internal if n == out.name else n for n in node.output]
        graph.node.append(
            onnx.helper.make_node("Identity", [internal], [out.name], name=f"{out.name}__output")
        )


def _retarget_input_casts(proto: onnx.ModelProto) -> None:
    """The converter retypes every float tensor to fp16 but leaves Cast's `to` attribute alone, so the
    Cast of a uint8 input (embedded preprocessing) would still produce fp32: make it produce fp16."""
    int_inputs = {i.name for i in proto.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    for node in proto.graph.node:
        if node.op_type == "Cast" and set(node.input) & int_inputs:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16


class _ImageReader:
    """CalibrationDataReader over uint8 RGB images, fed one at a time in the model's input format."""

    def __init__(self, input_name: str, images: np.ndarray, embedded: bool) -> None:
        self._feeds = iter(
            [{input_name: im[None] if embedded else images_to_pixel_values(im[None])} for im in images]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the CalibrationDataReader protocol; a single pass is all we need
        pass


def resolve_op_types(backend: dict[str, Any]) -> list[str] | None:
    """backend["int8_op_types"]: a list of ONNX op types, or "all" (None: every op the quantizer supports)."""
    value = backend.get("int8_op_types", list(INT8_OP_TYPES))
    if value == "all":
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(f"int8_op_types must be 'all' or a list of ONNX op types, got {value!r}")
    return list(value)


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    input_name: str,
    images: np.ndarray,
    embedded: bool,
    op_types: list[str] | None = list(INT8_OP_TYPES),  # noqa: B006 - never mutated
) -> dict[str, Any]:
    """Static QDQ, per-channel weights, MinMax calibration. Intermediates go next to `out_path`
    (inside the exporter's atomic temp dir). Returns the settings used, for the manifest."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre_path = out_path.with_name("preprocessed.onnx")
    reader = type("Reader", (_ImageReader, CalibrationDataReader), {})(input_name, images, embedded)
    settings: dict[str, Any] = {
        "quant_format": "QDQ",
        "per_channel": True,
        "activation_type": "QUInt8",
        "weight_type": "QInt8",
        "calibrate_method": "MinMax",
        "op_types_to_quantize": op_types if op_types is not None else "all",
        "calibration_images": len(images),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=False)
            quantize_static(
                str(pre_path),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=op_types,
            )
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    return settings
