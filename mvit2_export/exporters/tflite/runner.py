"""LiteRT interpreter runner: XNNPACK (default) or the reference kernels, batch-1 artifacts looped per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...manifest import ArtifactEntry
from ..base import default_threads
from .flatbuffer import read_metadata
from .layout import to_reference_layout
from .quantize import pixel_feeds

RUNTIME = "litert"
KERNELS = ("xnnpack", "reference")


def make_interpreter(path: Path, threads: int | None = None, kernels: str = "xnnpack") -> Any:
    """`xnnpack`: builtin kernels + the default XNNPACK delegate; `reference`: BUILTIN_REF kernels, no
    delegate — slow, but an independent implementation that catches delegate (and fusion) bugs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
    resolver = OpResolverType.AUTO if kernels == "xnnpack" else OpResolverType.BUILTIN_REF
    it = Interpreter(
        model_path=str(path), num_threads=threads or default_threads(), experimental_op_resolver_type=resolver
    )
    it.allocate_tensors()
    return it


class LiteRTRunner:
    """uint8 RGB [B,H,W,3] -> float32 outputs in the reference layout (NCHW) and order."""

    runtime = RUNTIME

    def __init__(
        self,
        path: Path,
        artifact: ArtifactEntry | None = None,
        threads: int | None = None,
        kernels: str = "xnnpack",
    ) -> None:
        self.interpreter = make_interpreter(path, threads, kernels)
        meta = read_metadata(path)
        sigs = self.interpreter.get_signature_list()
        self.signature = meta.get("signature") or next(iter(sigs))
        self.fn = self.interpreter.get_signature_runner(self.signature)
        ((self.input_name, detail),) = self.fn.get_input_details().items()
        self.input_dtype = detail["dtype"]
        self.input_quant = detail["quantization"]  # (scale, zero point); scale 0 = not quantized
        self.output_names: list[str] = meta.get("output_names") or list(sigs[self.signature]["outputs"])
        layouts = {t["name"]: t["layout"] for t in (artifact.outputs if artifact else [])}
        self.layouts: dict[str, str] = layouts or meta.get("output_layouts", {})
        self.kernels = kernels

    def run_one(self, x: np.ndarray) -> list[np.ndarray]:
        scale, zero = self.input_quant
        if scale:  # full-integer model (int8 I/O): quantize the float input with the artifact's parameters
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.input_dtype)
        out = self.fn(**{self.input_name: x})
        details = self.fn.get_output_details()
        results = []
        for n in self.output_names:
            y = np.asarray(out[n])
            o_scale, o_zero = details[n]["quantization"]
            y = (y.astype(np.float32) - o_zero) * o_scale if o_scale else y.astype(np.float32)
            results.append(to_reference_layout(y, self.layouts.get(n, "")))
        return results

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        embedded = self.input_dtype == np.uint8 and not self.input_quant[0]
        feeds = pixel_feeds(np.asarray(images, dtype=np.uint8), embedded)
        per_image = [self.run_one(x) for x in feeds]
        return [np.concatenate(parts) for parts in zip(*per_image, strict=True)]
