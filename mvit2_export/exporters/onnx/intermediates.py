"""Every intermediate value of an .onnx artifact, for `check --localize`.

The graph is copied with each node output promoted to a graph output (onnxruntime keeps requested
outputs through its fusions), run once, and the values returned in node (execution) order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from .runner import OnnxRunner, make_session


def onnx_intermediates(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    model = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    existing = {o.name for o in model.graph.output}
    order = [o for n in model.graph.node for o in n.output if o]
    for name in order:
        info = known.get(name)
        if (
            name in existing
            or info is None
            or info.type.tensor_type.elem_type
            not in (
                onnx.TensorProto.FLOAT,
                onnx.TensorProto.FLOAT16,
            )
        ):
            continue
        model.graph.output.append(info)
    with tempfile.TemporaryDirectory() as tmpdir:  # never write beside the artifact: OUT may be read-only
        tmp = Path(tmpdir) / "localize.onnx"
        onnx.save(model, str(tmp))
        session = make_session(tmp, None)
        feed = OnnxRunner(path).feed(images)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: feed}), strict=True))
    return {n: np.asarray(values[n], dtype=np.float32) for n in order if n in values}
