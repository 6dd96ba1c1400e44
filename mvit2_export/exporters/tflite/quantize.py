"""fp16 / int8 from the fp32 flatbuffer with ai-edge-quantizer (no re-conversion, no hand-written quantizer).

Why ai-edge-quantizer rather than litert-torch's PT2E quantizer: it works on the already-converted,
already-optimised TFLite graph, so the int8 model has exactly the fp32 model's op structure (no
TRANSPOSE/GATHER come back, the norm-affine fold and fused SOFTMAX stay), the fp32 conversion is reused
(conversion is the slow step), and calibration runs in LiteRT on NHWC inputs, the artifact's own form.
See benchmarks/RESULTS-tflite.md for the measured comparison.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from ...errors import ExportError, UsageError

INT8_MODES = ("static", "dynamic")


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
    return bytes(out)


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
    """static: int8 weights and activations (float I/O kept, calibrated min/max); dynamic: int8 weights,
    activations quantized per inference by the kernels (no calibration)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    qt = quantizer.Quantizer(bytearray(flatbuffer))
    if mode == "dynamic":
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        return _run(qt, None), {"int8_mode": mode, "quantizer": "ai-edge-quantizer dynamic_wi8_afp32"}
    assert calib is not None
    qt.add_static_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8,
        weight_num_bits=8,
    )
    feeds = [{input_name: x} for x in pixel_feeds(calib, embedded)]
    info = {
        "int8_mode": mode,
        "quantizer": "ai-edge-quantizer static_wi8_ai8 (min/max, per-channel weights)",
        "calibration_images": len(feeds),
    }
    return _run(qt, {signature: feeds}), info
