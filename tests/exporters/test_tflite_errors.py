"""Bad input to the TFLite exporter: one-line typed errors, nothing (half-)written, no conversion started."""

from __future__ import annotations

import pytest

from mvit2_export.errors import ExportError, OutputExistsError, UsageError
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.model import MobileViTV2Config, build_model
from mvit2_export.model.checkpoint import CheckpointInfo

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
from mvit2_export.exporters.tflite import TFLiteExporter, convert  # noqa: E402


@pytest.fixture
def model():
    m = build_model(
        MobileViTV2Config(width_multiplier=0.5, image_size=64, id2label={0: "a", 1: "b"}), "classification"
    )
    m.checkpoint = CheckpointInfo("test", None, None, untrained=True)
    return m


@pytest.fixture
def no_conversion(monkeypatch):
    """Any attempt to convert fails the test: bad input must be rejected before the slow step."""

    def boom(*a, **k):
        raise AssertionError("conversion started")

    monkeypatch.setattr(convert, "rewritten_body", boom)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_existing_output_without_force(model, tmp_path, no_conversion):
    dest = tmp_path / "m.tflite"
    dest.write_bytes(b"keep")
    with pytest.raises(OutputExistsError) as exc:
        TFLiteExporter().export(model, ExportOptions(image_size=64), dest)
    assert "already exists" in _one_line(exc)
    assert dest.read_bytes() == b"keep"


@pytest.mark.parametrize(
    "precision, backend, match",
    [
        ("int8", {"int8_mode": "weights"}, "unknown int8_mode"),
        ("fp32", {"int8_mode": "static"}, "applies to precision int8"),
        ("fp32", {"opset": 17}, "unknown tflite option"),
        ("fp32", {"kernels": "gpu"}, "kernels must be"),
        ("int4", {}, "does not support precision"),
    ],
)
def test_unsupported_options(model, tmp_path, no_conversion, precision, backend, match):
    dest = tmp_path / "m.tflite"
    with pytest.raises(UsageError) as exc:
        TFLiteExporter().export(
            model, ExportOptions(precision=precision, image_size=64, backend=backend), dest
        )
    assert match in _one_line(exc)
    assert list(tmp_path.iterdir()) == []


def test_dynamic_int8_with_calibration_images(model, tmp_path, no_conversion):
    opts = ExportOptions(
        precision="int8", image_size=64, calibration_images=tmp_path, backend={"int8_mode": "dynamic"}
    )
    with pytest.raises(UsageError) as exc:
        TFLiteExporter().export(model, opts, tmp_path / "m.tflite")
    assert "no calibration" in _one_line(exc)


def test_calibration_folder_without_readable_images(model, tmp_path, no_conversion):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    (calib / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    opts = ExportOptions(precision="int8", image_size=64, calibration_images=calib)
    with pytest.raises(UsageError) as exc:
        TFLiteExporter().export(model, opts, out / "m.tflite")
    assert "no readable images" in _one_line(exc)
    assert not (out / "m.tflite").exists()


def test_failed_conversion_leaves_nothing(model, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise ExportError("litert-torch conversion failed: boom")

    monkeypatch.setattr(convert, "_lower", fail)
    dest = tmp_path / "m.tflite"
    with pytest.raises(ExportError) as exc:
        TFLiteExporter().export(model, ExportOptions(image_size=64), dest)
    assert "boom" in _one_line(exc)
    assert list(tmp_path.iterdir()) == []
