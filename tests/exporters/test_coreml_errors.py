"""Core ML exporter: bad input fails in one typed line and leaves no (half-written) .mlpackage."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("coremltools")

from mvit2_export.errors import ExportError, OutputExistsError, UsageError  # noqa: E402
from mvit2_export.exporters import get_exporter  # noqa: E402
from mvit2_export.exporters.base import ExportOptions  # noqa: E402
from mvit2_export.exporters.coreml import CoreMLExporter, parse_settings  # noqa: E402
from mvit2_export.model import MobileViTV2Config, build_model  # noqa: E402
from mvit2_export.model.checkpoint import CheckpointInfo  # noqa: E402


@pytest.fixture(scope="module")
def model():
    m = build_model(
        MobileViTV2Config(width_multiplier=0.5, image_size=64, id2label={0: "a", 1: "b"}), "classification"
    )
    m.checkpoint = CheckpointInfo("test", None, None, untrained=True)
    return m


def _export(model, dest: Path, precision: str = "fp16", force: bool = False, **backend):
    opts = ExportOptions(precision=precision, image_size=64, force=force, backend=backend)
    return CoreMLExporter().export(model, opts, dest)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_registry_finds_the_exporter():
    ex = get_exporter("coreml")
    assert isinstance(ex, CoreMLExporter) and ex.suffix == ".mlpackage"


@pytest.mark.parametrize(
    ("precision", "backend", "needle"),
    [
        ("fp16", {"deployment_target": "iOS12"}, "deployment target"),
        ("fp16", {"deployment_target": "android14"}, "deployment target"),
        ("w8a8", {"deployment_target": "iOS16"}, "iOS17"),
        ("w8a8", {"compute_precision": "fp32"}, "fp16"),
        ("fp16", {"compute_precision": "fp32"}, "compute_precision"),
        ("int8", {"palettize_bits": 4}, "palettized"),
        ("palettized", {"palettize_bits": 5}, "palettize_bits"),
        ("palettized", {"palettize_mode": "median"}, "palettize_mode"),
        ("int8", {"quantize_mode": "log"}, "quantize_mode"),
        ("int4", {}, "precision"),
        ("fp16", {"input_type": "video"}, "input_type"),
        ("fp16", {"opset": 17}, "unknown coreml option"),
    ],
)
def test_bad_options_are_one_line_usage_errors(model, tmp_path, precision, backend, needle):
    with pytest.raises(UsageError) as err:
        _export(model, tmp_path / "m.mlpackage", precision, **backend)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["iOS16", "ios17", "iOS18", "macOS13", "macos14", "macOS15"])
def test_deployment_targets_accepted(name):
    settings = parse_settings(ExportOptions(precision="fp16", backend={"deployment_target": name}))
    assert settings.deployment_target.lower() == name.lower()


def test_w8a8_defaults_to_ios17():
    assert parse_settings(ExportOptions(precision="w8a8")).deployment_target == "iOS17"


def test_existing_output_without_force(model, tmp_path):
    dest = tmp_path / "m.mlpackage"
    dest.mkdir()
    (dest / "keep").write_text("x")
    with pytest.raises(OutputExistsError) as err:
        _export(model, dest)
    assert "\n" not in str(err.value)
    assert (dest / "keep").read_text() == "x" and _leftovers(tmp_path) == ["m.mlpackage"]


def test_failed_conversion_leaves_nothing(model, tmp_path, monkeypatch):
    from mvit2_export.exporters.coreml import exporter as exporter_module

    def boom(*_args, **_kwargs):
        raise ExportError("coremltools could not convert the model: boom")

    monkeypatch.setattr(exporter_module, "convert_model", boom)
    with pytest.raises(ExportError):
        _export(model, tmp_path / "m.mlpackage")
    assert _leftovers(tmp_path) == []


def test_wrong_suffix(model, tmp_path):
    with pytest.raises(UsageError):
        _export(model, tmp_path / "m.onnx")
