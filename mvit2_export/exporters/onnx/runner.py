"""onnxruntime CPU runner, the op histogram audit and the latency benchmark of an .onnx artifact."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from ...model.preprocess import images_to_pixel_values
from ..base import default_threads

RUNTIME = "onnxruntime"
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def make_session(path: Path, threads: int | None = None, spinning: bool = True):  # -> InferenceSession
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    if not spinning:  # idle intra-op threads sleep instead of spinning (onnxruntime's default is to spin)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """uint8 RGB [B,H,W,3] -> float32 outputs in graph (= reference) order."""

    runtime = RUNTIME

    def __init__(self, path: Path, threads: int | None = None, spinning: bool = True) -> None:
        self.session = make_session(path, threads, spinning)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_type = _NP_TYPES.get(inp.type, np.float32)
        self.input_shape = list(inp.shape)

    def feed(self, images: np.ndarray) -> np.ndarray:
        if self.input_type == np.uint8:  # embedded preprocessing: the graph takes camera pixels
            return np.ascontiguousarray(images, dtype=np.uint8)
        return images_to_pixel_values(images).astype(self.input_type, copy=False)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        outs = self.session.run(None, {self.input_name: self.feed(images)})
        return [np.asarray(o, dtype=np.float32) for o in outs]


def _count(
    nodes: Iterable[onnx.NodeProto], functions: dict[tuple[str, str], onnx.FunctionProto], hist: Counter
) -> None:
    for node in nodes:
        fn = functions.get((node.domain, node.op_type))
        if fn is not None:  # a call to a local function: count what it runs, not the call
            _count(fn.node, functions, hist)
        else:
            hist[node.op_type] += 1
        for attr in node.attribute:  # If/Loop/Scan bodies
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _count(g.node, functions, hist)


def onnx_op_histogram(path: Path | str) -> dict[str, int]:
    """op_type -> count over the main graph, subgraphs and (inlined per call) local functions."""
    proto = onnx.load(str(path), load_external_data=False)
    functions = {(f.domain, f.name): f for f in proto.functions}
    hist: Counter = Counter()
    _count(proto.graph.node, functions, hist)
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))
