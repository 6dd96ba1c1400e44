"""The benchmark_model parser on real recorded outputs (tests/data/benchmark_model/README.md names each source).

Expected numbers are read off the recorded text by eye; the parser must find each in the right field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvit2_export.bench.benchmark_model_output import failure_reason, parse_benchmark_model_output
from mvit2_export.errors import DeviceError

DATA = Path(__file__).resolve().parents[1] / "data" / "benchmark_model"


def parse(name: str):
    return parse_benchmark_model_output((DATA / name).read_text())


def test_android_output_with_peak_memory():
    r = parse("android_peak_memory.txt")
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us, r.inference_avg_us) == (
        855,
        49060,
        34825.1,
        33209.4,
    )
    assert r.inference == {
        "count": 50,
        "first": 32891,
        "curr": 33978,
        "min": 32641,
        "max": 34005,
        "avg": 33209.4,
        "std": 450,
    }
    assert r.warmup is not None and (r.warmup["count"], r.warmup["std"], r.warmup["max"]) == (15, 3930, 49060)
    assert r.memory_mb == {"kind": "peak", "init": 0.0, "overall": 12.8672}
    assert r.model_size_mb == 0.004448 and r.delegates == []


def test_output_with_memory_delta_and_a_glued_first_line():
    r = parse("rpi_xnnpack_memory_delta.txt")
    assert r.inference_avg_us == 55043.2 and r.init_us == 18777
    assert (r.inference["count"], r.inference["min"], r.inference["max"], r.inference["std"]) == (
        50,
        53077,
        60727,
        1562,
    )
    assert r.warmup is not None and r.warmup["count"] == 9
    assert r.memory_mb == {"kind": "delta", "init": 8.97656, "overall": 18.7227}
    assert r.delegates == ["Created TensorFlow Lite XNNPACK delegate for CPU."]


def test_info_prefixed_output_without_memory_line():
    r = parse("host_info_prefix.txt")
    assert (r.init_us, r.warmup_avg_us, r.inference_avg_us) == (12750, 13764.3, 13520.2)
    assert r.inference["count"] == 74 and r.inference["std"] == 470
    assert r.warmup is not None and r.warmup["count"] == 37
    assert r.memory_mb is None and r.model_size_mb == 16.9008


def test_failure_raises_one_line_with_the_error():
    text = (DATA / "failure_registration.txt").read_text()
    with pytest.raises(DeviceError) as exc:
        parse_benchmark_model_output(text, "benchmark_model on m.tflite")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("benchmark_model on m.tflite failed: ")
    assert "Didn't find op for builtin opcode 'MUL' version '5'" in msg
    assert exc.value.exit_code == 8


def test_failure_reason_without_error_lines_is_the_last_real_line():
    assert failure_reason("/system/bin/sh: /data/local/tmp/benchmark_model: not found\n") == (
        "/system/bin/sh: /data/local/tmp/benchmark_model: not found"
    )
    # the recorded failure minus its ERROR lines: the interpreter line, not the generic last line
    text = "\n".join(
        line for line in (DATA / "failure_registration.txt").read_text().splitlines() if "ERROR" not in line
    )
    assert failure_reason(text) == "Failed to initialize the interpreter"


def test_truncated_output_is_a_failure():
    """A run cut off before its timings line (killed, device unplugged) must not parse as a result."""
    text = (DATA / "android_peak_memory.txt").read_text()
    cut = text[: text.index("Inference timings")]
    with pytest.raises(DeviceError, match="failed"):
        parse_benchmark_model_output(cut)
