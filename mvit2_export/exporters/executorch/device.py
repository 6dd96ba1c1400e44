"""`bench --device android` for .pte files: ExecuTorch's `executor_runner` (built with the XNNPACK
backend) over adb, when the user passes one with `--executor-runner` (a host file to push, or a device
path). The pip package ships no runner binary, so there is no default on the device.

Flags and output are those of examples/portable/executor_runner/executor_runner.cpp (executorch 1.x):
`--model_path`, `--num_executions`, `--cpu_threads`; it logs `Model loaded in X ms.`, one
`Iteration i of n: X ms` per run and `Model executed successfully n time(s) in X ms.`. It has no
warm-up flag: the first `warmup` of `warmup + runs` iterations are the warm-up. Never run against a
real phone here (no device); the parser is tested on output in that format.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

from ...errors import DeviceError

FLAG = "--executor-runner"
DEVICE_BINARY = "/data/local/tmp/executor_runner"
_LOADED = re.compile(r"Model loaded in ([0-9.]+) ms")
_ITERATION = re.compile(r"Iteration (\d+) of (\d+): ([0-9.]+) ms")
_DONE = re.compile(r"Model executed successfully (\d+) time\(s\) in ([0-9.]+) ms")


def can_run(options: dict[str, Any]) -> bool:
    """Only XNNPACK-delegated programs run on Android (a Core ML delegate needs Apple hardware)."""
    return options.get("delegate_backend", "xnnpack") == "xnnpack"


def argv(binary: str, remote_model: str, threads: int, runs: int, warmup: int) -> list[str]:
    return [
        binary,
        f"--model_path={remote_model}",
        f"--num_executions={warmup + runs}",
        f"--cpu_threads={threads}",
    ]


def _stats_us(ms: list[float]) -> dict[str, float]:
    us = [m * 1e3 for m in ms]
    return {
        "count": float(len(us)),
        "first": us[0],
        "min": min(us),
        "max": max(us),
        "avg": statistics.fmean(us),
        "std": statistics.pstdev(us),
        "median": statistics.median(us),
    }


def _reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ") or "failed" in line.lower()]
    return (errors or lines or ["no output"])[0][:200]


def parse(text: str, warmup: int, what: str = "executor_runner") -> dict[str, Any]:
    """One run's log -> the fields `bench --device android` records (times in us, as benchmark_model's)."""
    done = _DONE.search(text)
    iterations = [float(m.group(3)) for m in _ITERATION.finditer(text)]
    if done is None or not iterations:
        raise DeviceError(f"{what} failed: {_reason(text)}")
    timed = iterations[warmup:] or iterations
    loaded = _LOADED.search(text)
    return {
        "init_us": float(loaded.group(1)) * 1e3 if loaded else None,
        "first_inference_us": iterations[0] * 1e3,
        "warmup_avg_us": statistics.fmean(iterations[:warmup]) * 1e3
        if warmup and len(iterations) > warmup
        else None,
        "inference_avg_us": statistics.fmean(timed) * 1e3,
        "inference": _stats_us(timed),
        "warmup": _stats_us(iterations[:warmup]) if warmup and len(iterations) > warmup else None,
        "memory_mb": None,
        "model_size_mb": None,
        "delegates": [],
    }
