"""report.png and report.md show what a user decides with: parity against latency, sizes, the threading."""

from __future__ import annotations

import pytest

from mvit2_export.manifest import Manifest
from mvit2_export.report import build_figure, render_markdown, width_label

pytest.importorskip("matplotlib")


def _entry(target, precision, top1, latency=None, status_passed=True, gated=True, size=2_000_000):
    entry = {
        "target": target,
        "precision": precision,
        "path": f"m-{precision}.{target}",
        "runtime": target,
        "size_bytes": size,
        "audit": {"elementwise_attention": True},
        "parity": {
            "passed": status_passed,
            "gated": gated,
            "metrics": {"logits": {"max_abs_rel": 1e-6, "cosine": 0.999, "top1": top1}},
        },
    }
    if latency is not None:
        entry["latency"] = {"median_ms": latency, "threads": 2, "settings": {}, "tried": []}
    return entry


def _manifest(width=1.0, pytorch_ms=2243.0):
    return Manifest.from_json(_manifest_json(width, pytorch_ms))


def _manifest_json(width=1.0, pytorch_ms=2243.0):
    return {
        "schema": 2,
        "model": {
            "width_multiplier": width,
            "task": "classification",
            "image_size": 256,
            "parameters": 4_901_841,
        },
        "reference_latency": {"median_ms": pytorch_ms, "threads": 2},
        "artifacts": [
            _entry("onnx", "fp32", 1.0, 40.0),
            _entry("onnx", "int8", 0.9, 20.0, status_passed=False),
            _entry("tflite", "fp32", 1.0, 35.0),
            _entry("coreml", "fp32", 1.0),  # no host latency off macOS
        ],
    }


def test_the_plot_puts_parity_against_latency_on_a_log_axis_with_the_reference_marked():
    import matplotlib.pyplot as plt

    fig = build_figure(_manifest())
    try:
        scatter, bars = fig.axes
        assert scatter.get_xscale() == "log"  # PyTorch at 2243 ms does not squash 20-40 ms runners
        points = [tuple(c.get_offsets()[0]) for c in scatter.collections]
        assert (
            (2243.0, 1.0) in points and (20.0, 0.9) in points and len(points) == 4
        )  # timed ones + reference
        texts = [t.get_text() for t in scatter.texts]
        assert "PyTorch eager fp32 (reference)" in texts
        assert any("coreml fp32" in t for t in texts)  # named as not timed, not silently dropped
        assert [t.get_text() for t in bars.get_yticklabels()] == [
            "onnx fp32",
            "onnx int8",
            "tflite fp32",
            "coreml fp32",
        ]
        assert "1.0 classification" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_before_bench_the_plot_still_shows_parity():
    import matplotlib.pyplot as plt

    data = _manifest_json()
    data.pop("reference_latency")
    for a in data["artifacts"]:
        a.pop("latency", None)
    fig = build_figure(Manifest.from_json(data))
    try:
        (bars,) = fig.axes
        assert len(bars.patches) == 4
        assert "bench" in bars.get_title()
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "width, label", [(1.0, "1.0"), (2.0, "2.0"), (0.5, "0.5"), (0.75, "0.75"), (1.25, "1.25")]
)
def test_widths_print_as_published(width, label):
    assert width_label(width) == label


def test_report_md_lists_sizes_and_parameters():
    md = render_markdown(_manifest())
    assert "width 1.0," in md
    assert "Parameters: 4,901,841 (at 4 bytes each, fp32: 19.61 MB)" in md
    row = next(line for line in md.splitlines() if "m-fp32.onnx" in line)
    assert "| 2.00 |" in row


def test_a_trial_the_gate_stopped_early_says_how_many_images_it_was_judged_on():
    data = _manifest_json()
    data["model"]["int8_gate"] = {
        "source": "crops",
        "min_agreement": 0.99,
        "enforced": True,
        "int8_isa": "x86-avx2",
    }
    trial = {"float_groups": 0, "names": [], "agreement": 0.8625, "lowest_half": 0.825, "met": False}
    chosen = {"float_groups": 1, "names": ["g1"], "agreement": 0.993, "lowest_half": 0.992, "met": True}
    data["artifacts"][1]["options"] = {
        "int8_search": {
            "why": "the 1 most sensitive layer group(s) kept float",
            "float_groups": ["g1"],
            "chosen": 1,
            "sensitivity": [],
            "trials": [
                {**trial, "n_images": 80, "stopped_early_of": 1000, "latency_ms": 20.0},
                {**chosen, "n_images": 1000, "latency_ms": 22.0},
            ],
        }
    }
    manifest = Manifest.from_json(data)
    rows = [line for line in render_markdown(manifest).splitlines() if line.startswith("| all int8")]
    assert rows and "| 0.8625 (first 80 of 1000) | 0.8250 | – | no |" in rows[0]
    build_figure(manifest)  # the trade-off plot marks it without failing
