"""Store LayerNormalization's uniform Scale/B at the size their broadcast needs: one value.

Before::

    LayerNormalization(x [B, C, P, N], Scale = ones[C, P, N], axis=1)     # 4.85 MB of ones at width 1.0

After::

    LayerNormalization(x [B, C, P, N], Scale = ones[1], axis=1)

aten.layer_norm without an affine (what `onnx::group_norm_to_layer_norm` emits; the affine is per channel
and stays a separate Mul/Add or is folded into the next conv) is exported with an all-ones Scale of the
full normalized shape: at width 1.0 @256 that was 4.85 MB of a 24.5 MB fp32 file (19.6 MB of parameters),
and 41% of the int8 file. ONNX defines the scale stage as `Mul(Normalized, Scale)`, i.e. with numpy
broadcasting; onnxruntime (>= 1.20) takes a broadcast Scale in its fused kernel (checked in the test).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def shrink_uniform_norm_params(proto: onnx.ModelProto) -> int:
    """Replace every uniform Scale/B initializer used only by LayerNormalization with a [1] tensor;
    returns how many were shrunk."""
    graph = proto.graph
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            users.setdefault(name, []).append((node, i))
    outputs = {o.name for o in graph.output}
    shrunk = 0
    for k, init in enumerate(graph.initializer):
        uses = users.get(init.name, [])
        if init.name in outputs or not uses:
            continue
        if not all(
            n.op_type == "LayerNormalization" and n.domain in ("", "ai.onnx") and i in (1, 2) for n, i in uses
        ):
            continue
        values = numpy_helper.to_array(init)
        if values.size <= 1 or not np.all(values == values.flat[0]):
            continue
        graph.initializer[k].CopyFrom(numpy_helper.from_array(values.reshape(-1)[:1].copy(), init.name))
        shrunk += 1
    if shrunk:  # the old shapes may be recorded for the initializers: drop them
        names = {i.name for i in graph.initializer}
        keep = [vi for vi in graph.value_info if vi.name not in names]
        del graph.value_info[:]
        graph.value_info.extend(keep)
    return shrunk
