"""Activation ranges as percentiles of every calibration sample's values: coremltools.optimize's W8A8
calibration offers only min/max (compress.py has the measurements). onnxruntime has Percentile
calibration of its own; for TFLite, min/max measured better (tflite/quantize.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class TailRanges:
    """Per tensor, the k smallest and k largest calibration values, k = `tail` x the tensor's values over
    all samples (at least 1: small tensors keep min/max). The range cuts `tail` of the values on either
    side, exactly, without holding every value (a tensor of width 2.0 @ 512 has millions per image)."""

    def __init__(self, samples: int, tail: float) -> None:
        self.samples, self.tail = samples, tail
        self.low: dict[str, np.ndarray] = {}
        self.high: dict[str, np.ndarray] = {}

    def add(self, name: str, value: Any) -> None:
        """One sample's values of tensor `name` (call once per sample and tensor)."""
        flat = np.asarray(value, dtype=np.float32).ravel()
        if flat.size == 0:
            return
        k = min(flat.size, max(1, math.ceil(self.tail * flat.size * self.samples)))
        low, high = np.partition(flat, k - 1)[:k], -np.partition(-flat, k - 1)[:k]
        if name in self.low:
            low = np.partition(np.concatenate([self.low[name], low]), k - 1)[:k]
            high = -np.partition(-np.concatenate([self.high[name], high]), k - 1)[:k]
        self.low[name], self.high[name] = low, high

    def range(self, name: str) -> tuple[float, float]:
        return float(self.low[name].max()), float(self.high[name].min())

    def ranges(self) -> dict[str, dict[str, float]]:
        """coremltools' form: name -> {"rmin", "rmax"}."""
        return {n: dict(zip(("rmin", "rmax"), self.range(n), strict=True)) for n in self.low}
