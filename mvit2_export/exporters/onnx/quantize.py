"""fp16 conversion (onnxconverter-common) and static int8 QDQ quantization (onnxruntime.quantization)."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ...errors import BackendMissingError, ExportError, UsageError, first_line
from ...model.preprocess import images_to_pixel_values

# Why int8 failed on trained weights (33% top-1, cosine 0.46 on the first 128 px fixture): onnxruntime's
# u8s8 kernels on x86 without VNNI (this AMD EPYC: AVX2 only) use VPMADDUBSW, which adds two u8 x s8
# products into a saturating int16; trained weights use the full s8 range and 2 x 255 x 127 > 32767, so
# QLinearConv saturates. The same QDQ graph run as float (ORT_DISABLE_ALL, no int8 kernels) agreed 12/12
# at cosine 0.9998. Fix: 7-bit weights (reduce_range), the workaround onnxruntime and OpenVINO document.
# Graph outputs stay float (their producers are excluded): the logits are what users read.
#
# Measured: agreement vs our fp32 ONNX on the trained fixture (width 0.5 @ 64: cosine and top-1 on the 12
# parity images, top-1 on 1000 held-out crops) and speed at width 1.0 @ 256 (fp32 ms / int8 ms, ORT 1.31,
# median of interleaved rounds, 1 thread CPU time / 2 threads wall; AVX2 without VNNI, shared machine):
#   option (QDQ, per-channel weights, MinMax on the photos)  cosine  parity  held-out  speed 1T / 2T
#   u8s8 Conv/Gemm/MatMul (before)                           0.9888  0.917   0.903     1.08x / 1.07x
#   s8s8 Conv/Gemm/MatMul                                    0.9933  1.000   0.958     0.69x / 0.68x
#   u8u8 Conv/Gemm/MatMul                                    0.9976  1.000   0.967     0.92x / 0.90x
#   u8s8 7-bit weights, Conv/Gemm/MatMul                     0.9986  1.000   0.977     1.05x / 1.07x
#   u8s8 7-bit weights, + Mul/Add/Sigmoid (default)          0.9986  1.000   0.974     1.30x / 1.32x
#   same + Split/Relu/Reshape/Transpose/DepthToSpace         0.9458  0.917   0.929     1.32x / 1.26x
#   u8s8 7-bit weights, every op                             0.9453  1.000   0.930     1.33x / 1.34x
#   default, Entropy calibration                             0.9986  1.000   0.974     -
#   default, Percentile 99.999                               0.9990  1.000   0.969     -
#   default, + 64 random crops in calibration                0.9984  1.000   0.965     -
#   default, ActivationSymmetric                             0.9980  1.000   0.941     -
#   default, CalibMovingAverage                              0.9872  0.917   0.953     -
# A quantized Split puts Q/DQ on both sides of the attention's Softmax, which onnxruntime then fuses into
# QLinearSoftmax: the int8 softmax over patches costs the cosine 0.9985 -> 0.946 (the same QDQ graph run
# in float keeps 0.9985), so Split stays float. LayerNormalization, Softmax and the reductions stay float
# (no int8 kernels, or a worse one: Q/DQ around them only adds work). Held-out crops are where the 69%-accurate
# fixture is nearly tied; every option flips 2-10% of them. On this CPU int8 GEMM is at best ~1.8x fp32,
# so the 2x target needs VNNI/AMX.
INT8_OP_TYPES = ("Conv", "Gemm", "MatMul", "Mul", "Add", "Sigmoid")
# The second recipe searched when no configuration of the first holds the gate (as TFLite's and
# ExecuTorch's): only these int8, every element-wise op float.
CONV_OP_TYPES = ("Conv", "Gemm", "MatMul")


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
    """CalibrationDataReader over uint8 RGB images, fed one at a time in the model's input format;
    `set_range` serves onnxruntime's strided calibration (a chunk of images per pass)."""

    def __init__(self, input_name: str, images: np.ndarray, embedded: bool) -> None:
        self._all = [
            {input_name: im[None] if embedded else images_to_pixel_values(im[None])} for im in images
        ]
        self._feeds = iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feeds = iter(self._all[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the CalibrationDataReader protocol; a single pass is all we need
        pass


# Activation ranges: onnxruntime's Percentile calibration at 99.999 (0.0005% of each tensor's values cut
# on each side, from a 2048-bin histogram), not MinMax. Trained fixture (width 0.5 @ 128), all-int8
# top-1 agreement with fp32: 500 held-out crops MinMax 0.978, Percentile 99.99 0.980, 99.999 0.990,
# Entropy 0.978; 1000 other crops MinMax 0.976, 99.99 0.980, 99.999 0.988, 99.9999 0.986. The histogram
# calibrator holds every intermediate tensor of the images it is given, so it is given CALIB_STRIDE at a
# time (onnxruntime's CalibStridedMinMax, which any calibrator honours) and merges their histograms.
PERCENTILE = 99.999
CALIB_STRIDE = 8


def calibration_stride(n: int) -> int:
    """The largest divisor of `n` up to CALIB_STRIDE (onnxruntime requires the chunks to divide the set)."""
    return max(d for d in range(1, min(n, CALIB_STRIDE) + 1) if n % d == 0)


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


def output_producers(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes that write graph outputs: left in float so the outputs are not quantized."""
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if outputs & set(n.output)]


def reduce_range_for(isa: str) -> bool:
    """7-bit weights only where u8s8 kernels sum in saturating int16 (x86 without VNNI: see above)."""
    return isa == "x86-avx2"


class OnnxInt8:
    """Static QDQ int8 of one fp32 model, quantized as often as the mixed-precision search asks: pre-
    processing and calibration run once (onnxruntime's calibration cache), each `quantize(float_nodes)`
    only re-inserts Q/DQ. Files go in `workdir` (inside the exporter's atomic temp dir)."""

    def __init__(
        self,
        fp32_path: Path,
        workdir: Path,
        input_name: str,
        images: np.ndarray,
        embedded: bool,
        op_types: list[str] | None,
        isa: str,
    ) -> None:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.workdir, self.input_name, self.images, self.embedded = workdir, input_name, images, embedded
        self.op_types, self.isa = op_types, isa
        self._numbers = itertools.count()
        self.pre_path = workdir / "preprocessed.onnx"
        self.cache = workdir / "calibration.json"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(fp32_path), str(self.pre_path), skip_symbolic_shape=False)
        except Exception as exc:
            raise ExportError(f"int8 pre-processing failed: {first_line(exc)}") from exc
        self.pre = onnx.load(str(self.pre_path), load_external_data=False)
        self.outputs_float = output_producers(self.pre)
        self.settings: dict[str, Any] = {
            "quant_format": "QDQ",
            "per_channel": True,
            "activation_type": "QUInt8",
            "weight_type": "QInt8",
            "int8_isa": isa,
            "reduce_range": reduce_range_for(isa),
            "calibrate_method": f"Percentile {PERCENTILE}",
            "op_types_to_quantize": op_types if op_types is not None else "all",
            "calibration_images": len(images),
            "float_nodes": self.outputs_float,
        }

    def _reader(self, images: np.ndarray) -> Any:
        from onnxruntime.quantization import CalibrationDataReader

        return type("Reader", (_ImageReader, CalibrationDataReader), {})(
            self.input_name, images, self.embedded
        )

    def quantize(self, float_nodes: list[str]) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        out = self.workdir / f"int8-{next(self._numbers)}.onnx"  # a new file per configuration
        extra = {"CalibPercentile": PERCENTILE, "CalibStridedMinMax": calibration_stride(len(self.images))}
        try:
            # the histogram calibrator prints progress to stdout: the CLI's output is ours alone
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                quantize_static(
                    str(self.pre_path),
                    str(out),
                    self._reader(self.images),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    reduce_range=reduce_range_for(self.isa),
                    calibrate_method=CalibrationMethod.Percentile,
                    op_types_to_quantize=self.op_types,
                    nodes_to_exclude=self.outputs_float + list(float_nodes),
                    calibration_cache_path=str(self.cache),
                    extra_options=extra,
                )
        except Exception as exc:
            raise ExportError(f"int8 quantization failed: {first_line(exc)}") from exc
        return out

    def quantizable_nodes(self, only: tuple[str, ...] | None = None) -> list[str]:
        """The nodes the quantizer would quantize (of the op types `only`, if given), in execution order
        (the search's layer groups)."""
        kinds = set(self.op_types) if self.op_types is not None else None
        if only is not None:
            kinds = set(only) & kinds if kinds is not None else set(only)
        return [
            n.name
            for n in self.pre.graph.node
            if (kinds is None or n.op_type in kinds) and n.name not in self.outputs_float
        ]
