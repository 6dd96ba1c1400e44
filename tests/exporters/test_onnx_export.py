"""ONNX export of small models (width 0.5) against our reference and transformers' model (the oracle)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from mvit2_export import __version__, load_model
from mvit2_export.data.images import parity_images
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.model import Preprocessor
from mvit2_export.model.preprocess import images_to_pixel_values
from mvit2_export.parity.run import reference_outputs, run_parity
from mvit2_export.rewrites import PIPELINES
from tests.conftest import hf_forward

pytest.importorskip("onnxruntime")
from mvit2_export.exporters.onnx import OnnxExporter, onnx_op_histogram  # noqa: E402
from mvit2_export.exporters.onnx.quantize import INT8_OP_TYPES  # noqa: E402

SIZES = {"classification": 64, "segmentation": 64, "backbone": 64}
FORBIDDEN = ("Col2Im", "Gather", "Expand", "InstanceNormalization", "MatMul", "Einsum")


@pytest.fixture(scope="module")
def exported(hf_checkpoint, tmp_path_factory):
    """task -> (hf model, our model, fp32 artifact, runner); one trace per task for the whole module."""
    cache: dict[str, tuple] = {}

    def get(task: str):
        if task not in cache:
            folder, hf = hf_checkpoint(task, image_size=SIZES[task])
            model = load_model(folder)
            dest = tmp_path_factory.mktemp(f"onnx-{task}") / "model.onnx"
            art = OnnxExporter().export(model, ExportOptions(image_size=SIZES[task]), dest)
            cache[task] = (hf, model, art, OnnxExporter().load_runner(art.path, art.to_entry(), 1))
        return cache[task]

    return get


def assert_close(got: list[np.ndarray], ref: list[np.ndarray], rel: float = 1e-4) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape and g.dtype == np.float32
        scale = float(np.abs(r).max())
        assert scale > 1e-3, "trivially small oracle output"
        assert float(np.abs(g - r).max()) <= rel * scale


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_fp32_matches_reference_and_transformers(exported, task):
    hf, model, art, runner = exported(task)
    report = run_parity(model, runner, "fp32", SIZES[task])
    report.raise_if_failed(f"onnx fp32 {task}")
    images = parity_images(SIZES[task], n_photos=3, n_random=1)
    oracle = hf_forward(hf, torch.from_numpy(images_to_pixel_values(images)))
    oracle = oracle if isinstance(oracle, tuple) else (oracle,)
    assert_close(runner.run(images), [o.numpy() for o in oracle])
    assert [o.name for o in art.outputs] == list(model.output_names)


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_dynamic_batch_and_names(exported, task):
    _, model, art, runner = exported(task)
    proto = onnx.load(str(art.path))
    assert [i.name for i in proto.graph.input] == ["pixel_values"]
    assert [o.name for o in proto.graph.output] == list(model.output_names)
    s = SIZES[task]
    assert art.inputs[0].shape == ["batch", 3, s, s] and art.inputs[0].dtype == "float32"
    assert all(o.shape[0] == "batch" for o in art.outputs)
    if task == "classification":
        assert art.outputs[0].shape == ["batch", len(model.config.id2label)]
    images = parity_images(s, n_photos=3, n_random=0)
    for batch in (images[:1], images):
        assert_close(runner.run(batch), reference_outputs(model, batch))


def test_metadata(exported):
    _, model, art, _ = exported("classification")
    meta = {p.key: p.value for p in onnx.load(str(art.path)).metadata_props}
    assert json.loads(meta["id2label"]) == {str(k): v for k, v in model.config.id2label.items()}
    pre = json.loads(meta["preprocessing"])
    expected = Preprocessor.for_image_size(64).to_dict()
    assert {k: pre[k] for k in expected} == expected
    assert pre["channel_order"] == "BGR" and pre["layout"] == "NCHW" and pre["rescale_factor"] == 1 / 255
    assert meta["checkpoint_sha256"] == model.checkpoint.sha256 and len(meta["checkpoint_sha256"]) == 64
    assert json.loads(meta["untrained"]) is False
    assert meta["mvit2_export_version"] == __version__
    rewrites = json.loads(meta["rewrites"])
    assert [r["id"] for r in rewrites] == PIPELINES["onnx"] and rewrites == art.rewrites
    decoded = OnnxExporter().metadata(art.path)  # what `inspect` shows
    assert decoded["rewrites"] == rewrites and decoded["untrained"] is False


def test_audit_fp32_graph(exported):
    _, _, art, _ = exported("classification")
    hist = onnx_op_histogram(art.path)
    assert hist["Conv"] > 0 and hist == OnnxExporter().op_histogram(art.path)
    assert not [op for op in FORBIDDEN if op in hist], hist
    assert "Transpose" not in hist and hist["DepthToSpace"] == 3  # patching is a conv; folding DepthToSpace
    assert not list(art.path.parent.glob("*.data")), "weights must be inside the .onnx"


@pytest.mark.parametrize(
    ("task", "fp16_io"), [("classification", False), ("classification", True), ("backbone", False)]
)
def test_fp16(exported, tmp_path, task, fp16_io):
    _, model, _, _ = exported(task)  # traced once: fp16 re-uses the cached fp32 graph
    opts = ExportOptions(precision="fp16", image_size=SIZES[task], backend={"fp16_io": fp16_io})
    art = OnnxExporter().export(model, opts, tmp_path / "fp16.onnx")
    assert art.inputs[0].dtype == ("float16" if fp16_io else "float32")
    proto = onnx.load(str(art.path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    runner = OnnxExporter().load_runner(art.path, art.to_entry(), 1)
    run_parity(model, runner, "fp16", SIZES[task]).raise_if_failed(f"onnx fp16 {task}")


@pytest.mark.parametrize("op_types", [None, "all"])
def test_int8(exported, tmp_path, record_property, op_types):
    _, model, _, _ = exported("classification")
    backend = {} if op_types is None else {"int8_op_types": op_types}
    opts = ExportOptions(precision="int8", image_size=64, backend=backend)
    art = OnnxExporter().export(model, opts, tmp_path / "int8.onnx")
    hist = onnx_op_histogram(art.path)
    assert hist.get("QuantizeLinear", 0) > 0 and hist.get("DequantizeLinear", 0) > 0
    settings = art.options["int8"]
    assert settings["per_channel"] and settings["quant_format"] == "QDQ"
    assert settings["op_types_to_quantize"] == (op_types or list(INT8_OP_TYPES))
    assert settings["reduce_range"]  # 7-bit weights: u8s8 kernels without VNNI saturate on trained weights
    producers = {o: n.op_type for n in onnx.load(str(art.path)).graph.node for o in n.output}
    assert producers["logits"] == "Gemm"  # a float classifier: the output is not quantized
    runner = OnnxExporter().load_runner(art.path, art.to_entry(), 1)
    report = run_parity(model, runner, "int8", 64).to_dict()
    m = report["metrics"]["logits"]
    record_property("int8_agreement", {k: m[k] for k in ("top1", "top5", "cosine", "max_abs_rel")})
    print(
        f"int8 {op_types or 'default'} agreement (random weights): top1={m['top1']:.3f} cosine={m['cosine']:.4f}"
    )
    assert m["finite"] == 1.0 and m["cosine"] > 0.5  # random weights: agreement is reported, not gated


def test_convolutions_only_recipe_quantizes_only_tensors_a_convolution_touches(exported, tmp_path):
    """The search's second recipe (exporters/onnx/exporter.py): when no configuration of the first holds
    the gate, only Conv / Gemm / MatMul are int8. Every activation then quantized is one such op's input
    or output; in the first recipe some are read and written only by element-wise ops. Measured on a
    trained fixture (width 0.5 @ 128) where the first recipe reached 0.988 at best with 6 of 12 groups
    float: this one held the gate at 0.992 with 1 group float."""
    from mvit2_export.exporters.onnx.quantize import CONV_OP_TYPES, OnnxInt8

    _, _, art, _ = exported("classification")
    images = parity_images(64, 2, 1)
    q = OnnxInt8(art.path, tmp_path, "pixel_values", images, False, list(INT8_OP_TYPES), "x86-avx2")
    every, convs = q.quantizable_nodes(), q.quantizable_nodes(CONV_OP_TYPES)
    assert convs and set(convs) < set(every)

    def element_wise_only(path) -> list[str]:
        """Quantized activations whose producer and readers are all non-convolution ops."""
        graph = onnx.load(str(path)).graph
        made = {o: n for n in graph.node for o in n.output}
        readers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)
        found = []
        for q_node in (n for n in graph.node if n.op_type == "QuantizeLinear"):
            x = q_node.input[0]
            if x not in made:  # a weight or the graph input
                continue
            users = [u for dq in readers.get(q_node.output[0], []) for u in readers.get(dq.output[0], [])]
            kinds = {made[x].op_type, *(u.op_type for u in users)}
            if not kinds & set(CONV_OP_TYPES):
                found.append(x)
        return found

    assert element_wise_only(q.quantize([]))
    assert element_wise_only(q.quantize([n for n in every if n not in set(convs)])) == []
