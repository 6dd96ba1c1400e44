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
from mvit2_export.exporters import TARGETS
from mvit2_export.parity.thresholds import thresholds_for

PRECISIONS = ("fp32", "fp16", "int8")


def _available() -> list[str]:
    from mvit2_export.errors import BackendMissingError
    from mvit2_export.exporters import get_exporter

    out = []
    for t in TARGETS:
        try:
            get_exporter(t)
            out.append(t)
        except BackendMissingError:
            pass
    return out


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_every_target_and_precision_of_a_head(task, hf_checkpoint, tmp_path, capsys):
    targets = _available()
    if not targets:
        pytest.skip("no backend installed")
    folder, _ = hf_checkpoint(task, image_size=64)
    out = tmp_path / "out"
    args = ["--target", ",".join(targets), "--checkpoint", str(folder), "--precision", ",".join(PRECISIONS)]
    code = main([*args, "--out", str(out)])
    printed = capsys.readouterr()
    assert code in (0, 5), printed.err  # everything exported; 5 only for a parity verdict
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest.get("failed"), manifest.get("failed")
    got = [(a["target"], a["precision"]) for a in manifest["artifacts"]]
    assert got == [(t, p) for t in targets for p in PRECISIONS]
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
        if a["precision"] in ("fp32", "fp16"):
            assert parity["passed"], label
        else:
            m = parity["metrics"][manifest["model"]["outputs"][0]]
            assert m["finite"] == 1.0 and parity["gated"], label
            rules = thresholds_for("int8")
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
