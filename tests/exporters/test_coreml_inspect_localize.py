"""Core ML artifacts through `inspect` (ANE audit, rewrites from metadata) and `check --localize` (MIL trace)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("coremltools")

from mvit2_export.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def coreml_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml-cli") / "out"
    args = [
        "--target",
        "coreml",
        "--width",
        "0.5",
        "--image-size",
        "64",
        "--precision",
        "fp32",
        "--out",
        str(out),
    ]
    assert main([*args, "--input-type", "tensor"]) == 0
    return out


def test_inspect_mlpackage(coreml_out, capsys):
    entry = json.loads((coreml_out / "manifest.json").read_text())["artifacts"][0]
    assert main(["inspect", str(coreml_out / entry["path"]), "--json", "--require-elementwise"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["audit"]["elementwise_attention"] and "transpose" not in result["op_histogram"]
    assert {r["id"] for r in result["rewrites"]} >= {
        "common::unfold_to_depthwise_conv",
        "common::fold_to_pixel_shuffle",
    }
    assert result["metadata"]["untrained"] == "true"
    # fp32 compute is flagged for the Neural Engine (it runs fp16); each finding names op, rule, severity.
    assert any(f["rule"] == "fp32_compute" for f in result["ane_audit"])


def test_check_localize_on_mlpackage(coreml_out, capsys):
    assert main(["check", str(coreml_out), "--localize", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    loc = result["localization"]
    assert loc["compared"] >= 30, "MIL op names should keep most torch.export node names"
    assert loc["first_divergent"] is None
