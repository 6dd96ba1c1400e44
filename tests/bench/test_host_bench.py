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
