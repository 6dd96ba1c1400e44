"""int8 on a trained model: ONNX and TFLite int8, exported through the CLI, are gated by the int8 rule and
the verdict tells the truth (parity/thresholds.py: top-1 agreement >= 99% with the PyTorch reference).

The trained fixture (mvit2_export/fixture.py: width 0.5 at 64 px, about 2 minutes on 2 cores) is built once
and cached under ~/.cache/mvit2-export (MVIT2_EXPORT_CACHE). Training on a CPU is not bit-reproducible
across hosts, so each host trains a slightly different model: on the AVX2 host the gate was tuned on, both
targets agreed on 12/12 parity images; on an AVX-512 VNNI host (2026-12-03) both agree on 11/12 (ONNX
cosine 0.9968 with 7-bit weights, 0.9977 with 8-bit: not the kernels). A 12-image gate holds only on the
model it was tuned on; gating on held-out images is issue 14. What every host must show, and what these
tests assert: the int8 rule is applied to trained weights, the manifest's verdict and the exit code match
the measured numbers, and int8 stays close to fp32 (cosine >= 0.99; the broken paths fixed before gave
0.46 for ONNX's int16 saturation and 0.63 for TFLite's moving-average ranges).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from mvit2_export import load_model
from mvit2_export.cli.main import main
from mvit2_export.exporters import get_exporter
from mvit2_export.fixture import Recipe, trained_fixture
from mvit2_export.manifest import ArtifactEntry
from mvit2_export.parity.run import run_parity
from mvit2_export.parity.thresholds import thresholds_for

TARGETS = {"onnx": ("onnxruntime",), "tflite": ("litert_torch", "ai_edge_litert")}


@pytest.fixture(scope="session")
def trained_checkpoint() -> Path:
    return trained_fixture()


@pytest.fixture(scope="session")
def int8_export(trained_checkpoint, tmp_path_factory):
    """target -> (CLI exit code, out dir, the int8 manifest entry); one export per target per session."""
    cache: dict[str, tuple[int, Path, dict[str, Any]]] = {}

    def get(target: str) -> tuple[int, Path, dict[str, Any]]:
        if target not in cache:
            out = tmp_path_factory.mktemp(f"int8-trained-{target}") / "out"
            size = str(Recipe().image_size)
            args = ["--target", target, "--checkpoint", str(trained_checkpoint), "--precision", "int8"]
            code = main([*args, "--image-size", size, "--out", str(out)])
            (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
            cache[target] = (code, out, entry)
        return cache[target]

    return get


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_int8_gate_on_the_trained_fixture_tells_the_truth(int8_export, target, record_property):
    for module in TARGETS[target]:
        pytest.importorskip(module)
    code, _, entry = int8_export(target)
    parity = entry["parity"]
    logits = parity["metrics"]["logits"]
    record_property("int8_parity", {k: logits[k] for k in ("top1", "cosine", "max_abs_rel")})
    assert entry["precision"] == "int8" and parity["precision"] == "int8"
    assert parity["gated"], parity["note"]  # a trained checkpoint: the int8 rule applies
    gate = thresholds_for("int8")["top1"]
    assert parity["passed"] == (logits["top1"] >= gate), parity["checks"]
    assert code == (0 if parity["passed"] else 5)
    assert logits["cosine"] >= 0.99 and logits["top1"] >= 0.75, logits  # breakage floor, not the gate


def test_tflite_int8_keeps_every_normalisation_statistics_chain_float(int8_export, trained_checkpoint):
    """(x - mean)^2 -> mean -> + eps -> rsqrt -> x * rsqrt stays float in each GroupNorm: five ops each,
    found by graph structure, so a layout change that hides the pattern shows up here."""
    for module in TARGETS["tflite"]:
        pytest.importorskip(module)
    _, _, entry = int8_export("tflite")
    norms = sum(isinstance(m, nn.GroupNorm) for m in load_model(trained_checkpoint).modules())
    assert norms > 0 and entry["options"]["float_normalisation_ops"] == 5 * norms


def test_tflite_int8_reference_kernels_agree_with_xnnpack(int8_export, trained_checkpoint):
    """XNNPACK off: the builtin reference kernels are an independent implementation, so a quantized op
    that only one runtime computes correctly (int8 SUM/MEAN in this graph) fails here or above."""
    for module in TARGETS["tflite"]:
        pytest.importorskip(module)
    _, out, entry = int8_export("tflite")
    runner = get_exporter("tflite").load_runner(
        out / entry["path"], ArtifactEntry.from_json(entry), 2, kernels="reference"
    )
    report = run_parity(load_model(trained_checkpoint), runner, "int8", Recipe().image_size)
    xnnpack = entry["parity"]["metrics"]["logits"]
    ref_kernels = report.metrics["logits"]
    assert report.gated and ref_kernels["cosine"] >= 0.99, report.failures()
    # the two kernel sets compute the same int8 graph: their agreement with PyTorch is within one image
    assert abs(ref_kernels["top1"] - xnnpack["top1"]) <= 1 / report.n_inputs + 1e-9
