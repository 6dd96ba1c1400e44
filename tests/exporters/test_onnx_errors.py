"""Bad input to the ONNX exporter: one-line typed errors, nothing half-written left behind."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from mvit2_export.errors import ExportError, OutputExistsError, UsageError
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.model import MobileViTV2Config, build_model
from mvit2_export.model.checkpoint import CheckpointInfo

pytest.importorskip("onnxruntime")
from mvit2_export.exporters.onnx import OnnxExporter, convert, quantize  # noqa: E402


@pytest.fixture
def model():
    config = MobileViTV2Config(width_multiplier=0.5, image_size=64, id2label={0: "a", 1: "b"})
    m = build_model(config, "classification").eval()
    m.checkpoint = CheckpointInfo("test", None, None, untrained=True)
    return m


@pytest.fixture
def no_trace(monkeypatch):
    """Fail the test if an error case reaches the (slow) trace."""

    def boom(*args, **kwargs):
        raise AssertionError("the exporter traced the model before validating its input")

    monkeypatch.setattr(convert, "prepared", boom)


@pytest.mark.parametrize("opset", [11, 17, 99, "x", True])
def test_bad_opset(model, tmp_path, no_trace, opset):
    with pytest.raises(UsageError, match="opset") as exc:
        OnnxExporter().export(
            model, ExportOptions(image_size=64, backend={"opset": opset}), tmp_path / "m.onnx"
        )
    assert "\n" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("op_types", [[], "", 3, ["Conv", 1]])
def test_bad_int8_op_types(model, tmp_path, no_trace, op_types):
    opts = ExportOptions(precision="int8", image_size=64, backend={"int8_op_types": op_types})
    with pytest.raises(UsageError, match="int8_op_types"):
        OnnxExporter().export(model, opts, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_without_force(model, tmp_path, no_trace):
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"original")
    with pytest.raises(OutputExistsError):
        OnnxExporter().export(model, ExportOptions(image_size=64), dest)
    assert dest.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_empty_calibration_dir(model, tmp_path, no_trace):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "notes.txt").write_text("not an image")
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    opts = ExportOptions(precision="int8", image_size=64, calibration_images=calib)
    with pytest.raises(UsageError, match="calibration"):
        OnnxExporter().export(model, opts, out / "m.onnx")
    assert not out.exists() or list(out.iterdir()) == []


def _tiny_graph() -> convert.Fp32Graph:
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 64, 64])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["logits"])], "g", [x], [y])
    return convert.Fp32Graph(helper.make_model(graph), [], "pixel_values", ["logits"])


def test_failure_mid_export_leaves_nothing(model, tmp_path, monkeypatch):
    """int8 writes intermediates (fp32, pre-processed, partial output): all go when quantization fails."""

    def failing_quantize(self, float_nodes):
        assert self.pre_path.exists()  # the fp32 and pre-processed models are written by now
        (self.workdir / "int8-0.onnx").write_bytes(b"half-written")
        raise ExportError("int8 quantization failed: simulated")

    monkeypatch.setattr(convert, "fp32_graph", lambda *a, **k: _tiny_graph())
    monkeypatch.setattr(quantize.OnnxInt8, "quantize", failing_quantize)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="simulated"):
        OnnxExporter().export(model, ExportOptions(precision="int8", image_size=64), out / "m.onnx")
    assert list(out.iterdir()) == []


def test_failed_check_leaves_nothing(model, tmp_path, monkeypatch):
    broken = _tiny_graph()
    broken.proto.graph.node[0].input[0] = "undefined"  # onnx.checker rejects it
    monkeypatch.setattr(convert, "fp32_graph", lambda *a, **k: broken)
    with pytest.raises(ExportError, match="onnx.checker"):
        OnnxExporter().export(model, ExportOptions(image_size=64), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
