"""Reference model -> fp32 .tflite flatbuffer via the `tflite` rewrite pipeline and litert-torch."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import ExportError
from ...progress import step
from ...rewrites import Prepared, prepare
from .layout import io_module


@dataclass
class Lowered:
    """An fp32 flatbuffer and what produced it."""

    flatbuffer: bytes
    signature: str
    input_name: str
    output_names: list[str]
    output_layouts: dict[str, str]
    rewrites: list[dict[str, Any]] = field(default_factory=list)


def signature_name(task: str) -> str:
    return {"classification": "classify", "segmentation": "segment"}.get(task, "features")


def example_input(image_size: int, embedded: bool) -> torch.Tensor:
    if embedded:
        return torch.randint(0, 256, (1, image_size, image_size, 3), dtype=torch.uint8)
    return torch.rand(1, image_size, image_size, 3, dtype=torch.float32)


def rewritten_body(model: nn.Module, image_size: int) -> Prepared:
    """The `tflite` rewrite pipeline on the NCHW batch-1 program (mobile models run at batch 1); the
    layout wrapper (`io_module`) goes around the rewritten body.

    Not re-exported after the rewrites: litert-torch runs torch.export on it anyway (which also
    re-checks the program), and a second trace costs ~2 s at width 1.0.
    """
    return prepare(model, "tflite", torch.rand(1, 3, image_size, image_size))


@contextlib.contextmanager
def _quiet() -> Any:
    """litert-torch prints a progress tree and absl logs per stage; keep the CLI's output readable."""
    logging.getLogger("litert_torch").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def to_flatbuffer(
    module: nn.Module, sig: str, input_name: str, sample: torch.Tensor, quant_config: Any = None
) -> bytes:
    import litert_torch

    try:
        with _quiet():
            edge = litert_torch.signature(sig, module, sample_kwargs={input_name: sample}).convert(
                quant_config=quant_config
            )
        return edge.model_content()
    except Exception as exc:  # converter errors are long MLIR dumps: keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"litert-torch conversion failed: {first[:300]}") from exc


def lower(model: nn.Module, image_size: int, embedded: bool) -> Lowered:
    """The fp32 flatbuffer, converted once per prepared program (conversion is the slow step: a minute at
    width 0.5 on two cores) and shared by fp32, fp16 and int8."""
    body = rewritten_body(model, image_size)
    key = ("tflite-fp32", embedded)
    if key not in body.derived:
        body.derived[key] = _lower(model, body, image_size, embedded)
    return body.derived[key]


def lowered_module(model: nn.Module, image_size: int, embedded: bool) -> tuple[nn.Module, torch.Tensor]:
    """The module litert-torch converts (rewritten body in its NHWC layout wrapper) and an example input."""
    body = rewritten_body(model, image_size)
    return io_module(body.module, list(model.output_names), embedded), example_input(image_size, embedded)


def _lower(model: nn.Module, body: Prepared, image_size: int, embedded: bool) -> Lowered:
    names = list(model.output_names)
    wrapped = io_module(body.module, names, embedded)  # no .eval(): unlifted programs refuse train()
    sample = example_input(image_size, embedded)
    with torch.no_grad():
        outs = wrapped(sample)
    layouts = {k: ("NHWC" if v.dim() == 4 else {2: "NC"}.get(v.dim(), "")) for k, v in outs.items()}
    input_name = "images" if embedded else "pixel_values"
    sig = signature_name(model.task)
    step("litert-torch conversion")
    flat = to_flatbuffer(wrapped, sig, input_name, sample)
    return Lowered(flat, sig, input_name, names, layouts, body.rewrites)
