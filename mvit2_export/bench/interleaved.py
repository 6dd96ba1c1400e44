"""Latency of several runners measured in interleaved rounds, so a burst of load from another process hits
all of them alike (the benchmarks quote only ratios within one run)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .latency import LatencyResult


class Timed(Protocol):
    backend: str
    fn: Callable[[], Any] | None
    latency: LatencyResult | None


@dataclass
class Row:
    """One runner of a benchmark: what it is (backend, precision, role beside the others), how to call it
    once, and its latency once measured."""

    case: str
    backend: str  # pytorch, onnx, tflite, coreml
    name: str
    precision: str
    role: str  # reference, baseline, ours
    fn: Callable[[], Any] | None = None
    export_s: float | None = None
    size_mb: float | None = None
    note: str = ""
    latency: LatencyResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def interleaved_latency(rows: Sequence[Timed], threads: int, runs: int, rounds: int, warmup: int) -> None:
    """Each round runs every row (rotated order): 1 warm-up call (+`warmup` in round 0), then its share of
    `runs`. Sets each row's `latency`: median and p90 over all pooled timed calls."""
    timed = [r for r in rows if r.fn is not None]
    per_round = max(1, math.ceil(runs / rounds))
    times: dict[int, list[float]] = {id(r): [] for r in timed}
    for rnd in range(rounds):
        shift = rnd % len(timed)
        for row in [*timed[shift:], *timed[:shift]]:
            fn = row.fn
            assert fn is not None
            for _ in range(1 + (warmup if rnd == 0 else 0)):
                fn()
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[id(row)].append((time.perf_counter() - t0) * 1e3)
    for row in timed:
        arr = np.asarray(times[id(row)])
        row.latency = LatencyResult(
            row.backend,
            threads,
            warmup + rounds,
            len(arr),
            float(np.median(arr)),
            float(np.percentile(arr, 90)),
            float(arr.min()),
        )
