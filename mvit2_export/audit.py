"""Attention audit of an exported artifact's op histogram.

The separable attention must lower to element-wise ops: no matrix multiplies (Gemm/FullyConnected are
allowed, for projections and the classifier), no im2col/col2im, no gathers, no expands, no unfused
normalisation that a backend should have folded. TRANSPOSE is counted (TFLite wants <= 2 in the graph).
"""

from __future__ import annotations

from typing import Any

FORBIDDEN: dict[str, set[str]] = {
    "onnx": {
        "MatMul",
        "Einsum",
        "Col2Im",
        "Gather",
        "GatherElements",
        "GatherND",
        "Expand",
        "InstanceNormalization",
    },
    "coreml": {
        "matmul",
        "einsum",
        "gather",
        "gather_nd",
        "gather_along_axis",
        "batch_norm",
        "col2im",
        "im2col",
    },
    "tflite": {"BATCH_MATMUL", "GATHER", "GATHER_ND", "BROADCAST_TO", "EINSUM"},
}
TRANSPOSE_OPS = {"onnx": "Transpose", "coreml": "transpose", "tflite": "TRANSPOSE"}
MAX_TRANSPOSE = {"tflite": 2}


def audit_histogram(target: str, histogram: dict[str, int]) -> dict[str, Any]:
    violations = {op: n for op, n in sorted(histogram.items()) if op in FORBIDDEN[target] and n}
    transposes = int(histogram.get(TRANSPOSE_OPS[target], 0))
    limit = MAX_TRANSPOSE.get(target)
    if limit is not None and transposes > limit:
        violations[TRANSPOSE_OPS[target]] = transposes
    return {
        "elementwise_attention": not violations,
        "violations": violations,
        "transpose_count": transposes,
        "forbidden": sorted(FORBIDDEN[target]),
    }
