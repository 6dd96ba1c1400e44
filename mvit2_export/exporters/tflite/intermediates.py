"""Every intermediate activation of a .tflite artifact, for `check --localize`.

LiteRT keeps every tensor when the interpreter is built with `experimental_preserve_all_tensors`. The
builtin kernels run without the XNNPACK delegate: a delegate executes the graph as one node and its
internal tensors are not kept (so a delegate-only bug is out of reach here; parity runs XNNPACK).

litert-torch names tensors after the module path only (`...layout.PixelValuesIO;176`), not after the
torch.export node, so nothing can be matched by name. Values are keyed `OPTYPE#index` (index in the
subgraph's execution order) and returned as a `ValueTrace` that also records which traced values each
op read: `parity.localize` matches them to the reference by value, whatever layout the converter chose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import ValueTrace
from .flatbuffer import _builtin_names, _schema
from .quantize import pixel_feeds


def _op_types(model: object) -> list[str]:
    names = _builtin_names()
    types = []
    for i in range(model.OperatorCodesLength()):  # type: ignore[attr-defined]
        oc = model.OperatorCodes(i)  # type: ignore[attr-defined]
        custom = oc.CustomCode()
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        types.append(custom.decode() if custom else names.get(code, str(code)))
    return types


def _as_float(value: np.ndarray, detail: dict) -> np.ndarray | None:
    """Float activations as they are; quantized ones dequantized with their (per-tensor) parameters."""
    if value.dtype.kind == "f":
        return value.astype(np.float32)
    q = detail.get("quantization_parameters", {})
    scales, zeros = q.get("scales", np.zeros(0)), q.get("zero_points", np.zeros(0))
    if value.dtype.kind in "iu" and scales.size == 1:
        return ((value.astype(np.float32) - float(zeros[0])) * float(scales[0])).astype(np.float32)
    return None  # shapes, indices, per-channel quantized tensors: not activations we can compare


def tflite_intermediates(path: Path, images: np.ndarray) -> ValueTrace:
    """Run the first image and return every op output that depends on the input, in execution order."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = Path(path)
    schema = _schema()
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    types = _op_types(model)

    it = Interpreter(
        model_path=str(path),
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    (inp,) = it.get_input_details()
    scale, zero = inp["quantization"]
    embedded = inp["dtype"] == np.uint8 and not scale
    x = pixel_feeds(np.asarray(images[:1], dtype=np.uint8), embedded)[0]
    if scale:  # full-integer input: quantize as the parity runner does
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])
    it.set_tensor(inp["index"], x)
    it.invoke()
    details = {d["index"]: d for d in it.get_tensor_details()}

    # Only values computed from the input are activations; weight DEQUANTIZE ops and the like are not.
    live = {graph.Inputs(i) for i in range(graph.InputsLength())}
    key: dict[int, str] = {}  # tensor index -> trace key
    trace = ValueTrace()
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        ins = [op.Inputs(i) for i in range(op.InputsLength()) if op.Inputs(i) >= 0]
        if not any(t in live for t in ins):
            continue
        outs = [op.Outputs(i) for i in range(op.OutputsLength())]
        live.update(outs)
        for n, t in enumerate(outs):
            value = _as_float(np.asarray(it.get_tensor(t)), details.get(t, {}))
            if value is None:
                continue
            name = f"{types[op.OpcodeIndex()]}#{o}" + (f":{n}" if len(outs) > 1 else "")
            key[t] = name
            trace.add(name, value, [key[i] for i in ins if i in key])
    return trace
