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
from ...rewrites import export_program, rewrite_module
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


def rewritten_body(model: nn.Module, image_size: int) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The `tflite` rewrite pipeline on the NCHW batch-1 program (mobile models run at batch 1).

    Not re-exported after the rewrites: litert-torch runs torch.export on it anyway (which also
    re-checks the program), and a second trace costs ~2 s at width 1.0.
    """
    x = torch.rand(1, 3, image_size, image_size)
    gm, results = rewrite_module(export_program(model.eval(), x), "tflite")
    return gm, [r.to_dict() for r in results]


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


# Conversion is the slow step (a minute at width 0.5 on two cores): exporting fp32, fp16 and int8 of one
# model in a process reuses it. Keyed on the module and its parameters' storage and sums, so a
# model edited in place is converted again (version counters alone are bumped by torch.export itself).
# The entry keeps the module alive, so its id cannot be reused by another model while cached.
_CACHE: dict[tuple[Any, ...], tuple[nn.Module, Lowered]] = {}


def _key(model: nn.Module, image_size: int, embedded: bool) -> tuple[Any, ...]:
    with torch.no_grad():
        versions = tuple(
            (t.data_ptr(), float(t.double().sum())) for t in (*model.parameters(), *model.buffers())
        )
    return (id(model), image_size, embedded, versions)


def lower(model: nn.Module, image_size: int, embedded: bool) -> Lowered:
    key = _key(model, image_size, embedded)
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (model, _lower(model, image_size, embedded))
    return _CACHE[key][1]


def _lower(model: nn.Module, image_size: int, embedded: bool) -> Lowered:
    body, rewrites = rewritten_body(model, image_size)
    names = list(model.output_names)
    wrapped = io_module(body, names, embedded)  # no .eval(): unlifted programs refuse train()
    sample = example_input(image_size, embedded)
    with torch.no_grad():
        outs = wrapped(sample)
    layouts = {k: ("NHWC" if v.dim() == 4 else {2: "NC"}.get(v.dim(), "")) for k, v in outs.items()}
    input_name = "images" if embedded else "pixel_values"
    sig = signature_name(model.task)
    flat = to_flatbuffer(wrapped, sig, input_name, sample)
    return Lowered(flat, sig, input_name, names, layouts, rewrites)
