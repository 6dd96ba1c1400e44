"""Runners for a saved .mlpackage: Core ML itself on macOS, the NumPy MIL interpreter elsewhere.

Both read the artifact from disk, so what is checked is what was shipped. Input: uint8 RGB [B,H,W,3];
the program has batch 1 (Core ML image inputs are single images), so a batch runs image by image.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UsageError
from ...model.preprocess import images_to_pixel_values
from ..base import stack_per_image
from .convert import INPUT_NAME
from .settings import COMPUTE_UNITS


def can_predict() -> bool:
    """True where coremltools can run Core ML predictions (macOS with its native extension)."""
    return sys.platform == "darwin" and importlib.util.find_spec("coremltools.libcoremlpython") is not None


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise UsageError(f"runner input must be uint8 RGB [B,H,W,3], got {images.dtype} {images.shape}")


class MilReferenceRunner:
    """Executes the saved program with `mvit2_export.exporters.coreml.mil` (fp16 ops computed in float16)."""

    runtime = "mil-reference"
    not_timed = "Core ML latency needs macOS (MLModel.predict)"  # a NumPy oracle, not a device

    def __init__(self, path: Path, output_names: list[str]) -> None:
        from .mil import MilInterpreter

        self.interp = MilInterpreter.from_mlpackage(path)
        self.interp.check_supported()
        self.output_names = output_names
        self.image_input = INPUT_NAME in self.interp.program.image_inputs

    def feed(self, image: np.ndarray) -> dict[str, Any]:
        # An image input takes the camera's uint8 RGB pixels (the interpreter reorders to the spec's BGR
        # and the program scales by 1/255); a tensor input takes the reference pixel_values.
        return {INPUT_NAME: image if self.image_input else images_to_pixel_values(image[None])}

    def run_raw(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return self.interp.run(self.feed(image))

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        _check_images(images)
        # one batch through the interpreter, each image's outputs bit-identical to its own run
        outs = self.interp.run_batch([self.feed(img) for img in images])
        return stack_per_image([[np.asarray(o[n]) for n in self.output_names] for o in outs])


class CoreMLRunner:
    """`MLModel.predict` on macOS, with a compute-units choice (ALL by default)."""

    runtime = "coreml-mac"

    def __init__(self, path: Path, output_names: list[str], compute_units: str = "ALL") -> None:
        import coremltools as ct

        if compute_units not in COMPUTE_UNITS:
            raise UsageError(f"compute_units {compute_units!r} is not one of {', '.join(COMPUTE_UNITS)}")
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        self.output_names = output_names
        spec_input = self.model.get_spec().description.input[0]
        self.image_input = spec_input.type.WhichOneof("Type") == "imageType"
        self.compute_units = compute_units

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        from PIL import Image

        _check_images(images)
        per_image = []
        for img in images:
            x = Image.fromarray(img) if self.image_input else images_to_pixel_values(img[None])
            outs = self.model.predict({INPUT_NAME: x})
            per_image.append([np.asarray(outs[n]) for n in self.output_names])
        return stack_per_image(per_image)
