"""--embed-preprocessing: the ONNX graph takes uint8 RGB NHWC images and equals the reference."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from mvit2_export.data.images import parity_images
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.model import MobileViTV2Config, build_model
from mvit2_export.model.checkpoint import CheckpointInfo
from mvit2_export.model.random_init import randomize_weights
from mvit2_export.parity.run import reference_outputs, run_parity

pytest.importorskip("onnxruntime")
from mvit2_export.exporters.onnx import OnnxExporter  # noqa: E402


def small_model(task: str = "classification"):
    config = MobileViTV2Config(width_multiplier=0.5, image_size=64, id2label={i: f"c{i}" for i in range(7)})
    model = randomize_weights(build_model(config, task), 3)
    model.checkpoint = CheckpointInfo("test", None, None, untrained=True)
    return model


def test_embedded_preprocessing_equals_reference(tmp_path):
    model = small_model()
    opts = ExportOptions(image_size=64, embed_preprocessing=True)
    art = OnnxExporter().export(model, opts, tmp_path / "pre.onnx")
    assert art.inputs[0].name == "images" and art.inputs[0].dtype == "uint8"
    assert art.inputs[0].shape == ["batch", 64, 64, 3] and art.inputs[0].layout == "NHWC"
    proto = onnx.load(str(art.path))
    pre = json.loads({p.key: p.value for p in proto.metadata_props}["preprocessing"])
    assert pre["channel_order"] == "RGB" and pre["layout"] == "NHWC" and pre["embedded_in_graph"] is True

    runner = OnnxExporter().load_runner(art.path, art.to_entry(), 1)
    run_parity(model, runner, "fp32", 64).raise_if_failed("onnx embedded preprocessing")
    images = parity_images(64, n_photos=2, n_random=1)  # also batch 3 through the dynamic axis
    got, ref = runner.run(images), reference_outputs(model, images)
    assert np.abs(got[0] - ref[0]).max() <= 1e-4 * np.abs(ref[0]).max()

    # fp16 and int8 of the same model re-use the traced graph; the uint8 input stays uint8.
    for precision in ("fp16", "int8"):
        art = OnnxExporter().export(
            model,
            ExportOptions(precision=precision, image_size=64, embed_preprocessing=True),
            tmp_path / f"{precision}.onnx",
        )
        assert art.inputs[0].dtype == "uint8"
        report = run_parity(model, OnnxExporter().load_runner(art.path, art.to_entry(), 1), precision, 64)
        assert report.passed, report.failures()  # int8 on random weights: reported, not gated
