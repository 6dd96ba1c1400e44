"""`bench` on the host: every runtime at its best threading, searched, recorded and printed."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")

from mvit2_export import export  # noqa: E402
from mvit2_export.bench.threading import usable_cores  # noqa: E402
from mvit2_export.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench") / "out"
    export(None, "onnx", folder, "fp32", width=0.5, image_size=64, check=False)
    return folder


def test_bench_searches_threads_and_spinning_and_records_them(out, capsys):
    assert main(["bench", str(out), "--warmup", "0", "--runs", "2"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    lat = manifest["artifacts"][0]["latency"]
    cores = min(usable_cores(), 8)
    # every thread count up to the cores, onnxruntime's spinning on and off
    assert sorted((t["threads"], t["spinning"]) for t in lat["tried"]) == sorted(
        (n, s) for n in range(1, cores + 1) for s in (True, False)
    )
    best = min(lat["tried"], key=lambda t: t["probe_median_ms"])
    assert lat["threads"] == best["threads"] and lat["settings"] == {"spinning": best["spinning"]}
    assert lat["threading"] == ("searched" if len(lat["tried"]) > 1 else "fixed") and lat["runs"] == 2
    ref = manifest["reference_latency"]
    assert [t["threads"] for t in ref["tried"]] == list(range(1, cores + 1))
    assert manifest["host"]["usable_cores"] == usable_cores() and "isa" in manifest["host"]
    assert "spinning" in printed and "host:" in printed
    report = (out / "report.md").read_text()
    assert (
        "Threading:" in report
        and f"{lat['threads']} threads, spinning={lat['settings']['spinning']}" in report
    )


def test_bench_threads_pins_the_thread_count(out, capsys):
    assert main(["bench", str(out), "--warmup", "0", "--runs", "1", "--threads", "1"]) == 0
    lat = json.loads((out / "manifest.json").read_text())["artifacts"][0]["latency"]
    assert {t["threads"] for t in lat["tried"]} == {1} and lat["threads"] == 1
    assert len(lat["tried"]) == 2  # the wait policy is still chosen by measurement


@pytest.mark.parametrize("backend", ["xnnpack", "coreml"])
def test_bench_times_a_pte_at_the_pool_it_really_runs_on(tmp_path, backend):
    """ExecuTorch sizes one thread pool per process at the first load: `bench` used to load the first
    candidate (1 thread), then report a "2 thread" time that ran on that 1-thread pool (1.7x slower on
    this host). A Core ML-delegated .pte runs here only in the NumPy MIL oracle: recorded, not timed."""
    pytest.importorskip("executorch")
    from executorch.extension.pybindings import portable_lib

    out = tmp_path / "out"
    opts = {"executorch": {"executorch_backend": backend}}
    export(None, "executorch", out, "fp32", width=0.5, image_size=64, check=False, backend_options=opts)
    assert main(["bench", str(out), "--warmup", "0", "--runs", "2"]) == 0
    lat = json.loads((out / "manifest.json").read_text())["artifacts"][0]["latency"]
    if backend == "coreml":
        assert lat["median_ms"] is None and "Apple hardware" in lat["note"]
        return
    pool = portable_lib._threadpool_get_thread_count()
    assert [t["threads"] for t in lat["tried"]] == [pool] and lat["threads"] == pool
    assert lat["threading"] == "fixed" and lat["median_ms"] > 0
