"""Parity thresholds per precision, stated in one place.

fp32: max abs diff <= 1e-4 x max|reference| (per output).
fp16: cosine >= 0.9999 and top-1 agreement 100% (classification) / pixel agreement >= 99% (segmentation).
int8: top-1 agreement >= 99% on a trained model (tests: the trained fixture, mvit2_export/fixture.py). On
      untrained (random) weights, top-1 of int8 is noise, so int8 numbers are reported without gating.
Compressed Core ML weights (int8/palettized) report their numbers under the int8 rule.
Degenerate references: when an output of the PyTorch reference is (near) zero everywhere, or the same for
every input, no comparison means anything (transformers' default init gives such outputs): parity says so,
with its own status and exit code (9), instead of a pass (max abs 0, cosine 1) or a fail on denormals.
"""

from __future__ import annotations

from typing import Any

THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_rel": 1e-4},
    "fp16": {"cosine": 0.9999, "top1": 1.0, "pixel_agreement": 0.99},
    "int8": {"top1": 0.99, "pixel_agreement": 0.95},
}


# A reference output whose max |value| is below this (absolute), or whose values do not change across the
# parity inputs by more than this fraction of its scale, is degenerate. Trained and randomised MobileViTV2
# outputs are O(0.1..10); transformers' default init gives exact zeros or ~1e-30.
DEGENERATE_SCALE = 1e-6
DEGENERATE_SPREAD = 1e-6


def thresholds_for(precision: str) -> dict[str, Any]:
    return dict(THRESHOLDS["int8" if precision not in THRESHOLDS else precision])
