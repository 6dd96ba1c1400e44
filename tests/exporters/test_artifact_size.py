"""Artifact size: no constant stored at a size its broadcast does not need, fp32 files at ~4 bytes per
parameter. Before `shrink_constants`, the LayerNorm scales of the ONNX graph were all-ones [C, P, N]
tensors: 4.85 MB of the 24.5 MB fp32 file at width 1.0 @256 (19.6 MB of parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from mvit2_export.exporters import available_targets

BROADCASTING = {"Mul", "Add", "Sub", "Div", "LayerNormalization"}


def uniform_broadcast_constants(proto) -> list[str]:
    """Initializers read only by broadcasting ops that repeat one value along some axis of size > 1."""
    from onnx import numpy_helper

    users: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    found = []
    for init in proto.graph.initializer:
        if not users.get(init.name) or not users[init.name] <= BROADCASTING:
            continue
        a = numpy_helper.to_array(init)
        for axis in range(a.ndim):
            if a.shape[axis] > 1 and np.array_equal(
                a, np.repeat(a.take([0], axis=axis), a.shape[axis], axis)
            ):
                found.append(f"{init.name} {a.shape} uniform along axis {axis}")
                break
    return found


def test_layer_norm_scale_is_stored_as_one_value_and_onnxruntime_agrees():
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mvit2_export.exporters.onnx.shrink_constants import shrink_uniform_norm_params

    c, p, n = 8, 4, 16
    ones = numpy_helper.from_array(np.ones((c, p, n), np.float32), "scale")
    bias = numpy_helper.from_array(np.linspace(-1, 1, c * p * n, dtype=np.float32).reshape(c, p, n), "bias")
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=1, epsilon=1e-5)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, p, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, p, n])],
        [ones, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).standard_normal((1, c, p, n)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]

    before = run(model)
    assert shrink_uniform_norm_params(model) == 1  # the bias varies: left alone
    onnx.checker.check_model(model, full_check=True)
    sizes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    assert sizes == {"scale": (1,), "bias": (c, p, n)}
    np.testing.assert_allclose(run(model), before, atol=1e-6)


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_fp32_artifacts_are_about_four_bytes_per_parameter(target, hf_checkpoint, tmp_path):
    if target not in available_targets():
        pytest.skip(f"{target} not installed")
    import mvit2_export
    from mvit2_export.manifest import size_path

    folder, hf = hf_checkpoint("segmentation", image_size=128, width_multiplier=0.75)
    manifest = mvit2_export.export(folder, target, tmp_path / "out", "fp32", check=False)
    entry = manifest.artifacts[0]
    params = manifest.model["parameters"]
    assert params == sum(p.numel() for p in hf.parameters())
    size = size_path(tmp_path / "out" / entry.path)
    assert entry.size_bytes == size
    assert size <= 1.1 * 4 * params, f"{size / 1e6:.2f} MB for {params} parameters"
    if target == "onnx":
        import onnx

        proto = onnx.load(str(tmp_path / "out" / entry.path))
        assert "LayerNormalization" in {n.op_type for n in proto.graph.node}
        assert uniform_broadcast_constants(proto) == []
