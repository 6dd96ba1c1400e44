"""transformers' MobileViTV2 (width 0.5, 64 px, random BN stats) through every pipeline, then converters."""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest
import torch

from mvit2_export.rewrites import apply_pipeline, export_program

from ._helpers import ATOL, counts, hf_model, max_diff, slow

pytest.importorskip("transformers")

FORBIDDEN = {
    "im2col",
    "col2im",
    "expand",
    "expand_as",
    "group_norm",
    "batch_norm",
    "dropout",
    "feature_dropout",
}
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@functools.cache
def original(kind: str) -> torch.export.ExportedProgram:
    return export_program(hf_model(kind), X, dynamic_batch=True)


@functools.cache
def rewritten(kind: str, pipeline: str):
    return apply_pipeline(original(kind), pipeline)


@pytest.mark.parametrize("pipeline", ["onnx", "coreml", "tflite"])
@pytest.mark.parametrize("kind", ["classifier", "segmentation"])
def test_pipeline_preserves_outputs_and_removes_ops(kind: str, pipeline: str):
    before = counts(original(kind))
    assert before["im2col"] == 3 and before["col2im"] == 3 and before["group_norm"] == 21
    new, results = rewritten(kind, pipeline)
    fired = {r.id: r.fired for r in results}
    assert fired["common::fold_conv_batch_norm"] == before["batch_norm"]
    # At 64 px the ASPP's map is 2x2: its dilation 6/12/18 convs only read padding off centre.
    assert fired["common::drop_padding_taps"] == (3 if kind == "segmentation" else 0)
    after = counts(new)
    assert not FORBIDDEN & set(after), after
    if pipeline == "tflite":
        assert fired["tflite::patches_to_channels_last"] == 3
        assert after["linear"] >= 36 and "pixel_unshuffle" not in after
        # On the NHWC grid the patch axis N is two axes, so each softmax over it is its five ops.
        assert "softmax" not in after and after["amax"] == 9
        # 3 stages x (NCHW->NHWC, NHWC->NCHW), + the classifier pool's NHWC read (each cancels in litert)
        assert after["permute"] == 6 + (kind == "classifier")
    else:
        assert after["softmax"] == 9  # kept as one softmax per attention
    # 18 of the 21 norms feed a 1x1 conv: their affine is folded into it
    assert fired["common::fold_channel_affine_into_conv"] == 18
    assert max_diff(original(kind), new, X) <= ATOL
    assert max_diff(original(kind), new, torch.randn(3, 3, 64, 64)) <= ATOL  # dynamic batch survived


def test_timm_if_available():
    timm = pytest.importorskip("timm")
    model = timm.create_model("mobilevitv2_050", pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    ep = export_program(model, x)
    for pipeline in ("onnx", "coreml", "tflite"):
        new, _ = apply_pipeline(ep, pipeline)
        assert max_diff(ep, new, x) <= ATOL


@slow
def test_onnx_converts_and_matches(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    new, _ = rewritten("classifier", "onnx")
    path = tmp_path / "m.onnx"
    torch.onnx.export(new, dynamo=True).save(str(path))
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert not {"Col2Im", "Expand", "InstanceNormalization", "BatchNormalization", "Gather"} & set(ops), ops
    sess = ort.InferenceSession(str(path))
    x = torch.randn(3, 3, 64, 64)  # a batch size not traced: dynamic batch in the ONNX graph
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, original("classifier").module()(x).detach().numpy(), atol=1e-4)


@slow
def test_coreml_converts():
    ct = pytest.importorskip("coremltools")
    new, _ = rewritten("classifier", "coreml")
    ml = ct.convert(new.run_decompositions({}), convert_to="mlprogram")
    ops = collections.Counter(
        op.type
        for f in ml.get_spec().mlProgram.functions.values()
        for b in f.block_specializations.values()
        for op in b.operations
    )
    # coremltools fuses each norm's per-channel mul+add back into a MIL batch_norm (at most 21; the
    # exporter disables that fusion); the 25 conv BatchNorms are folded into the convs. 64 model convs
    # plus 3 one-hot depthwise convs that do the patching; no transposes.
    assert ops.get("batch_norm", 0) <= 21 and "instance_norm" not in ops and ops["conv"] == 67, ops
    assert "transpose" not in ops, ops


@slow
def test_litert_converts_without_transposes(tmp_path):
    litert_torch = pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    x = torch.randn(1, 3, 64, 64)
    # Mobile models run at batch 1: a static export, as the TFLite exporter does.
    new, _ = apply_pipeline(export_program(hf_model("classifier"), x, dynamic_batch=False), "tflite")
    body = new.module()

    class NHWC(torch.nn.Module):  # the mobile convention, as the TFLite exporter's signature takes it
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return body(image.permute(0, 3, 1, 2))

    edge = litert_torch.convert(NHWC(), (x.permute(0, 2, 3, 1).contiguous(),))
    path = tmp_path / "m.tflite"
    edge.export(str(path))
    interp = Interpreter(model_path=str(path))
    ops = collections.Counter(d["op_name"] for d in interp._get_ops_details())
    assert "TRANSPOSE" not in ops and "BATCH_MATMUL" not in ops, ops  # NHWC end to end
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).numpy())
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, original("classifier").module()(x).detach().numpy(), atol=1e-4)
