"""The matrix a new user walks: every head x every target x fp32/fp16/int8, through the CLI, on checkpoints
saved by transformers (random, non-trivial weights), at width 0.5 and 64 px.

Each run must finish with a documented exit code, list every (target, precision) in the manifest (a
failure costs no other artifact), pass fp32 and fp16 parity, gate int8 honestly (its verdict matches its
numbers), and `check` must reach the same verdict as the export. The backbone's TFLite int8 crashed here
("Tensor data is null") before its SignatureDef was repaired.
"""

from __future__ import annotations

import json

import pytest

from mvit2_export.cli.main import main
from mvit2_export.exporters import available_targets
from mvit2_export.manifest import size_path
from mvit2_export.parity.thresholds import thresholds_for

PRECISIONS = ("fp32", "fp16", "int8")


# Modes beyond fp32/fp16/int8, one CLI run each: (target, precisions, extra flags).
EXTRA_MODES = [
    ("coreml", ("palettized", "w8a8"), []),
    ("tflite", ("int8",), ["--int8-mode", "dynamic"]),
]


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_every_target_and_precision_of_a_head(task, hf_checkpoint, tmp_path, capsys):
    targets = available_targets()
    if not targets:
        pytest.skip("no backend installed")
    folder, _ = hf_checkpoint(task, image_size=64)
    run_and_check(tmp_path / "out", folder, task, targets, PRECISIONS, [], capsys)


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
    code = main([*args, *flags, "--out", str(out)])
    printed = capsys.readouterr()
    assert code in (0, 5), printed.err  # everything exported; 5 only for a parity verdict
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest.get("failed"), manifest.get("failed")
    got = [(a["target"], a["precision"]) for a in manifest["artifacts"]]
    assert got == [(t, p) for t in targets for p in precisions]
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
        label = f"{a['path']}: {parity['checks']}"
        assert a["size_bytes"] == size_path(out / a["path"]) > 0
        assert f"| {a['size_bytes'] / 1e6:.2f} |" in next(ln for ln in report.splitlines() if a["path"] in ln)
        if a["precision"] in ("fp32", "fp16"):
            assert parity["passed"], label
        else:
            m = parity["metrics"][manifest["model"]["outputs"][0]]
            assert m["finite"] == 1.0 and parity["gated"], label
            rules = thresholds_for(a["precision"])
            if task == "classification":
                assert parity["passed"] == (m["top1"] >= rules["top1"]), label
            elif task == "segmentation":
                assert parity["passed"] == (m["pixel_agreement"] >= rules["pixel_agreement"]), label
        if not parity["passed"]:
            failed.append(a["path"])
            assert a["path"] in printed.err
    assert code == (5 if failed else 0)
    assert main(["check", str(out)]) == code
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary == f"{len(got) - len(failed)}/{len(got)} passed"


@pytest.mark.slow
def test_full_size_backbone_width_1_5_at_384(hf_checkpoint, tmp_path, capsys):
    """The configuration that crashed for a new user (TFLite int8 backbone), at its real size."""
    targets = available_targets()
    if not targets:
        pytest.skip("no backend installed")
    folder, _ = hf_checkpoint("backbone", image_size=384, width_multiplier=1.5)
    run_and_check(tmp_path / "out", folder, "backbone", targets, PRECISIONS, [], capsys)
