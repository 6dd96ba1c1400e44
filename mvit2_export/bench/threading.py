"""Each runtime timed at its best threading on this host, searched rather than assumed.

Why: on 2 cores with other work running, onnxruntime's 2 spinning intra-op threads ran the fp32 model 2x
slower than 1 thread or 2 threads with spinning off (128 vs 59-63 ms), while on the quiet host 2 spinning
threads were best (40 ms). No default is right on every host and load, so `bench` probes every thread
count up to the cores and every knob the runtime declares (`Exporter.bench_settings`), times the fastest
fully, and records what it chose and what it tried. `--threads N` pins the thread count.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .latency import LatencyResult, measure_latency

# Probe runs per configuration: enough to rank them (medians), cheap next to the full measurement.
PROBE_WARMUP, PROBE_RUNS = 2, 5


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_candidates(pinned: int | None) -> list[int]:
    """`pinned` alone when given, else 1 .. the usable cores (at most 8: more never helped batch 1)."""
    if pinned is not None:
        return [pinned]
    return list(range(1, min(usable_cores(), 8) + 1))


@dataclass
class Best:
    threads: int
    settings: dict[str, Any]
    result: LatencyResult
    tried: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.result.to_dict(),
            "settings": self.settings,
            "threading": "searched" if len(self.tried) > 1 else "fixed",
            "tried": self.tried,
        }


def best_threading(
    make: Callable[[int, dict[str, Any]], Callable[[], Any]],
    runtime: str,
    threads: list[int],
    settings: list[dict[str, Any]],
    warmup: int,
    runs: int,
) -> Best:
    """`make(threads, setting)` -> a callable running one inference. Every (threads, setting) is probed;
    the fastest by probe median is measured with `warmup`/`runs`."""
    tried = []
    for n in threads:
        for s in settings:
            fn = make(n, s)
            probe = measure_latency(fn, runtime, n, PROBE_WARMUP, PROBE_RUNS)
            tried.append({"threads": n, **s, "probe_median_ms": round(probe.median_ms, 3)})
    pick = min(tried, key=lambda t: t["probe_median_ms"])
    n = pick["threads"]
    setting = {k: v for k, v in pick.items() if k not in ("threads", "probe_median_ms")}
    result = measure_latency(make(n, setting), runtime, n, warmup, runs)
    return Best(n, setting, result, tried)
