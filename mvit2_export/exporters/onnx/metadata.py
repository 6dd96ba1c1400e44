"""What an ONNX artifact says about itself (`metadata_props`): labels, expected input, provenance."""

from __future__ import annotations

import json
from typing import Any

import onnx
from torch import nn

from ...model import Preprocessor
from ..base import provenance

JSON_KEYS = {
    "image_size",
    "output_names",
    "id2label",
    "preprocessing",
    "untrained",
    "rewrites",
    "export_options",
}


def preprocessing_dict(image_size: int, embedded: bool) -> dict[str, Any]:
    """The preprocessing the graph input expects. With embedded preprocessing the graph rescales, flips to BGR
    and transposes itself, so the caller only resizes and crops and feeds uint8 RGB NHWC."""
    pre = Preprocessor.for_image_size(image_size).to_dict()
    if embedded:
        pre.update(do_rescale=False, do_flip_channel_order=False, channel_order="RGB", layout="NHWC")
        pre["dtype"] = "uint8"
    else:
        pre["dtype"] = "float32"
    pre["embedded_in_graph"] = embedded
    return pre


def artifact_metadata(
    model: nn.Module,
    image_size: int,
    embedded: bool,
    precision: str,
    rewrites: list[dict[str, Any]],
    options: dict[str, Any],
) -> dict[str, str]:
    origin = provenance(model)
    return {
        **origin,
        "precision": precision,
        "image_size": str(image_size),
        "output_names": json.dumps(list(model.output_names)),
        "id2label": json.dumps(origin["id2label"]),  # metadata_props are strings: JSON for the rest
        "preprocessing": json.dumps(preprocessing_dict(image_size, embedded)),
        "untrained": json.dumps(origin["untrained"]),
        "rewrites": json.dumps(rewrites),
        "export_options": json.dumps(options, default=str),
    }


def set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace our keys, keep any others (e.g. written by a converter)."""
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def read_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}
