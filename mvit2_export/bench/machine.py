"""The machine a number was measured on: printed and recorded with every latency (`bench`, the benchmarks)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cpu import cpu_flags
from .threading import usable_cores

# Extensions that decide fp32/int8 kernel choice (x86: AVX2/AVX-512/VNNI/AMX; ARM: dot product, i8mm).
ISA_FLAGS = {"avx2", "fma", "f16c", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimddp", "i8mm", "sve"}


def machine_facts() -> dict[str, Any]:
    """What decides these numbers: CPU model, ISA extensions that matter for int8, usable cores."""
    model_name, flags = cpu_flags()
    isa = sorted(f for f in flags if f in ISA_FLAGS or f.startswith("avx512"))
    return {"cpu": model_name, "machine": platform.machine(), "isa": isa, "usable_cores": usable_cores()}


def environment(distributions: Sequence[str] = ()) -> dict[str, Any]:
    """The rest of a benchmark's context: cores, memory, Python, OS, package versions, date."""
    mem = ""
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024**2:.0f} GB"
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cores": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
