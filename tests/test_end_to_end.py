"""The whole job as a user runs it: export -> manifest/report on disk -> check (the CI gate) -> tampering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from mvit2_export import export  # noqa: E402
from mvit2_export.cli.main import main  # noqa: E402
from mvit2_export.manifest import sha256_path  # noqa: E402
from tests.conftest import hf_forward  # noqa: E402

SMALL = ["--width", "0.5", "--image-size", "64"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "out"
    assert main(["--target", "onnx", *SMALL, "--precision", "fp32,fp16", "--out", str(out)]) == 0
    return out


def test_output_directory_contents(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["schema"] == 2
    assert manifest["model"]["untrained"] is True and manifest["model"]["width_multiplier"] == 0.5
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32", "fp16"]
    for a in manifest["artifacts"]:
        path = exported / a["path"]
        assert path.is_file() and sha256_path(path) == a["sha256"]
        assert a["parity"]["passed"] is True and a["parity"]["runtime"] == "onnxruntime"
        assert a["audit"]["elementwise_attention"] is True
        assert a["op_histogram"] and a["inputs"][0]["name"] == "pixel_values"
        assert any(r["fired"] for r in a["rewrites"])
    assert manifest["artifacts"][0]["parity"]["metrics"]["logits"]["max_abs_rel"] <= 1e-4
    assert (exported / "report.md").read_text().count(".onnx") == 2
    assert (exported / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in exported.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_check_passes_then_fails_on_tampering(exported, tmp_path, capsys):
    assert main(["check", str(exported)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("PASS") == 2 and "max abs/scale" in printed and "cosine" in printed
    assert printed.strip().splitlines()[-1] == "2/2 passed"
    # A copy to tamper with, so other tests keep a clean directory.
    import shutil

    out = tmp_path / "tampered"
    shutil.copytree(exported, out)
    fp16 = out / json.loads((out / "manifest.json").read_text())["artifacts"][1]["path"]
    data = bytearray(fp16.read_bytes())
    data[-100] ^= 0xFF
    fp16.write_bytes(bytes(data))
    assert main(["check", str(out)]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256" in err and fp16.name in err
    fp16.unlink()
    assert main(["check", str(out)]) == 6
    assert "missing" in capsys.readouterr().err


def test_check_refuses_a_reference_with_other_weights(exported, hf_checkpoint, capsys):
    """Checking against other weights must fail (the manifest records the weights' sha256), not pass."""
    folder, _ = hf_checkpoint("classification", seed=7, num_labels=1000)
    assert main(["check", str(exported), "--checkpoint", str(folder)]) == 2
    assert "weights differ" in capsys.readouterr().err


def test_out_directory_errors(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["--target", "onnx", *SMALL, "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["--target", "onnx", *SMALL, "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err and (full / "keep.txt").read_text() == "mine"
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["--target", "onnx", *SMALL, "--out", str(ro / "sub")]) == 2


def test_python_api_with_a_transformers_instance(tmp_path, hf_checkpoint):
    """export() takes a transformers model; the ONNX artifact equals transformers' own outputs."""
    import onnxruntime as ort

    _, hf = hf_checkpoint("segmentation", image_size=64)
    manifest = export(hf, "onnx", tmp_path / "out", image_size=64)
    entry = manifest.artifacts[0]
    assert manifest.model["checkpoint_source"] == "transformers:MobileViTV2ForSemanticSegmentation"
    assert entry.parity["passed"]
    session = ort.InferenceSession(str(tmp_path / "out" / entry.path))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    (got,) = session.run(None, {"pixel_values": x.numpy()})
    want = hf_forward(hf, x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_pytest_plugin_gates_a_users_suite(exported, tmp_path):
    """`pytest --mvit2-out DIR` adds one passing test per artifact; the fixture form works too."""
    (tmp_path / "test_user.py").write_text(
        "def test_models(mvit2_check):\n"
        f"    results = mvit2_check({str(exported)!r})\n"
        "    assert len(results) == 2 and all(r.passed for r in results)\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--mvit2-out",
            str(exported),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "3 passed" in proc.stdout


def test_inspect_reports_histogram_audit_and_rewrites(exported, capsys):
    manifest = json.loads((exported / "manifest.json").read_text())
    path = exported / manifest["artifacts"][0]["path"]
    assert main(["inspect", str(path), "--json", "--require-elementwise"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["op_histogram"] == manifest["artifacts"][0]["op_histogram"]
    assert result["audit"]["elementwise_attention"] and result["audit"]["violations"] == {}
    assert {"Col2Im", "Gather", "Expand", "MatMul"}.isdisjoint(result["op_histogram"])
    assert any(r["id"] == "common::fold_to_pixel_shuffle" and r["fired"] == 3 for r in result["rewrites"])


def test_inspect_require_elementwise_fails_on_a_plain_dynamo_export(tmp_path, capsys):
    """transformers' unrewritten model through the dynamo exporter keeps Col2Im/Expand: the audit must say so."""
    from tests.conftest import build_hf_model

    hf = build_hf_model("classification")

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = hf

        def forward(self, x):
            return self.m(pixel_values=x).logits

    path = tmp_path / "plain.onnx"
    torch.onnx.export(Logits().eval(), (torch.rand(1, 3, 64, 64),), str(path), dynamo=True, opset_version=18)
    assert main(["inspect", str(path), "--require-elementwise"]) == 7
    captured = capsys.readouterr()
    assert "Col2Im" in captured.err and "attention audit: FAIL" in captured.out


def test_check_localize_compares_intermediates_op_by_op(exported, capsys):
    manifest = json.loads((exported / "manifest.json").read_text())
    fp32 = exported / manifest["artifacts"][0]["path"]
    assert main(["check", str(fp32), "--localize", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    loc = result["localization"]
    assert loc["compared"] >= 50  # value names survive the dynamo exporter for most nodes
    assert loc["first_divergent"] is None and loc["tolerance"] == 1e-4
    assert max(op["rel_err"] for op in loc["ops"]) <= 1e-4


def test_localize_names_the_op_where_an_artifact_diverges(exported, tmp_path):
    """Corrupt one conv's weights inside a copy of the fp32 graph: localization must point at that conv."""
    import onnx
    from onnx import numpy_helper

    from mvit2_export.api import load_reference_for_manifest
    from mvit2_export.data.images import parity_images
    from mvit2_export.exporters import get_exporter
    from mvit2_export.manifest import ArtifactEntry, Manifest
    from mvit2_export.parity.localize import localize_artifact

    manifest = json.loads((exported / "manifest.json").read_text())
    entry = manifest["artifacts"][0]
    proto = onnx.load(str(exported / entry["path"]))
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    victim = convs[len(convs) // 2]
    init = next(i for i in proto.graph.initializer if i.name == victim.input[1])
    w = numpy_helper.to_array(init).copy()
    w *= 1.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    model = load_reference_for_manifest(Manifest.from_json(manifest))
    loc = localize_artifact(
        model, get_exporter("onnx"), bad, ArtifactEntry.from_json(entry), parity_images(64, 1, 0)
    )
    assert loc.first_divergent is not None
    assert loc.first_divergent.name == victim.output[0], (loc.first_divergent, victim.output[0])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--target", "onnx", "--opset", "11"], "opset"),
        (["--target", "onnx", "--precision", "palettized"], "palettized"),
        (["--target", "coreml", "--deployment-target", "iOS9"], "iOS9"),
        (["--target", "onnx,coreml", "--jobs", "0"], "--jobs"),
        (
            [
                "--target",
                "tflite",
                "--precision",
                "int8",
                "--int8-mode",
                "dynamic",
                "--calibration-images",
                ".",
            ],
            "dynamic",
        ),
    ],
)
def test_bad_option_combinations_write_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    assert main([*args, *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not out.exists(), "a rejected option combination must not create the output directory"


def test_reexport_is_byte_identical(exported, tmp_path):
    first = json.loads((exported / "manifest.json").read_text())["artifacts"][0]
    again = export(None, "onnx", tmp_path / "again", "fp32", width=0.5, image_size=64, check=False)
    assert again.artifacts[0].sha256 == first["sha256"]


def test_two_targets_exported_side_by_side(exported, tmp_path):
    """--jobs 2: Core ML here, ONNX in a worker process; the ONNX file is the serial one, bit for bit."""
    out = tmp_path / "two"
    assert main(["--target", "coreml,onnx", *SMALL, "--jobs", "2", "--out", str(out)]) == 0
    artifacts = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert [a["target"] for a in artifacts] == ["coreml", "onnx"]  # the order asked for
    for a in artifacts:
        assert a["parity"]["passed"] and sha256_path(out / a["path"]) == a["sha256"]
    serial = json.loads((exported / "manifest.json").read_text())["artifacts"][0]
    assert artifacts[1]["sha256"] == serial["sha256"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_interrupted_export_leaves_no_partial_artifact(tmp_path, monkeypatch):
    """Ctrl-C while the second artifact is being written: the first artifact stays complete and listed,
    the second leaves no file (not even a temporary one), and the manifest lists only what exists."""
    import onnx

    real_save = onnx.save
    calls = {"n": 0}

    def save_then_interrupt(proto, path, *args, **kwargs):
        real_save(proto, path, *args, **kwargs)
        if str(path).endswith("fp16.onnx"):
            Path(path).write_bytes(Path(path).read_bytes()[:1000])  # half-written, as a crash would leave it
            calls["n"] += 1
            raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save", save_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export(None, "onnx", out, "fp32,fp16", width=0.5, image_size=64, check=False)
    assert calls["n"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {a["path"] for a in manifest["artifacts"]}
    on_disk = {p.name for p in out.iterdir()}
    assert listed == {"mobilevitv2-0.5-classification-fp32.onnx"}
    assert on_disk == listed | {"manifest.json"}, on_disk  # no fp16 file, no temporary leftovers
    assert sha256_path(out / next(iter(listed))) == manifest["artifacts"][0]["sha256"]


def test_output_exists_error_prints_only_the_error(exported, capsys):
    """Into an earlier output folder without --force: the error, not the old manifest's table."""
    assert main(["--target", "onnx", *SMALL, "--out", str(exported)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "not empty" in printed.err


def test_one_failed_artifact_loses_no_other(tmp_path, capsys, monkeypatch):
    """fp16 fails to export and int8's parity step raises something no layer expected: fp32 and int8 are
    still on disk and listed, fp16 is listed as failed with its reason, and the exit code is documented."""
    from mvit2_export.errors import ExportError
    from mvit2_export.exporters.onnx import exporter as onnx_exporter
    from mvit2_export.exporters.onnx import quantize

    def fp16_fails(*_args, **_kwargs):
        raise ExportError("fp16 conversion failed: injected")

    real_runner = onnx_exporter.OnnxExporter.load_runner

    def int8_runner_breaks(self, path, artifact, threads=None):
        runner = real_runner(self, path, artifact, threads)
        if "int8" in Path(path).name:
            runner.run = lambda images: (_ for _ in ()).throw(ValueError("Tensor data is null"))
        return runner

    monkeypatch.setattr(quantize, "to_fp16", fp16_fails)
    monkeypatch.setattr(onnx_exporter.OnnxExporter, "load_runner", int8_runner_breaks)
    out = tmp_path / "out"
    code = main(
        ["--target", "onnx", *SMALL, "--precision", "fp32,fp16,int8", "--out", str(out), "--jobs", "1"]
    )
    assert code == 4  # an export failed (documented); parity-only failures give 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp16.onnx: fp16 conversion failed: injected" in err[0]
    assert "int8.onnx: unexpected ValueError: Tensor data is null" in err[0]
    manifest = json.loads((out / "manifest.json").read_text())
    listed = [a["path"] for a in manifest["artifacts"]]
    assert listed == ["mobilevitv2-0.5-classification-fp32.onnx", "mobilevitv2-0.5-classification-int8.onnx"]
    assert manifest["artifacts"][0]["parity"]["passed"] is True
    assert manifest["artifacts"][1]["parity"] == {
        "passed": False,
        "error": "unexpected ValueError: Tensor data is null",
        "error_type": "ValueError",
    }
    assert [(f["precision"], f["stage"], f["exit_code"]) for f in manifest["failed"]] == [
        ("fp16", "export", 4)
    ]
    assert {p.name for p in out.iterdir()} == {*listed, "manifest.json", "report.md", "report.png"}


def test_api_progress_reaches_done_equals_total(tmp_path):
    calls: list[tuple[str, int, int]] = []
    export(
        None, "onnx", tmp_path / "out", "fp32", width=0.5, image_size=64, progress=lambda *c: calls.append(c)
    )
    assert calls[0][1:] == (0, 1) and calls[-1] == ("done", 1, 1)


@pytest.mark.parametrize("task", ["segmentation", "backbone"])
def test_default_init_checkpoint_is_called_degenerate_not_pass_or_fail(task, tmp_path, capsys):
    """transformers' constructors without training give ~0 outputs: nothing can be compared, and parity
    must say so (exit 9) rather than pass on max abs 0 / cosine 1 or fail on denormals."""
    transformers = pytest.importorskip("transformers")
    from tests.conftest import ARCH

    config = transformers.MobileViTV2Config(num_labels=5, image_size=64, width_multiplier=0.5)
    config.architectures = [ARCH[task]]
    folder = tmp_path / "ckpt"
    getattr(transformers, ARCH[task])(config).eval().save_pretrained(folder)
    capsys.readouterr()
    out = tmp_path / "out"
    assert (
        main(["--target", "onnx", "--checkpoint", str(folder), "--out", str(out), "--precision", "fp32,fp16"])
        == 9
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "degenerate" in err[0] and "untrained default weights?" in err[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["parity"]["status"] for a in manifest["artifacts"]] == ["degenerate", "degenerate"]
    assert not any(a["parity"]["passed"] for a in manifest["artifacts"])
    assert main(["check", str(out)]) == 9


def test_force_removes_what_an_earlier_export_wrote(exported, tmp_path):
    """--force into an earlier output folder: the folder then holds exactly what the new manifest lists
    (plus files the tool never wrote)."""
    import shutil

    out = tmp_path / "again"
    shutil.copytree(exported, out)
    (out / "notes.txt").write_text("mine")
    assert main(["--target", "onnx", *SMALL, "--precision", "fp32", "--out", str(out), "--force"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {a["path"] for a in manifest["artifacts"]}
    assert listed == {"mobilevitv2-0.5-classification-fp32.onnx"}
    assert {p.name for p in out.iterdir()} == listed | {
        "manifest.json",
        "report.md",
        "report.png",
        "notes.txt",
    }
