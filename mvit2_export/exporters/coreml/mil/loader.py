"""Read a saved .mlpackage back from disk into a flat list of ops the interpreter can execute.

We deliberately go through the on-disk artifact (spec protobuf + weight blob) rather than any
in-memory MIL program, so what runs is exactly what was saved: casts, folded constants,
compressed weights and the image preprocessing ops the converter inserted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ....errors import UnsupportedOpError

# Function inputs of these spec types carry pixels, not tensors: Core ML turns the image into a
# [1, C, H, W] float tensor in this channel order before the program's own scale/bias ops run.
_IMAGE_CHANNELS = {"RGB": ("R", "G", "B"), "BGR": ("B", "G", "R"), "GRAYSCALE": ("L",)}
_IMAGE_CHANNELS["GRAYSCALE_FLOAT16"] = ("L",)


@dataclass(frozen=True)
class MilOp:
    """One MIL operation: input parameter -> var name(s), and its outputs with declared dtype/shape."""

    type: str
    name: str
    inputs: dict[str, str | tuple[str, ...]]
    outputs: tuple[str, ...]
    out_dtypes: tuple[np.dtype | None, ...]
    out_shapes: tuple[tuple[int, ...] | None, ...]
    const_value: Any = None
    has_blocks: bool = False


@dataclass(frozen=True)
class ImageInput:
    name: str
    channels: tuple[str, ...]  # channel order the program's input tensor expects, e.g. ("B","G","R")
    height: int
    width: int


@dataclass
class LoadedProgram:
    path: Path
    spec_version: int
    ops: list[MilOp]
    input_names: list[str]
    input_dtypes: dict[str, np.dtype]
    input_shapes: dict[str, tuple[int, ...] | None]
    output_names: list[str]
    image_inputs: dict[str, ImageInput] = field(default_factory=dict)
    class_labels: list[str] | None = None


def _np_dtype(builtin: Any) -> np.dtype | None:
    """numpy dtype of a MIL builtin, or None for str/dict/list (no numeric cast applies)."""
    from coremltools.converters.mil.mil import types

    try:
        if types.is_tensor(builtin):
            builtin = builtin.get_primitive()
        if types.is_str(builtin) or types.is_dict(builtin) or types.is_list(builtin):
            return None
        dt = np.dtype(types.nptype_from_builtin(builtin))
    except Exception:  # sub-byte and exotic types: leave the implementation's dtype alone
        return None
    return dt if dt.kind in "fiub" else None


def _static_shape(var: Any) -> tuple[int, ...] | None:
    from coremltools.converters.mil.mil.types.symbolic import any_symbolic

    try:
        shape = var.shape
    except Exception:
        return None
    if shape is None or any_symbolic(shape):
        return None
    return tuple(int(s) for s in shape)


def _model_dir(path: Path) -> Path:
    """Directory holding model.mlmodel and weights/, following Manifest.json when present."""
    manifest = path / "Manifest.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        root = info.get("rootModelIdentifier")
        item = info.get("itemInfoEntries", {}).get(root, {})
        rel = item.get("path")
        if rel:
            return (path / "Data" / rel).parent
    return path / "Data" / "com.apple.CoreML"


def load_mlpackage(path: str | Path) -> LoadedProgram:
    """Parse the spec and MIL program of a saved mlprogram package."""
    from coremltools.converters.mil.frontend.milproto import load as milproto
    from coremltools.proto import Model_pb2

    path = Path(path)
    mdir = _model_dir(path)
    spec = Model_pb2.Model()
    spec.ParseFromString((mdir / "model.mlmodel").read_bytes())
    if spec.WhichOneof("Type") != "mlProgram":
        raise UnsupportedOpError(f"{path} is not an mlprogram (model type {spec.WhichOneof('Type')})")
    prog = milproto.load(spec, spec.specificationVersion, file_weights_dir=str(mdir / "weights"))
    func = prog.functions["main"]

    ops: list[MilOp] = []
    class_labels: list[str] | None = None
    for op in func.operations:
        inputs: dict[str, str | tuple[str, ...]] = {}
        for k, v in op.inputs.items():
            inputs[k] = tuple(u.name for u in v) if isinstance(v, (list, tuple)) else v.name
        const_value = op.outputs[0].val if op.op_type == "const" else None
        if op.op_type == "classify":
            classes_var = op.inputs["classes"]
            class_labels = [str(c) for c in classes_var.val] if classes_var.val is not None else None
        ops.append(
            MilOp(
                type=op.op_type,
                name=op.name,
                inputs=inputs,
                outputs=tuple(o.name for o in op.outputs),
                out_dtypes=tuple(_np_dtype(o.sym_type) for o in op.outputs),
                out_shapes=tuple(_static_shape(o) for o in op.outputs),
                const_value=const_value,
                has_blocks=bool(op.blocks),
            )
        )

    input_names = list(func.inputs.keys())
    image_inputs: dict[str, ImageInput] = {}
    for desc in spec.description.input:
        if desc.type.WhichOneof("Type") == "imageType":
            it = desc.type.imageType
            space = Model_pb2.ImageFeatureType.ColorSpace.Name(it.colorSpace)
            if space not in _IMAGE_CHANNELS:
                raise UnsupportedOpError(f"image input {desc.name!r} has unsupported color space {space}")
            image_inputs[desc.name] = ImageInput(desc.name, _IMAGE_CHANNELS[space], it.height, it.width)
    return LoadedProgram(
        path=path,
        spec_version=spec.specificationVersion,
        ops=ops,
        input_names=input_names,
        input_dtypes={n: _np_dtype(v.dtype) or np.dtype(np.float32) for n, v in func.inputs.items()},
        input_shapes={n: _static_shape(v) for n, v in func.inputs.items()},
        output_names=[o.name for o in func.outputs],
        image_inputs=image_inputs,
        class_labels=class_labels,
    )
