"""The ONNX exporter: fp32 / fp16 / int8 artifacts, each a single self-contained .onnx file.

The modules that import onnx/onnxruntime are imported in the methods that use them: the class (and so
`--help`, `--target all` and the missing-backend error) must load without the `onnx` extra.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...data.images import calibration_images
from ...errors import UsageError
from ...manifest import ArtifactEntry
from ...model.preprocess import images_to_pixel_values
from ...progress import step
from ..base import Artifact, Exporter, ExportOptions, Runner, TensorSpec, atomic_output
from ..options import OptionSpec
from ..registry import register

OPSETS = range(18, 24)  # the dynamo exporter needs >= 18; 23 is the newest onnxruntime/onnxscript cover
DEFAULT_OPSET = 18


def resolve_opset(backend: dict[str, Any]) -> int:
    opset = backend.get("opset", DEFAULT_OPSET)
    if isinstance(opset, str) and opset.strip().isdigit():
        opset = int(opset)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise UsageError(
            f"ONNX opset {opset!r} is not supported (supported: {OPSETS.start}-{OPSETS.stop - 1})"
        )
    return opset


def _specs(values: Any, embedded_input: bool = False) -> list[TensorSpec]:
    import onnx

    dtypes = {
        onnx.TensorProto.FLOAT: "float32",
        onnx.TensorProto.FLOAT16: "float16",
        onnx.TensorProto.UINT8: "uint8",
    }
    specs = []
    for v in values:
        t = v.type.tensor_type
        shape: list[int | str] = [d.dim_param or d.dim_value for d in t.shape.dim]
        layout = "NHWC" if embedded_input else {2: "NC", 3: "NLC", 4: "NCHW"}.get(len(shape), "")
        specs.append(TensorSpec(v.name, shape, dtypes.get(t.elem_type, str(t.elem_type)), layout))
    return specs


@register
class OnnxExporter(Exporter):
    target: ClassVar[str] = "onnx"
    extra: ClassVar[str] = "onnx"
    suffix: ClassVar[str] = ".onnx"
    pipeline: ClassVar[str] = "onnx"
    required_modules: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "onnxscript")
    forbidden_ops: ClassVar[frozenset[str]] = frozenset(
        {
            "MatMul",
            "Einsum",
            "Col2Im",
            "Gather",
            "GatherElements",
            "GatherND",
            "Expand",
            "InstanceNormalization",
        }
    )
    transpose_op: ClassVar[str | None] = "Transpose"
    cost: ClassVar[int] = 3  # fp32 export at width 1.0: 16 s (benchmarks/RESULTS.md)
    color: ClassVar[str] = "#4C72B0"
    option_specs: ClassVar[tuple[OptionSpec, ...]] = (
        OptionSpec(
            "--opset",
            "opset",
            "int",
            f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1}",
            default=DEFAULT_OPSET,
        ),
        OptionSpec("--fp16-io", "fp16_io", "flag", "ONNX fp16: fp16 inputs/outputs too (default fp32 IO)"),
    )

    def calibrates(self, options: ExportOptions) -> bool:
        return options.precision == "int8"

    def check_options(self, options: ExportOptions) -> None:
        super().check_options(options)
        resolve_opset(options.backend)  # an unsupported opset fails before any work

    def export(self, model: nn.Module, options: ExportOptions, dest: Path) -> Artifact:
        import onnx

        from . import convert, quantize
        from .metadata import artifact_metadata, set_metadata
        from .runner import RUNTIME

        self.check_available()
        self.check_options(options)
        opset = resolve_opset(options.backend)
        dest = Path(dest)
        embedded = options.embed_preprocessing
        # Read calibration images before any work: a bad folder fails fast and writes nothing.
        calib = (
            calibration_images(options.calibration_images, options.image_size)
            if options.precision == "int8"
            else None
        )
        int8_ops = quantize.resolve_op_types(options.backend) if options.precision == "int8" else None
        fp16_io = bool(options.backend.get("fp16_io", False))
        extra: dict[str, Any] = {"opset": opset, "exporter": "torch.onnx dynamo", "simplifier": "onnxslim"}

        with atomic_output(dest, options.force) as tmp:
            graph = convert.fp32_graph(model, options.image_size, embedded, opset)
            proto = graph.proto
            if options.precision == "fp16":
                step("fp16 conversion")
                proto = quantize.to_fp16(proto, fp16_io)
                extra["fp16_io"] = fp16_io
            elif calib is not None:  # int8
                step("int8 calibration and quantization")
                fp32_path = tmp.with_name("fp32.onnx")
                onnx.save(proto, str(fp32_path))
                q = quantize.OnnxInt8(
                    fp32_path, tmp.parent, graph.input_name, calib, embedded, int8_ops, options.int8_isa
                )
                chosen = self._int8(q, options, fp32_path, dest.name, extra)
                extra["int8"] = q.settings
                proto = onnx.load(str(chosen))
            props = artifact_metadata(
                model, options.image_size, embedded, options.precision, graph.rewrites, extra
            )
            set_metadata(proto, props)
            step("check and save")
            convert.check(proto)
            onnx.save(proto, str(tmp), save_as_external_data=False)

        return Artifact(
            target=self.target,
            precision=options.precision,
            path=dest,
            inputs=_specs(proto.graph.input, embedded),
            outputs=_specs(proto.graph.output),
            rewrites=graph.rewrites,
            runtime=RUNTIME,
            options=extra,
        )

    @staticmethod
    def _int8(q: Any, options: ExportOptions, fp32_path: Path, label: str, extra: dict[str, Any]) -> Path:
        """All-int8, or with a gate the fastest mixed-precision configuration that holds it."""
        from ..int8_search import search_recipes
        from .quantize import CONV_OP_TYPES
        from .runner import OnnxRunner

        if options.gate is None:
            return q.quantize([])
        result, recipe_floats = search_recipes(
            q.quantize,
            lambda p: OnnxRunner(p, None, True),
            q.quantizable_nodes(),
            q.quantizable_nodes(CONV_OP_TYPES),
            OnnxRunner(fp32_path, None, True),
            q.images,
            options.gate,
            label,
        )
        extra["int8_search"] = result.to_dict()
        q.settings["recipe"] = result.trials[result.chosen].recipe or "every op of int8_op_types"
        q.settings["float_nodes"] = q.outputs_float + result.float_nodes() + recipe_floats
        return result.path

    def load_runner(
        self, path: Path, artifact: ArtifactEntry, threads: int | None = None, spinning: bool = True
    ) -> Runner:
        from .runner import OnnxRunner

        self.check_available()
        return OnnxRunner(Path(path), threads, spinning)

    def bench_settings(self) -> list[dict[str, Any]]:
        # Spinning intra-op threads win on a quiet host and halve the speed on a loaded 2-core one.
        return [{"spinning": True}, {"spinning": False}]

    def op_histogram(self, path: Path) -> dict[str, int]:
        from .runner import onnx_op_histogram

        return onnx_op_histogram(path)

    def metadata(self, path: Path) -> dict[str, Any]:
        """Our metadata_props with the JSON-valued ones decoded; everything else stays a string."""
        import onnx

        from .metadata import JSON_KEYS, read_metadata

        meta: dict[str, Any] = read_metadata(onnx.load(str(path), load_external_data=False))
        for key in JSON_KEYS & meta.keys():
            try:
                meta[key] = json.loads(meta[key])
            except ValueError:
                pass  # not written by us: keep the raw string
        return meta

    def lowered(
        self, model: nn.Module, artifact: ArtifactEntry, image_size: int
    ) -> tuple[nn.Module, Callable[[np.ndarray], torch.Tensor]]:
        from ...rewrites.export import dynamic_batch_example
        from . import convert

        embedded = artifact.inputs[0]["name"] == "images"
        prepared = convert.prepared(model, image_size, embedded)
        # torch.onnx.export traces the rewritten module again, and the ONNX value names are that trace's
        # node names: trace it the same way so the reference's names are the artifact's.
        args, shapes = dynamic_batch_example(prepared.example)
        module = torch.export.export(prepared.module, args, dynamic_shapes=shapes, strict=False).module()
        if embedded:
            return module, lambda images: torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        return module, lambda images: torch.from_numpy(images_to_pixel_values(images))

    def intermediates(
        self, path: Path, artifact: ArtifactEntry, images: np.ndarray, lowered: nn.Module | None = None
    ) -> dict[str, np.ndarray]:
        from .intermediates import onnx_intermediates

        return onnx_intermediates(Path(path), images)
