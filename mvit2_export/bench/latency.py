"""Wall-clock latency: warm-up, N timed runs, median and p90 (medians resist noise on shared machines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LatencyResult:
    runtime: str
    threads: int
    warmup: int
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measure_latency(
    fn: Callable[[], Any], runtime: str, threads: int, warmup: int = 5, runs: int = 20
) -> LatencyResult:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    arr = np.asarray(times)
    return LatencyResult(
        runtime,
        threads,
        warmup,
        runs,
        float(np.median(arr)),
        float(np.percentile(arr, 90)),
        float(arr.min()),
    )
