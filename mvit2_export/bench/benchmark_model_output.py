"""Parse the stdout of TensorFlow Lite's `benchmark_model` (all times in microseconds, memory in MB).

The tool prints, in order: a `count=... min=... max=... avg=... std=...` line for the warm-up runs, one for
the regular runs, then `Inference timings in us: Init: .., First inference: .., Warmup (avg): ..,
Inference (avg): ..` and, where the platform reports it, a memory line (`Peak memory footprint (MB):
init=.. overall=..` in older builds, `Memory footprint delta from the start of the tool (MB): ...` in
newer ones). Recent builds prefix every line with `INFO: ` (logcat adds its own prefix), and add
`p5= median= p95=` to the count lines, so lines are searched, not anchored, and the count fields are read
as generic key=value pairs. Tested on recorded real outputs in tests/data/benchmark_model/.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import DeviceError

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
    rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})"
)
_STATS = re.compile(rf"\bcount=\d+(?: \w+={_NUM})*")
_FIELD = re.compile(rf"(\w+)=({_NUM})")
_MEMORY = re.compile(
    rf"(Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
    rf"init=({_NUM}) overall=({_NUM})"
)
_PEAK_MONITORED = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\): ({_NUM})")
_DELEGATE = re.compile(r"(Created TensorFlow Lite .*delegate.*?\.|Explicitly applied .*? delegate)")
# What a device log puts before the tool's own text: `INFO: `, logcat's `07-08 15:33:55.768 I/tflite (..): `.
_PREFIX = re.compile(
    r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s.*?\btflite\s*(?:\(\s*\d+\))?:\s*)?(?:(?:INFO|WARNING|VERBOSE|ERROR):\s*)?"
)


@dataclass
class BenchmarkModelOutput:
    init_us: float
    first_inference_us: float
    warmup_avg_us: float
    inference_avg_us: float
    inference: dict[
        str, float
    ]  # the regular runs' count line: count, first, curr, min, max, avg, std[, median..]
    warmup: dict[str, float] | None  # the warm-up runs' count line
    memory_mb: (
        dict[str, Any] | None
    )  # {"kind": "peak" | "delta", "init": .., "overall": ..[, "peak_monitored"]}
    model_size_mb: float | None
    delegates: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in _FIELD.findall(line)}


def failure_reason(text: str) -> str:
    """The line that says why a run failed: the first ERROR line, else the last line that is not the
    tool's generic `Benchmarking failed.` (a shell's `not found` when the binary is missing, say)."""
    for raw in text.splitlines():
        if re.search(r"\bERROR\b", raw) and (line := _PREFIX.sub("", raw).strip()):
            return line
    lines = [_PREFIX.sub("", raw).strip() for raw in text.splitlines()]
    lines = [line for line in lines if line and line != "Benchmarking failed."]
    return lines[-1] if lines else "no output"


def parse_benchmark_model_output(text: str, what: str = "benchmark_model") -> BenchmarkModelOutput:
    """Parse one run's stdout; a failed run (no timings line, or `Benchmarking failed`) raises DeviceError."""
    timings = _TIMINGS.search(text)
    if timings is None or "Benchmarking failed" in text:
        raise DeviceError(f"{what} failed: {failure_reason(text)}")
    # Count lines before the timings line: the last is the regular runs, the one before it the warm-up.
    stats = [_stats(m.group(0)) for m in _STATS.finditer(text[: timings.start()])]
    if not stats:
        raise DeviceError(f"{what}: output has timings but no `count=` statistics line")
    memory = None
    if m := _MEMORY.search(text):
        kind = "peak" if m.group(1).startswith("Peak") else "delta"
        memory = {"kind": kind, "init": float(m.group(2)), "overall": float(m.group(3))}
    if p := _PEAK_MONITORED.search(text):
        memory = {**(memory or {}), "peak_monitored": float(p.group(1))}
    size = _MODEL_SIZE.search(text)
    init, first, warm, inf = (float(g) for g in timings.groups())
    return BenchmarkModelOutput(
        init_us=init,
        first_inference_us=first,
        warmup_avg_us=warm,
        inference_avg_us=inf,
        inference=stats[-1],
        warmup=stats[-2] if len(stats) > 1 else None,
        memory_mb=memory,
        model_size_mb=float(size.group(1)) if size else None,
        delegates=sorted({m.group(1) for m in _DELEGATE.finditer(text)}),
    )
