"""The matrix a new user walks: every head x every target x fp32/fp16/int8, through the CLI, on checkpoints
saved by transformers (random, non-trivial weights), at width 0.5 and 64 px.

Each run must finish with a documented exit code, list every (target, precision) in the manifest (a
failure costs no other artifact), pass fp32 and fp16 parity, gate int8 honestly on held-out images (its
verdict matches its numbers; an int8 no mixed-precision configuration gets through is refused with exit 5
and no file), and `check` must reach the same verdict on what was written. The backbone's TFLite int8 crashed here
("Tensor data is null") before its SignatureDef was repaired.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mvit2_export.cli.main import main
from mvit2_export.data.validation import default_calibration
from mvit2_export.exporters import available_targets
from mvit2_export.manifest import size_path

PRECISIONS = ("fp32", "fp16", "int8")
HELDOUT = 24  # built-in held-out images per int8 gate (the fixtures test the default, 500)


# Modes beyond fp32/fp16/int8, one CLI run each: (target, precisions, extra flags).
EXTRA_MODES = [
    ("coreml", ("palettized", "w8a8"), []),
    ("tflite", ("int8",), ["--int8-mode", "dynamic"]),
]


# ExecuTorch's int8 lowering takes ~2 min per program on two cores (its passes re-trace every Q/DQ
# node): it walks the matrix on one head, the backbone (two outputs; the head that crashed TFLite int8),
# and its other heads' fp32/fp16 are in tests/exporters/test_executorch_export.py.
SLOW_INT8 = {"executorch"}


@pytest.mark.long
@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_every_target_and_precision_of_a_head(task, hf_checkpoint, tmp_path, capsys):
    targets = [t for t in available_targets() if t not in SLOW_INT8]
    if not targets:
        pytest.skip("no backend installed")
    folder, _ = hf_checkpoint(task, image_size=64)
    run_and_check(tmp_path / "out", folder, task, targets, PRECISIONS, [], capsys)


@pytest.mark.long
@pytest.mark.parametrize("target", sorted(SLOW_INT8))
def test_every_precision_of_a_slow_int8_target_on_the_backbone(target, hf_checkpoint, tmp_path, capsys):
    if target not in available_targets():
        pytest.skip(f"{target} not installed")
    folder, _ = hf_checkpoint("backbone", image_size=64)
    run_and_check(tmp_path / "out", folder, "backbone", [target], PRECISIONS, [], capsys)


@pytest.mark.long
@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
@pytest.mark.parametrize(
    "target, precisions, flags", EXTRA_MODES, ids=["coreml-compressed", "tflite-dynamic"]
)
def test_compressed_and_dynamic_modes_of_a_head(
    task, target, precisions, flags, hf_checkpoint, tmp_path, capsys
):
    if target not in available_targets():
        pytest.skip(f"{target} not installed")
    folder, _ = hf_checkpoint(task, image_size=64)
    run_and_check(tmp_path / "out", folder, task, [target], precisions, flags, capsys)


def run_and_check(out, folder, task, targets, precisions, flags, capsys) -> None:
    """Export through the CLI, then assert what a user relies on (see the module docstring)."""
    args = ["--target", ",".join(targets), "--checkpoint", str(folder), "--precision", ",".join(precisions)]
    code = main([*args, *flags, "--heldout-count", str(HELDOUT), "--out", str(out)])
    printed = capsys.readouterr()
    assert code in (0, 5), printed.err  # everything exported; 5 only for a parity verdict
    manifest = json.loads((out / "manifest.json").read_text())
    # The one export failure allowed: int8 that no mixed-precision configuration gets through the gate
    # (exit 5, the configurations tried in the message, no file).
    refused = manifest.get("failed") or []
    for f in refused:
        assert (f["error_type"], f["exit_code"], f["stage"]) == ("GateNotMetError", 5, "export"), f
        assert "tried" in f["message"] and f["artifact"] in printed.err
    got = [(a["target"], a["precision"]) for a in manifest["artifacts"]]
    expected = [(t, p) for t in targets for p in precisions]
    assert sorted(got + [(f["target"], f["precision"]) for f in refused]) == sorted(expected)
    report = (out / "report.md").read_text()
    assert {p.name for p in out.iterdir()} == {
        *(a["path"] for a in manifest["artifacts"]),
        "manifest.json",
        "report.md",
        "report.png",
    }
    failed = []
    for a in manifest["artifacts"]:
        parity = a["parity"]
        assert "error" not in parity, (a["path"], parity)  # no step crashed
        label = f"{a['path']}: {parity['checks']} {parity.get('heldout')}"
        assert a["size_bytes"] == size_path(out / a["path"]) > 0
        assert f"| {a['size_bytes'] / 1e6:.2f} |" in next(ln for ln in report.splitlines() if a["path"] in ln)
        if a["precision"] in ("fp32", "fp16"):
            assert parity["passed"], label
            assert "heldout" not in parity
        else:  # held to the int8 rules: the verdict is the held-out gate's numbers
            m = parity["metrics"][manifest["model"]["outputs"][0]]
            held = parity["heldout"]
            assert m["finite"] == 1.0 and held["gated"] and held["n_images"] == HELDOUT, label
            assert parity["passed"] == held["met"] == (held["agreement"] >= held["min_agreement"]), label
        if not parity["passed"]:
            failed.append(a["path"])
            assert a["path"] in printed.err
    assert code == (5 if failed or refused else 0)
    assert main(["check", str(out)]) == (5 if failed else 0)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary == f"{len(got) - len(failed)}/{len(got)} passed"


@pytest.mark.slow
def test_full_size_backbone_width_1_5_at_384(hf_checkpoint, tmp_path, capsys):
    """The configuration that crashed for a new user (TFLite int8 backbone), at its real size, with ONNX
    beside it. Core ML stays at 64 px here: its parity runs in the MIL interpreter (numpy), which made
    this one test 11 of the suite's 47 minutes; its full size is tests/exporters/test_coreml_full_size.py.
    On these random weights all-int8 reaches a cosine of ~0.62 and no mixed configuration reaches 0.99
    (6 float groups: ~0.95): at the default gate the search built 17 int8 models per target at this size
    and refused them all (9.8 min; 2.6 min here). The gate at 0.5 keeps the all-int8 artifact, so `check`
    runs it too; the search is walked by the 64 px cells above. Calibration is a user's folder of 8 crops:
    histogram calibration of the 64 default images at this size took 134 s (ONNX) and 58 s (TFLite) of
    this test's 6 minutes (measured 2026-12-07) and says nothing more about the crash."""
    targets = [t for t in available_targets() if t in ("onnx", "tflite")]
    if not targets:
        pytest.skip("no backend installed")
    folder, _ = hf_checkpoint("backbone", image_size=384, width_multiplier=1.5)
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for i, image in enumerate(default_calibration(384)[:8]):
        Image.fromarray(image).save(calibration / f"crop-{i}.png")
    flags = ["--min-agreement", "0.5", "--calibration-images", str(calibration)]
    run_and_check(tmp_path / "out", folder, "backbone", targets, PRECISIONS, flags, capsys)
