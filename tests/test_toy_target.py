"""A target added from the test folder alone (tests/toy_target.py) joins `--target all`, `check`,
`inspect`, the CLI's generated flags and the manifest, without touching any file of the package."""

from __future__ import annotations

import json

import pytest

from mvit2_export.cli.main import build_export_parser, main
from mvit2_export.exporters import available_targets, registry


@pytest.fixture
def toy():
    from tests import toy_target

    registry.register(toy_target.ToyExporter)  # idempotent: the module registered it on import
    yield toy_target.ToyExporter
    registry._REGISTRY.pop("toy", None)


def test_a_toy_target_registered_from_the_test_folder_runs_in_all_and_check(toy, tmp_path, capsys):
    assert "--toy-compress" in build_export_parser().format_help()  # its flag, from its option spec
    out = tmp_path / "out"
    code = main(
        ["--target", "all", "--width", "0.5", "--image-size", "64", "--out", str(out), "--toy-compress"]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    manifest = json.loads((out / "manifest.json").read_text())
    targets = [a["target"] for a in manifest["artifacts"]]
    assert targets == available_targets() and targets[-1] == "toy"
    entry = next(a for a in manifest["artifacts"] if a["target"] == "toy")
    assert entry["path"].endswith("-fp32.npz") and (out / entry["path"]).is_file()
    assert entry["options"] == {"compressed": True}  # the flag reached the toy exporter only
    assert entry["parity"]["passed"] and entry["parity"]["runtime"] == "numpy-lookup"
    assert entry["audit"]["elementwise_attention"] and "aten.matmul.default" in entry["audit"]["forbidden"]
    assert main(["check", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{len(targets)}/{len(targets)} passed"
    assert main(["inspect", str(out / entry["path"]), "--require-elementwise"]) == 0


def test_a_precision_the_toy_does_not_take_is_refused_before_anything_is_written(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--target", "toy", "--precision", "fp16", "--width", "0.5", "--out", str(out)]) == 2
    assert "toy does not support precision 'fp16'" in capsys.readouterr().err
    assert not out.exists()
