"""Per-op latency profile of a .tflite: each operator cut out into a one-op model and timed alone.

ai-edge-litert's Python Interpreter exposes no op profiler, so every operator of the main subgraph is
rebuilt as its own flatbuffer (its tensors and constant buffers only; non-constant inputs become model
inputs) and run with the same runtime (XNNPACK, n threads). It misses cross-op cache effects and the
delegate's own fusions, but ranks where the time goes; the sum is compared to the whole-model latency.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _one_op_model(model: Any, op_index: int) -> bytes:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    sg = model.subgraphs[0]
    op = sg.operators[op_index]
    used = [t for t in list(op.inputs) + list(op.outputs) if t >= 0]
    remap = {old: new for new, old in enumerate(dict.fromkeys(used))}
    buffers = [schema.BufferT()]
    tensors = []
    for old in remap:
        t = copy.copy(sg.tensors[old])
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if data is not None and len(data) and old not in op.outputs:
            buffers.append(model.buffers[t.buffer])
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
        tensors.append(t)
    is_const = {remap[o]: buffers[tensors[remap[o]].buffer].data is not None for o in remap}
    new_sg = schema.SubGraphT()
    new_sg.tensors = tensors
    new_op = copy.copy(op)
    new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
    new_op.outputs = [remap[t] for t in op.outputs]
    new_sg.operators = [new_op]
    new_sg.inputs = [remap[t] for t in dict.fromkeys(op.inputs) if t >= 0 and not is_const[remap[t]]]
    new_sg.outputs = list(new_op.outputs)
    m = schema.ModelT()
    m.version, m.operatorCodes, m.description = model.version, model.operatorCodes, "one op"
    m.subgraphs, m.buffers = [new_sg], buffers
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def op_profile(path: Path, threads: int = 2, runs: int = 20) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(op type -> summed median ms, per-op rows sorted slowest first)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    from .flatbuffer import _builtin_names

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    names = _builtin_names()
    codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes]
    rng = np.random.default_rng(0)
    rows = []
    for i, op in enumerate(model.subgraphs[0].operators):
        it = Interpreter(model_content=_one_op_model(model, i), num_threads=threads)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], (rng.random(d["shape"]) * 2 - 1).astype(d["dtype"]))
        it.invoke()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            it.invoke()
            times.append((time.perf_counter() - t0) * 1e3)
        out = it.get_output_details()[0]
        rows.append(
            {
                "index": i,
                "op": codes[op.opcodeIndex],
                "ms": float(np.median(times)),
                "out_shape": list(out["shape"]),
            }
        )
    by_type: dict[str, float] = defaultdict(float)
    for r in rows:
        by_type[r["op"]] += r["ms"]
    return dict(sorted(by_type.items(), key=lambda kv: -kv[1])), sorted(rows, key=lambda r: -r["ms"])
