"""Attention audit of an exported artifact's op histogram.

The separable attention must lower to element-wise ops: no matrix multiplies (Gemm/FullyConnected are
allowed, for projections and the classifier), no im2col/col2im, no gathers, no expands, no unfused
normalisation that a backend should have folded. TRANSPOSE is counted (TFLite wants <= 2 in the graph).
"""

from __future__ import annotations

from typing import Any

from .exporters.base import Exporter


def audit_histogram(exporter: type[Exporter] | Exporter, histogram: dict[str, int]) -> dict[str, Any]:
    """The audit of one artifact, by the forbidden ops and transpose limit its exporter declares."""
    forbidden = exporter.forbidden_ops
    violations = {op: n for op, n in sorted(histogram.items()) if op in forbidden and n}
    op = exporter.transpose_op
    transposes = int(histogram.get(op, 0)) if op else 0
    limit = exporter.max_transposes
    if op and limit is not None and transposes > limit:
        violations[op] = transposes
    return {
        "elementwise_attention": not violations,
        "violations": violations,
        "transpose_count": transposes,
        "forbidden": sorted(forbidden),
    }
