"""TFLite export of small models (width 0.5, 64 px) against our reference and transformers' model (the oracle).

Conversion is the slow step (~1 min per model on two cores), so each head is converted once per module
and fp16 / int8 reuse the fp32 lowering (the exporter caches it per model within a process).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvit2_export import load_model
from mvit2_export.data.images import parity_images
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.model.preprocess import images_to_pixel_values
from mvit2_export.parity.run import reference_outputs, run_parity
from tests.conftest import hf_forward

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
from mvit2_export.exporters.tflite import TFLiteExporter  # noqa: E402

SIZE = 64
FORBIDDEN = ("BATCH_MATMUL", "GATHER", "GATHER_ND", "BROADCAST_TO")


@pytest.fixture(scope="module")
def exported(hf_checkpoint, tmp_path_factory):
    """(task, precision, embedded) -> (hf model, our model, artifact); one conversion per (task, embedded)."""
    cache: dict[tuple, tuple] = {}

    def get(task: str, precision: str = "fp32", embedded: bool = False, **backend):
        key = (task, precision, embedded, tuple(sorted(backend.items())))
        if key not in cache:
            folder, hf = hf_checkpoint(task, image_size=SIZE)
            model = cache.setdefault(("model", task), load_model(folder))
            dest = tmp_path_factory.mktemp(f"tflite-{task}") / "model.tflite"
            opts = ExportOptions(
                precision=precision, image_size=SIZE, embed_preprocessing=embedded, backend=backend
            )
            cache[key] = (hf, model, TFLiteExporter().export(model, opts, dest))
        return cache[key]

    return get


def runner(art, kernels: str = "xnnpack", threads: int = 2):
    return TFLiteExporter().load_runner(art.path, art.to_entry(), threads, kernels)


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_fp32_matches_reference_transformers_and_reference_kernels(exported, task):
    hf, model, art = exported(task)
    xnn = runner(art)
    run_parity(model, xnn, "fp32", SIZE).raise_if_failed(f"tflite fp32 {task}")
    images = parity_images(SIZE, n_photos=3, n_random=1)
    oracle = hf_forward(hf, torch.from_numpy(images_to_pixel_values(images)))
    oracle = oracle if isinstance(oracle, tuple) else (oracle,)
    got = xnn.run(images)
    assert len(got) == len(oracle) == len(model.output_names)
    for g, r in zip(got, oracle, strict=True):
        r = r.numpy()
        assert g.shape == r.shape and g.dtype == np.float32  # reference layout (NCHW) from the runner
        assert float(np.abs(g - r).max()) <= 1e-4 * float(np.abs(r).max())
    # XNNPACK against the reference kernels (no delegate): catches delegate bugs
    ref_kernels = runner(art, "reference", 1).run(images)
    for a, b in zip(got, ref_kernels, strict=True):
        assert float(np.abs(a - b).max()) <= 1e-4 * float(np.abs(b).max())


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_layout_and_op_audit(exported, task):
    _, model, art = exported(task)
    hist = TFLiteExporter().op_histogram(art.path)
    # NHWC end to end: the transformer stages run on the feature map's grid view, the pool reads NHWC.
    assert "TRANSPOSE" not in hist, hist
    assert not [op for op in FORBIDDEN if op in hist], hist
    # The softmax over the patch axis (two grid axes) is max/sub/exp/sum/div on the one-channel query
    # (at this size the last stage has one patch per position: the converter drops its max over 1x1).
    assert "SOFTMAX" not in hist and hist["EXP"] == 9 and hist["REDUCE_MAX"] >= 6, hist
    assert art.inputs[0].shape == [1, SIZE, SIZE, 3] and art.inputs[0].layout == "NHWC"
    it = runner(art).interpreter
    assert list(it.get_input_details()[0]["shape"]) == [1, SIZE, SIZE, 3]
    meta = TFLiteExporter().metadata(art.path)
    assert meta["output_names"] == list(model.output_names)
    assert meta["signature"] in it.get_signature_list()
    assert meta["id2label"] == {str(k): v for k, v in model.config.id2label.items()}
    if task == "segmentation":  # logits stay NHWC in the artifact, the manifest says so
        assert art.outputs[0].layout == "NHWC" and art.outputs[0].shape[-1] == model.config.num_labels
        assert "RESIZE_BILINEAR" in hist  # ASPP pooling branch; its half-pixel parity is in the fp32 test


def test_aspp_bilinear_resize_half_pixel(exported):
    """Feature maps of 4x4 at 128 px would hide a wrong resize behind a 1x1 pool; check the op's flags."""
    _, _, art = exported("segmentation")
    it = runner(art, "reference", 1).interpreter
    ops = [o for o in it._get_ops_details() if o["op_name"] == "RESIZE_BILINEAR"]
    assert ops  # the pooled 1x1 map is broadcast by RESIZE_BILINEAR (half_pixel_centers, align_corners=False)
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(art.path.read_bytes()))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    resize = [
        op
        for op in m.subgraphs[0].operators
        if codes[op.opcodeIndex] == schema.BuiltinOperator.RESIZE_BILINEAR
    ]
    for op in resize:
        assert op.builtinOptions.alignCorners is False or op.builtinOptions.alignCorners == 0
        assert op.builtinOptions.halfPixelCenters


def test_embedded_preprocessing_equals_reference_on_uint8(exported):
    _, model, art = exported("classification", embedded=True)
    assert art.inputs[0].dtype == "uint8" and art.inputs[0].layout == "NHWC"
    r = runner(art)
    assert r.input_dtype == np.uint8
    images = parity_images(SIZE)
    got = r.run(images)[0]
    ref = reference_outputs(model, images)[0]
    assert float(np.abs(got - ref).max()) <= 1e-4 * float(np.abs(ref).max())


def test_fp16_passes_thresholds(exported):
    _, model, art = exported("segmentation", "fp16")
    run_parity(model, runner(art), "fp16", SIZE).raise_if_failed("tflite fp16")
    fp32 = exported("segmentation")[2]
    assert art.path.stat().st_size < 0.7 * fp32.path.stat().st_size


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_exports_runs_and_reports(exported, mode):
    _, model, art = exported("classification", "int8", int8_mode=mode)
    assert art.options["int8_mode"] == mode
    report = run_parity(model, runner(art), "int8", SIZE)  # reported, not asserted against the int8 gate
    m = report.metrics["logits"]
    assert m["finite"] == 1.0 and "top1" in m, m
    # static int8 agreement on random weights is poor today (see RESULTS-tflite.md); catch only breakage
    assert m["cosine"] > (0.99 if mode == "dynamic" else 0.5), m
    hist = TFLiteExporter().op_histogram(art.path)
    assert not [op for op in FORBIDDEN if op in hist], hist
    if mode == "static":  # full-integer: int8 I/O, the runner quantizes / dequantizes
        assert art.inputs[0].dtype == "int8" and runner(art).input_quant[0] > 0
    else:
        assert art.inputs[0].dtype == "float32"


def test_int8_static_with_embedded_preprocessing(exported):
    _, model, art = exported("classification", "int8", embedded=True, int8_mode="static")
    r = runner(art)
    assert r.input_dtype == np.uint8 and not r.input_quant[0]  # camera pixels in, not a quantized tensor
    m = run_parity(model, r, "int8", SIZE).metrics["logits"]
    assert m["finite"] == 1.0 and m["cosine"] > 0.5, m


def test_int8_static_backbone_signature_names_real_outputs(exported):
    """The backbone's pooler (a float MEAN) reads last_hidden_state, a graph output: ai-edge-quantizer
    inserts one DEQUANTIZE for both and left the SignatureDef naming the int8 intermediate, so LiteRT's
    signature runner died with "Tensor data is null". Every signature output must be a subgraph output."""
    from ai_edge_litert.tools import flatbuffer_utils

    _, model, art = exported("backbone", "int8", int8_mode="static")
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(art.path.read_bytes()))
    for sig in m.signatureDefs:
        outputs = set(int(i) for i in m.subgraphs[sig.subgraphIndex].outputs)
        assert {int(o.tensorIndex) for o in sig.outputs} == outputs
    report = run_parity(model, runner(art), "int8", SIZE)  # ran through the signature runner
    for name in model.output_names:
        assert report.metrics[name]["finite"] == 1.0 and report.metrics[name]["cosine"] > 0.5


def test_convolutions_only_recipe_keeps_every_element_wise_op_float(exported):
    """The search's second recipe (exporters/tflite/exporter.py): when no configuration of the all-int8
    recipe holds the gate, only CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED are int8. Measured on a
    trained fixture (width 0.5 @ 128) where all-int8 reached 0.985 at best with 6 of 12 groups float:
    this recipe held the gate at 0.998 on 1000 held-out crops."""
    from ai_edge_litert.tools import flatbuffer_utils

    from mvit2_export.exporters.tflite import quantize
    from mvit2_export.exporters.tflite.flatbuffer import _builtin_names

    _, _, art = exported("classification")
    q = quantize.StaticInt8(
        art.path.read_bytes(), art.options["signature"], art.inputs[0].name, parity_images(SIZE, 2, 1), False
    )
    every, convs = q.quantizable_ops(), q.quantizable_ops(quantize.CONV_OPS)
    assert convs and set(convs) < set(every)

    def int8_outputs(flat: bytes) -> dict[str, set[str]]:
        """op kind -> the output tensor types of its ops."""
        m = flatbuffer_utils.read_model_from_bytearray(bytearray(flat))
        names = _builtin_names()
        codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode)) for c in m.operatorCodes]
        graph, out = m.subgraphs[0], {}
        for op in graph.operators:
            kind = codes[op.opcodeIndex]
            out.setdefault(kind, set()).update(int(graph.tensors[t].type) for t in op.outputs)
        return out

    int8 = 9  # TensorType.INT8
    all_int8 = int8_outputs(q.quantize([]))
    convs_only = int8_outputs(q.quantize([n for n in every if n not in set(convs)]))
    for kind in quantize.CONV_OPS:
        if kind in convs_only:
            assert convs_only[kind] == {int8}, (kind, convs_only[kind])
    assert int8 in all_int8["MUL"] and int8 in all_int8["LOGISTIC"]
    for kind in ("MUL", "ADD", "LOGISTIC", "SUB"):
        assert int8 not in convs_only.get(kind, set()), (kind, convs_only[kind])
