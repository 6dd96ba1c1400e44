"""Read and edit .tflite flatbuffers with ai-edge-litert's generated schema (no TensorFlow needed).

litert-torch has no metadata API, but the TFLite schema has `Model.metadata`: named buffers the
runtime ignores (TFLite Support's "TFLITE_METADATA" is one). We store our manifest-like JSON under the
name "mvit2_export" so the artifact describes itself (labels, preprocessing, layouts, provenance).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

METADATA_NAME = "mvit2_export"


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _builtin_names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


def op_histogram_of(buf: bytes) -> dict[str, int]:
    """Operator name -> count over all subgraphs, largest first (what the interpreter would execute)."""
    schema = _schema()
    model = schema.Model.GetRootAs(buf, 0)
    names = _builtin_names()
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        custom = oc.CustomCode()
        codes.append(custom.decode() if custom else names.get(code, str(code)))
    hist: Counter[str] = Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for o in range(sg.OperatorsLength()):
            hist[codes[sg.Operators(o).OpcodeIndex()]] += 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def op_histogram(path: Path) -> dict[str, int]:
    return op_histogram_of(Path(path).read_bytes())


def read_metadata_of(buf: bytes) -> dict[str, Any]:
    schema = _schema()
    model = schema.Model.GetRootAs(buf, 0)
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if md.Name() and md.Name().decode() == METADATA_NAME:
            data = model.Buffers(md.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode()) if isinstance(data, np.ndarray) else {}
    return {}


def read_metadata(path: Path) -> dict[str, Any]:
    return read_metadata_of(Path(path).read_bytes())


def read_model(buf: bytes) -> Any:
    """The flatbuffer as LiteRT's object API model, every buffer's data a numpy array. Buffers stored by
    offset (ai-edge-quantizer writes them so) come back as bytearrays, which the generated `BufferT.Pack`
    writes one `PrependUint8` call per byte: re-packing a quantized width 0.5 model took ~10 s, 90% of a
    TFLite int8 search's time (profiled: 320M calls for 19 candidates). As arrays, one vector copy."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(buf))
    for buffer in model.buffers or []:
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.frombuffer(bytes(buffer.data), dtype=np.uint8)
    return model


def with_metadata(buf: bytes, props: dict[str, Any]) -> bytes:
    """The flatbuffer with our metadata entry set (replacing an older one of the same name)."""
    from ai_edge_litert.tools import flatbuffer_utils

    schema = _schema()
    model = read_model(buf)
    model.metadata = [
        m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())
    ]
    data = schema.BufferT()
    data.data = np.frombuffer(json.dumps(props, sort_keys=True, default=str).encode(), dtype=np.uint8)
    model.buffers.append(data)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# The suffixes ai-edge-quantizer gives the tensor it inserts before a graph output (model_modifier.py).
_IO_SUFFIXES = ("_dequant", "_quantized")


def repair_signature_outputs(buf: bytes) -> bytes:
    """Point every SignatureDef output at a tensor that is a subgraph output.

    ai-edge-quantizer repoints the signature only when its inserted DEQUANTIZE/QUANTIZE feeds the graph
    output alone (`instr.consumers == [-1]` in ModelModifier._has_transform_before_output). When the
    output tensor is also read inside the graph (the backbone's pooler MEAN, kept float, reads
    last_hidden_state), one DEQUANTIZE feeds both, the subgraph output becomes `<name>_dequant`, and the
    signature still names the int8 intermediate: LiteRT's signature runner then fails with "Tensor data
    is null" (and so would an app's). Returns `buf` unchanged when every signature output is consistent.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = read_model(buf)
    changed = False
    for sig in model.signatureDefs or []:
        graph = model.subgraphs[sig.subgraphIndex]
        outputs = {_text(graph.tensors[i].name): int(i) for i in graph.outputs}
        for item in sig.outputs or []:
            if int(item.tensorIndex) in outputs.values():
                continue
            name = _text(graph.tensors[item.tensorIndex].name)
            match = [outputs[name + s] for s in _IO_SUFFIXES if name + s in outputs]
            if len(match) != 1:
                raise ValueError(f"signature output {_text(item.name)!r} is not a subgraph output")
            item.tensorIndex = match[0]
            changed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else buf


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def io_dtypes(buf: bytes) -> tuple[list[str], list[str]]:
    """numpy dtype names of the main subgraph's inputs and outputs (int8 after full-integer quantization)."""
    schema = _schema()
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    sg = schema.Model.GetRootAs(buf, 0).Subgraphs(0)

    def name(i: int) -> str:
        t = types.get(sg.Tensors(i).Type(), "?")
        return t

    return [name(sg.Inputs(i)) for i in range(sg.InputsLength())], [
        name(sg.Outputs(i)) for i in range(sg.OutputsLength())
    ]
