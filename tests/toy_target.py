"""A target that lives entirely in the test folder: it registers itself, and every command takes it.

`.npz` artifact: the rewritten program's outputs on the parity images, keyed by each image's sha1, plus
its op histogram. Its runner answers for those images only, which is all parity and `check` ask.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mvit2_export.data.images import parity_images
from mvit2_export.exporters import Artifact, Exporter, ExportOptions, OptionSpec, TensorSpec, register
from mvit2_export.exporters.base import atomic_output
from mvit2_export.model.preprocess import images_to_pixel_values
from mvit2_export.rewrites import export_program, rewrite_module


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class ToyRunner:
    runtime = "numpy-lookup"

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            self.outputs = {k: data[k] for k in data.files if k != "op_histogram"}

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        per_image = [[self.outputs[f"{_key(im)}:{i}"] for i in range(self.n_outputs)] for im in images]
        return [np.stack([outs[i] for outs in per_image]) for i in range(self.n_outputs)]

    @property
    def n_outputs(self) -> int:
        return 1 + max(int(k.rsplit(":", 1)[1]) for k in self.outputs)


@register
class ToyExporter(Exporter):
    target: ClassVar[str] = "toy"
    extra: ClassVar[str] = "toy"
    suffix: ClassVar[str] = ".npz"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    pipeline: ClassVar[str] = "onnx"
    forbidden_ops: ClassVar[frozenset[str]] = frozenset({"aten.matmul.default", "aten.col2im.default"})
    cost: ClassVar[int] = 1
    color: ClassVar[str] = "#8172B2"
    option_specs: ClassVar[tuple[OptionSpec, ...]] = (
        OptionSpec("--toy-compress", "compress", "flag", "toy: write a compressed .npz"),
    )

    def export(self, model: nn.Module, options: ExportOptions, dest: Path) -> Artifact:
        self.check_options(options)
        size = options.image_size
        images = parity_images(size)
        x = torch.from_numpy(images_to_pixel_values(images[:1]))
        program, results = rewrite_module(export_program(model.eval(), x), self.pipeline)
        histogram: dict[str, int] = {}
        for node in program.graph.nodes:
            if node.op == "call_function":
                histogram[str(node.target)] = histogram.get(str(node.target), 0) + 1
        arrays: dict[str, Any] = {"op_histogram": np.array(json.dumps(histogram))}
        with torch.no_grad():
            for image in images:
                outs = program(torch.from_numpy(images_to_pixel_values(image[None])))
                outs = outs if isinstance(outs, (tuple, list)) else (outs,)
                for i, o in enumerate(outs):
                    arrays[f"{_key(image)}:{i}"] = o[0].numpy()
        with atomic_output(dest, options.force) as tmp:
            save = np.savez_compressed if options.backend.get("compress") else np.savez
            with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a path
                save(f, **arrays)
        shape = [1, 3, size, size]
        return Artifact(
            self.target,
            options.precision,
            dest,
            [TensorSpec("pixel_values", shape, "float32", "NCHW")],
            [TensorSpec(n, [], "float32", "") for n in model.output_names],
            [r.to_dict() for r in results],
            ToyRunner.runtime,
            {"compressed": bool(options.backend.get("compress"))},
        )

    def load_runner(self, path: Path, artifact: dict[str, Any], threads: int | None = None) -> ToyRunner:
        return ToyRunner(Path(path))

    def op_histogram(self, path: Path) -> dict[str, int]:
        with np.load(path) as data:
            return json.loads(str(data["op_histogram"]))
