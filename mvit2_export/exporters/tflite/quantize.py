"""fp16 / int8 from the fp32 flatbuffer with ai-edge-quantizer (no re-conversion, no hand-written quantizer).

Why ai-edge-quantizer rather than litert-torch's PT2E quantizer: it works on the already-converted,
already-optimised TFLite graph, so the int8 model has exactly the fp32 model's op structure, the fp32
conversion is reused (conversion is the slow step), and calibration runs in LiteRT on NHWC inputs, the
artifact's own form. Measured on the trained fixture (table below), PT2E is also worse: XNNPACK computes
its graph wrongly and it is slower than fp32.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Any

import numpy as np

from ...errors import ExportError, UsageError
from ..base import default_threads
from .flatbuffer import _builtin_names, repair_signature_outputs

INT8_MODES = ("static", "dynamic")

# Why static int8 failed on trained weights (58% top-1, cosine 0.63 on the first 128 px fixture); three
# causes, each measured:
# 1. Quantizer.calibrate() merges per-image min/max with an exponential moving average (factor 0.95): over
#    ten images the ranges are mostly the first image's and the other images clip. The library's own
#    Calibrator with qsv_utils.min_max_update takes the true extremes.
# 2. Kernels: with int8 MEAN in this graph XNNPACK's result is wrong (cosine 0.54 where the builtin
#    kernels give 0.9986; each MEAN cut out alone agrees, so it is a delegate graph-level issue), and the
#    reference kernels' int8 SUM over axes (1, 3) of the rank-6 patch tensors is wrong alone (off by up
#    to 240 steps). int8 DIV aborts when the calibrated denominator range contains zero. These stay float.
# 3. Accuracy: the normalisation statistics, (x - mean)^2 -> mean -> + eps -> rsqrt -> x * rsqrt, lose
#    the most in int8 (squares span a wide range); they stay float, found by graph structure.
#
# Measured: agreement vs our fp32 .tflite on the trained fixture (width 0.5 @ 64: cosine and top-1 on the 12
# parity images, top-1 on 1000 held-out crops; XNNPACK) and speed at width 1.0 @ 256 (fp32 ms / int8 ms,
# XNNPACK, median of 7 interleaved rounds, 1 thread CPU time / 2 threads wall; AVX2 without VNNI, shared):
#   option                                           cosine  parity  held-out  speed 1T / 2T
#   all ops, Quantizer.calibrate (before)             0.8173  0.750   0.409     1.08x / 1.08x
#   all but MEAN/SUM/DIV, moving-average ranges       0.8117  0.750   0.362     -
#   all but MEAN/SUM/DIV, true min/max                0.9951  1.000   0.916     1.08x / 1.11x
#   + normalisation statistics float (default)       0.9976  1.000   0.959     1.11x / 1.10x
#   CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED only    0.9976  1.000   0.965     0.96x / 0.91x
#   litert-torch PT2E, symmetric per-channel          0.9953  1.000   0.906     0.96x / -
# PT2E leaves 94 QUANTIZE/DEQUANTIZE pairs around float element-wise ops, and on the 128 px fixture
# XNNPACK computed its graph wrongly (cosine -0.06; builtin kernels 0.9923). int8 is barely faster than
# fp32 here because XNNPACK's int8 convolutions on AVX2 without VNNI run at fp32 speed (a 128->128 1x1
# conv at 128x128: 4.45 ms int8, 4.60 ms fp32); the 2x target needs VNNI or ARM dot-product kernels.
# Held-out crops are where the 69%-accurate fixture is nearly tied: ONNX int8 agrees on 97.4% of them.
FLOAT_OPS = ("MEAN", "SUM", "DIV")
# The second recipe searched when no configuration of the all-int8 one holds the gate (as ExecuTorch's):
# only the convolutions and fully-connected layers int8, every element-wise op float.
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ALL_INT8 = "every op but " + "/".join(FLOAT_OPS) + " and the normalisation statistics"  # the first recipe
# Percentile activation ranges (as ONNX and Core ML use) were measured here and not kept. Trained fixture
# (width 0.5 @ 128), cutting 0.0005% of each tensor's values per side: all-int8 agreement on the gate's
# 500 held-out crops / 500 other / 1000 other 0.984 / 0.986 / 0.987 against min/max's 0.974 / 0.984 /
# 0.975, but the search then stalled (1, 2, 3, 4, 6 groups float: 0.984, 0.976, 0.986, 0.988, 0.988:
# refused at 0.99), where min/max meets the gate with 6 groups float (0.996): clipped ranges in the groups
# still int8 cost what keeping the sensitive groups float cannot win back.


def int8_mode(backend: dict[str, Any]) -> str:
    mode = str(backend.get("int8_mode", "static"))
    if mode not in INT8_MODES:
        raise UsageError(f"unknown int8_mode {mode!r} (expected one of: {', '.join(INT8_MODES)})")
    return mode


def _run(qt: Any, calibration: dict[str, list[dict[str, np.ndarray]]] | None) -> bytes:
    with contextlib.redirect_stdout(io.StringIO()):  # the quantizer prints a per-op report table
        result = qt.calibrate(calibration) if calibration else None
        out = qt.quantize(result, enable_progress_report=False).quantized_model
    if out is None:
        raise ExportError("ai-edge-quantizer produced no model")
    return repair_signature_outputs(bytes(out))


def to_fp16(flatbuffer: bytes) -> bytes:
    """fp16 weights (FLOAT_CASTING, weight-only): float compute; XNNPACK may run it in fp16 where supported."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    qt = quantizer.Quantizer(bytearray(flatbuffer))
    qt.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    return _run(qt, None)


def pixel_feeds(images: np.ndarray, embedded: bool) -> list[np.ndarray]:
    """uint8 RGB [N,H,W,3] -> the artifact's batch-1 NHWC inputs (uint8 RGB, or float32 BGR in [0,1])."""
    if embedded:
        return [np.ascontiguousarray(im[None]) for im in images]
    x = images[..., ::-1].astype(np.float32) / np.float32(255.0)
    return [np.ascontiguousarray(im[None]) for im in x]


def to_int8(
    flatbuffer: bytes, mode: str, signature: str, input_name: str, calib: np.ndarray | None, embedded: bool
) -> tuple[bytes, dict[str, Any]]:
    """static: int8 weights, activations and I/O (the runner quantizes the input), ranges from the
    calibration images; dynamic: int8 weights, activations quantized per inference by the kernels."""
    if mode == "dynamic":
        from ai_edge_quantizer import quantizer, recipe

        qt = quantizer.Quantizer(bytearray(flatbuffer))
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        return _run(qt, None), {"int8_mode": mode, "quantizer": "ai-edge-quantizer dynamic_wi8_afp32"}
    assert calib is not None
    q = StaticInt8(flatbuffer, signature, input_name, calib, embedded)
    return q.quantize([]), q.info


class StaticInt8:
    """Static int8 of one fp32 flatbuffer, as often as the mixed-precision search asks: calibration runs
    once (for the all-int8 recipe, whose tensors are a superset of any recipe with more float ops);
    `quantize(float_ops)` adds a `no_quantize` rule for those ops (named by their output tensors)."""

    def __init__(
        self, flatbuffer: bytes, signature: str, input_name: str, calib: np.ndarray, embedded: bool
    ) -> None:
        self.flatbuffer = flatbuffer
        self.stats = normalisation_statistics(flatbuffer)
        feeds = [{input_name: x} for x in pixel_feeds(calib, embedded)]
        self.images = calib
        self.info: dict[str, Any] = {
            "int8_mode": "static",
            "quantizer": "ai-edge-quantizer static_wi8_ai8 (true min/max, per-channel weights)",
            "float_ops": list(FLOAT_OPS),
            "float_normalisation_ops": len(self.stats),
            "calibration_images": len(feeds),
        }
        qt = self._quantizer([])
        noise = io.StringIO()  # a per-op report (stdout) and a tqdm bar (stderr) the CLI has its own for
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise), warnings.catch_warnings():
            # the calibrator keeps every tensor on purpose; LiteRT warns that this is a debugging mode
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            self.ranges = _min_max_ranges(flatbuffer, qt, {signature: feeds})

    def _quantizer(self, float_ops: list[str]) -> Any:
        from ai_edge_quantizer import qtyping, quantizer

        qt = quantizer.Quantizer(bytearray(self.flatbuffer))
        qt.add_static_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            activation_num_bits=8,
            weight_num_bits=8,
        )
        for op in FLOAT_OPS:  # later rules win: these ops keep float kernels (Q/DQ around them)
            qt.update_quantization_recipe(
                regex=".*", operation_name=getattr(qtyping.TFLOperationName, op), algorithm_key="no_quantize"
            )
        names = [*self.stats, *float_ops]
        if names:  # an op's scope is its output tensor names joined and ended by ";"
            qt.update_quantization_recipe(
                regex="^(" + "|".join(re.escape(n) for n in names) + ");$",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                algorithm_key="no_quantize",
            )
        return qt

    def quantize(self, float_ops: list[str]) -> bytes:
        qt = self._quantizer(float_ops)
        with contextlib.redirect_stdout(io.StringIO()):
            out = qt.quantize(self.ranges, enable_progress_report=False).quantized_model
        if out is None:
            raise ExportError("ai-edge-quantizer produced no model")
        return repair_signature_outputs(bytes(out))

    def quantizable_ops(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """Output tensor names of the ops the all-int8 recipe quantizes (of `kinds` only, if given), in
        execution order."""
        from ai_edge_litert.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model_from_bytearray(bytearray(self.flatbuffer))
        names = _builtin_names()
        codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode)) for c in model.operatorCodes]
        graph = model.subgraphs[0]
        skip = set(self.stats)
        out = []
        for op in graph.operators:
            code = codes[op.opcodeIndex]
            if code in FLOAT_OPS or len(op.outputs) != 1 or (kinds is not None and code not in kinds):
                continue
            name = _name(graph.tensors[op.outputs[0]].name)
            if name not in skip:
                out.append(name)
        return out


def normalisation_statistics(flatbuffer: bytes) -> list[str]:
    """Output tensor names of each normalisation's statistics chain: MUL(d, d) -> MEAN -> ADD -> RSQRT
    -> MUL(d, rsqrt), where d = x - mean (the element-wise GroupNorm/LayerNorm of the tflite pipeline)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    names = _builtin_names()
    codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode)) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    readers: dict[int, list[Any]] = {}
    for op in graph.operators:
        for t in op.inputs:
            readers.setdefault(int(t), []).append(op)

    def next_op(op: Any, kind: str) -> Any:
        found = [r for r in readers.get(int(op.outputs[0]), []) if codes[r.opcodeIndex] == kind]
        return found[0] if len(found) == 1 else None

    chains = []
    for op in graph.operators:
        if codes[op.opcodeIndex] != "MUL" or len(op.inputs) != 2 or op.inputs[0] != op.inputs[1]:
            continue
        chain = [op]
        for kind in ("MEAN", "ADD", "RSQRT", "MUL"):
            nxt = next_op(chain[-1], kind)
            if nxt is None:
                break
            chain.append(nxt)
        if len(chain) == 5 and op.inputs[0] in chain[-1].inputs:  # x * rsqrt(var) of the same d
            chains.extend(chain)
    return [_name(graph.tensors[op.outputs[0]].name) for op in chains]


def _name(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _min_max_ranges(flatbuffer: bytes, qt: Any, data: dict[str, list[dict[str, np.ndarray]]]) -> Any:
    """Activation ranges over the whole calibration set. Quantizer.calibrate() keeps an exponential moving
    average (0.95) of per-image min/max, so with ten images the ranges are mostly the first image's and
    the others clip; the library's own Calibrator with its min_max_update takes the true extremes."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(qt.get_quantization_recipe())
    calib = calibrator.Calibrator(
        flatbuffer, num_threads=default_threads(), qsv_update_func=qsv_utils.min_max_update
    )
    calib.calibrate(data, manager)
    return calib.get_model_qsvs()
