"""What CPU this is: its flags (for the ISA printed with every number) and the int8 kernel family it
has, the default of `--int8-isa auto`."""

from __future__ import annotations

import platform
from pathlib import Path

# Where an int8 model is meant to run decides how it is quantized (exporters' quantize modules):
#   x86-avx2  u8 x s8 products summed in saturating int16 (VPMADDUBSW): 7-bit weights avoid the overflow
#   x86-vnni  AVX-512 VNNI / AVX-VNNI / AMX: int32 accumulation, full 8-bit weights
#   arm64     dot-product (SDOT/UDOT) kernels: int32 accumulation, full 8-bit weights
INT8_ISAS = ("auto", "x86-avx2", "x86-vnni", "arm64")


def cpu_flags() -> tuple[str, set[str]]:
    """(CPU model name, every flag /proc/cpuinfo lists); the platform's names where there is none."""
    flags: set[str] = set()
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model_name = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and ":" in line:
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model_name, flags


def host_int8_isa() -> str:
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    _, flags = cpu_flags()
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "x86-vnni"
    return "x86-avx2"


def resolve_int8_isa(value: str | None) -> str:
    """An --int8-isa value, with auto resolved to this host's."""
    from .errors import UsageError

    value = (value or "auto").strip().lower()
    if value not in INT8_ISAS:
        raise UsageError(f"--int8-isa {value!r} is not one of {', '.join(INT8_ISAS)}")
    return host_int8_isa() if value == "auto" else value
