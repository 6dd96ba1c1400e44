"""The TFLite / LiteRT exporter: fp32 / fp16 / int8 .tflite files with an NHWC input and a named signature."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...data.images import calibration_images
from ...errors import UsageError
from ...manifest import ArtifactEntry
from ...model import Preprocessor
from ...model.preprocess import images_to_pixel_values
from ...progress import step
from ..base import Artifact, Exporter, ExportOptions, Runner, TensorSpec, atomic_output, provenance
from ..options import OptionSpec
from ..registry import register
from . import convert, quantize
from .flatbuffer import io_dtypes, op_histogram, read_metadata, with_metadata
from .runner import KERNELS, RUNTIME, LiteRTRunner

if TYPE_CHECKING:
    from ..base import ValueTrace


def preprocessing_dict(image_size: int, embedded: bool) -> dict[str, Any]:
    """What the caller must do before feeding the input (the graph does the rest when embedded)."""
    pre = Preprocessor.for_image_size(image_size).to_dict()
    pre["layout"] = "NHWC"
    if embedded:
        pre.update(do_rescale=False, do_flip_channel_order=False, channel_order="RGB", dtype="uint8")
    else:
        pre.update(channel_order="BGR", dtype="float32")
    pre["embedded_in_graph"] = embedded
    return pre


def _output_specs(model: nn.Module, lowered: convert.Lowered, image_size: int) -> list[TensorSpec]:
    import torch

    with torch.no_grad():
        outs = model(torch.zeros(1, 3, image_size, image_size))
    outs = outs if isinstance(outs, tuple) else (outs,)
    specs = []
    for name, o in zip(lowered.output_names, outs, strict=True):
        shape = list(o.shape)
        layout = lowered.output_layouts[name]
        if layout == "NHWC":
            shape = [shape[0], shape[2], shape[3], shape[1]]
        specs.append(TensorSpec(name, shape, "float32", layout))
    return specs


@register
class TFLiteExporter(Exporter):
    target: ClassVar[str] = "tflite"
    extra: ClassVar[str] = "tflite"
    suffix: ClassVar[str] = ".tflite"
    pipeline: ClassVar[str] = "tflite"
    required_modules: ClassVar[tuple[str, ...]] = ("litert_torch", "ai_edge_litert")
    forbidden_ops: ClassVar[frozenset[str]] = frozenset(
        {"BATCH_MATMUL", "GATHER", "GATHER_ND", "BROADCAST_TO", "EINSUM"}
    )
    transpose_op: ClassVar[str | None] = "TRANSPOSE"
    max_transposes: ClassVar[int | None] = 2
    cost: ClassVar[int] = 6  # fp32 export at width 1.0: 30 s (benchmarks/RESULTS.md)
    color: ClassVar[str] = "#C44E52"
    devices: ClassVar[dict[str, str]] = {"android": "adb + TFLite's benchmark_model"}
    option_specs: ClassVar[tuple[OptionSpec, ...]] = (
        OptionSpec(
            "--int8-mode",
            "int8_mode",
            "str",
            "TFLite int8: full-integer static or dynamic range",
            choices=quantize.INT8_MODES,
            default="static",
        ),
    )

    def calibrates(self, options: ExportOptions) -> bool:
        return options.precision == "int8" and quantize.int8_mode(options.backend) == "static"

    def check_options(self, options: ExportOptions) -> None:
        super().check_options(options)
        known = {"int8_mode", "kernels"}
        unknown = sorted(set(options.backend) - known)
        if unknown:
            raise UsageError(f"unknown tflite option(s) {unknown} (known: {sorted(known)})")
        if options.precision == "int8":
            mode = quantize.int8_mode(options.backend)
            if mode == "dynamic" and options.calibration_images is not None:
                raise UsageError(
                    "int8_mode 'dynamic' takes no calibration images (only 'static' is calibrated)"
                )
        elif "int8_mode" in options.backend:
            raise UsageError(f"int8_mode applies to precision int8, not {options.precision}")
        if options.backend.get("kernels", "xnnpack") not in KERNELS:
            raise UsageError(f"kernels must be one of {', '.join(KERNELS)}")

    def export(self, model: nn.Module, options: ExportOptions, dest: Path) -> Artifact:
        self.check_available()
        self.check_options(options)
        dest = Path(dest)
        embedded = options.embed_preprocessing
        mode = quantize.int8_mode(options.backend) if options.precision == "int8" else None
        # Read calibration images before any work: a bad folder fails fast and writes nothing.
        calib = (
            calibration_images(options.calibration_images, options.image_size) if mode == "static" else None
        )
        extra: dict[str, Any] = {"converter": "litert-torch", "input_layout": "NHWC"}
        with atomic_output(dest, options.force) as tmp:
            lowered = convert.lower(model, options.image_size, embedded)
            flat = lowered.flatbuffer
            if options.precision == "fp16":
                step("fp16 conversion")
                flat = quantize.to_fp16(flat)
                extra["quantizer"] = "ai-edge-quantizer FLOAT_CASTING (fp16 weights)"
            elif mode == "static" and options.gate is not None:
                step("int8 static calibration")
                q = quantize.StaticInt8(flat, lowered.signature, lowered.input_name, calib, embedded)
                flat = self._search(q, model, options, lowered, extra, tmp.parent, dest.name)
                extra.update(q.info)
            elif mode is not None:
                step(f"int8 {mode} quantization")
                flat, info = quantize.to_int8(
                    flat, mode, lowered.signature, lowered.input_name, calib, embedded
                )
                extra.update(info)
            in_types, out_types = io_dtypes(flat)
            outputs = _output_specs(model, lowered, options.image_size)
            for spec in outputs:  # full-integer int8 has int8 outputs (the runner dequantizes them)
                spec.dtype = out_types[0] if len(set(out_types)) == 1 else spec.dtype
            extra.update(
                signature=lowered.signature,
                output_layouts=lowered.output_layouts,
                default_kernels=options.backend.get("kernels", "xnnpack"),
                metadata_location="flatbuffer Model.metadata['mvit2_export'] (JSON)",
            )
            step("metadata and save")
            tmp.write_bytes(with_metadata(flat, self._metadata(model, options, lowered, extra)))

        size = options.image_size
        in_spec = TensorSpec(lowered.input_name, [1, size, size, 3], in_types[0], "NHWC")
        return Artifact(
            target=self.target,
            precision=options.precision,
            path=dest,
            inputs=[in_spec],
            outputs=outputs,
            rewrites=lowered.rewrites,
            runtime=RUNTIME,
            options=extra,
        )

    def _search(
        self,
        q: quantize.StaticInt8,
        model: nn.Module,
        options: ExportOptions,
        lowered: convert.Lowered,
        extra: dict[str, Any],
        workdir: Path,
        label: str,
    ) -> bytes:
        """The fastest static int8 that holds the held-out gate (exporters/int8_search.py)."""
        from ..int8_search import search_recipes

        meta = self._metadata(model, options, lowered, extra)  # the runner reads signature and layouts
        # The search keeps the configuration it quantized last: hold only that one's bytes (without
        # the metadata, which is written once the search's record is in it).
        latest: dict[Path, bytes] = {}
        numbers = itertools.count()

        def write(flat: bytes, name: str) -> Path:
            path = workdir / name
            path.write_bytes(with_metadata(flat, meta))
            return path

        def quantize_to(float_ops: list[str]) -> Path:
            flat = q.quantize(float_ops)
            path = write(flat, f"int8-{next(numbers)}.tflite")  # LiteRT maps the file: never rewrite one
            latest.clear()
            latest[path] = flat
            return path

        runner = lambda p: LiteRTRunner(p)  # noqa: E731
        fp32 = runner(write(q.flatbuffer, "fp32.tflite"))

        result, recipe_floats = search_recipes(
            quantize_to,
            runner,
            q.quantizable_ops(),
            q.quantizable_ops(quantize.CONV_OPS),
            fp32,
            q.images,
            options.gate,
            label,
        )
        extra["int8_search"] = result.to_dict()
        extra["int8_recipe"] = result.trials[result.chosen].recipe or quantize.ALL_INT8
        extra["float_search_ops"] = [*result.float_nodes(), *recipe_floats]
        return latest[result.path]

    @staticmethod
    def _metadata(
        model: nn.Module, options: ExportOptions, lowered: convert.Lowered, extra: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            **provenance(model),
            "precision": options.precision,
            "image_size": options.image_size,
            "signature": lowered.signature,
            "input_name": lowered.input_name,
            "output_names": lowered.output_names,
            "output_layouts": lowered.output_layouts,
            "preprocessing": preprocessing_dict(options.image_size, options.embed_preprocessing),
            "rewrites": lowered.rewrites,
            "export_options": extra,
        }

    def load_runner(
        self, path: Path, artifact: ArtifactEntry, threads: int | None = None, kernels: str | None = None
    ) -> Runner:
        """`kernels`: "xnnpack" (default) or "reference"; else the artifact's `default_kernels` option."""
        self.check_available()
        chosen = kernels or (artifact.options if artifact else {}).get("default_kernels", "xnnpack")
        return LiteRTRunner(Path(path), artifact, threads, chosen)

    def op_histogram(self, path: Path) -> dict[str, int]:
        return op_histogram(Path(path))

    def metadata(self, path: Path) -> dict[str, Any]:
        return read_metadata(Path(path))

    def lowered(
        self, model: nn.Module, artifact: ArtifactEntry, image_size: int
    ) -> tuple[nn.Module, Callable[[np.ndarray], torch.Tensor]]:
        """The rewritten body inside its NHWC layout wrapper, as litert-torch converted it."""
        embedded = artifact.inputs[0]["name"] == "images"
        module, _ = convert.lowered_module(model, image_size, embedded)
        if embedded:
            return module, lambda images: torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        return module, lambda images: torch.from_numpy(
            np.ascontiguousarray(images_to_pixel_values(images).transpose(0, 2, 3, 1))
        )

    def intermediates(
        self, path: Path, artifact: ArtifactEntry, images: np.ndarray, lowered: nn.Module | None = None
    ) -> ValueTrace:
        """Every op output LiteRT preserves (builtin kernels), keyed OPTYPE#index: matched by value."""
        self.check_available()
        from .intermediates import tflite_intermediates

        return tflite_intermediates(Path(path), images)
