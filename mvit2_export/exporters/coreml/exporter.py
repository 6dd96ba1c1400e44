"""The Core ML exporter: convert, compress, add metadata, save the .mlpackage atomically."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import UsageError
from ...manifest import ArtifactEntry
from ...model.preprocess import images_to_pixel_values
from ...progress import step
from ..base import Artifact, Exporter, ExportOptions, Runner, TensorSpec, atomic_output
from ..options import OptionSpec
from ..registry import register
from .ane_audit import ane_audit
from .compress import compress
from .convert import (
    INPUT_NAME,
    LABEL_NAME,
    META_PREFIX,
    PROBS_NAME,
    convert_model,
    output_names,
    set_metadata,
)
from .runner import CoreMLRunner, MilReferenceRunner, can_predict
from .settings import COMPRESSED, DEFAULT_TARGET, INPUT_TYPES, PALETTIZE_BITS, PRECISIONS, parse_settings


def _calibration(options: ExportOptions) -> Any:
    def load() -> Any:
        from ...data.images import calibration_images

        return calibration_images(options.calibration_images, options.image_size)

    return load


@register
class CoreMLExporter(Exporter):
    target: ClassVar[str] = "coreml"
    extra: ClassVar[str] = "coreml"
    suffix: ClassVar[str] = ".mlpackage"
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    precision_notes: ClassVar[dict[str, str]] = {
        "palettized": "n-bit weight palettes",
        "w8a8": "int8 weights and activations, iOS17+",
    }
    # Compressed weights and W8A8 are held to the int8 rule.
    threshold_classes: ClassVar[dict[str, str]] = {p: "int8" for p in COMPRESSED}
    pipeline: ClassVar[str] = "coreml"
    required_modules: ClassVar[tuple[str, ...]] = ("coremltools",)
    forbidden_ops: ClassVar[frozenset[str]] = frozenset(
        {"matmul", "einsum", "gather", "gather_nd", "gather_along_axis", "batch_norm", "col2im", "im2col"}
    )
    transpose_op: ClassVar[str | None] = "transpose"
    cost: ClassVar[int] = 2  # fp32 export at width 1.0: 10 s (benchmarks/RESULTS.md)
    color: ClassVar[str] = "#55A868"
    devices: ClassVar[dict[str, str]] = {"mac": "MLModel.predict per compute-units setting (macOS only)"}
    option_specs: ClassVar[tuple[OptionSpec, ...]] = (
        OptionSpec(
            "--deployment-target",
            "deployment_target",
            "str",
            "Core ML minimum deployment target: iOS16 or later, or macOS13+, tvOS16+, watchOS9+, visionOS1+ "
            "(w8a8 needs iOS17)",
            default=DEFAULT_TARGET,
        ),
        OptionSpec(
            "--input-type", "input_type", "str", "Core ML input", choices=INPUT_TYPES, default="image"
        ),
        OptionSpec(
            "--palettize-bits",
            "palettize_bits",
            "int",
            "Core ML --precision palettized: bits per weight",
            choices=PALETTIZE_BITS,
            default=6,
        ),
        OptionSpec(
            "--argmax-mask", "argmax_mask", "flag", "Core ML segmentation: also output the argmax mask"
        ),
    )

    def calibrates(self, options: ExportOptions) -> bool:
        return options.precision == "w8a8"

    def check_options(self, options: ExportOptions) -> None:
        parse_settings(options)

    def export(self, model: nn.Module, options: ExportOptions, dest: Path) -> Artifact:
        settings = parse_settings(options)  # every usage error before any work or any file
        dest = Path(dest)
        if dest.suffix != self.suffix:
            raise UsageError(f"{dest}: a Core ML artifact must end in {self.suffix}")
        size = options.image_size
        with atomic_output(dest, options.force) as tmp:
            mlmodel, facts = convert_model(model, settings, size)
            step("Core ML compression and metadata")
            heldout = None  # the search's verdict on the chosen program, when there is a search
            if settings.precision == "w8a8" and options.gate is not None:
                mlmodel, compression, heldout = self._w8a8(
                    mlmodel, model, settings, options, tmp.parent, dest.name
                )
            else:
                mlmodel, compression = compress(mlmodel, settings, _calibration(options), can_predict())
            set_metadata(mlmodel, model, settings, size, facts["rewrites"])
            step("save")
            mlmodel.save(str(tmp))
        names = output_names(model, settings)
        outputs = [_output_spec(n, model, size) for n in model.output_names]
        if model.task == "classification":
            outputs.append(TensorSpec(PROBS_NAME, [model.config.num_labels], "dict", "label->probability"))
            outputs.append(TensorSpec(LABEL_NAME, [1], "string", "label"))
        if "mask" in names:
            outputs.append(TensorSpec("mask", [1, "H", "W"], "int32", "NHW"))
        input_spec = (
            TensorSpec(INPUT_NAME, [1, size, size, 3], "image", "BGR image, scale 1/255")
            if settings.input_type == "image"
            else TensorSpec(INPUT_NAME, [1, 3, size, size], "float32", "NCHW")
        )
        return Artifact(
            target=self.target,
            precision=settings.precision,
            path=dest,
            inputs=[input_spec],
            outputs=outputs,
            rewrites=facts["rewrites"],
            runtime="coreml-mac" if can_predict() else "mil-reference",
            heldout=heldout,
            options={
                **settings.to_dict(),
                **compression,
                "conversion_path": facts["conversion_path"],
                **{k: v for k, v in facts.items() if k.endswith("_seconds")},
                "reference_outputs": list(model.output_names),
            },
        )

    @staticmethod
    def _w8a8(
        mlmodel: Any,
        model: nn.Module,
        settings: Any,
        options: ExportOptions,
        workdir: Path,
        label: str,
    ) -> tuple[Any, dict[str, Any], Any]:
        """(the W8A8 program, its facts, its held-out verdict): the configuration with the fewest float
        layer groups that holds the held-out gate (exporters/int8_search.py), each candidate compressed by coremltools.optimize with the search's
        ops left out of its op configs, saved and run by the runtime this host has (Core ML on macOS,
        else the MIL interpreter, whose speed is not Core ML's: its latencies are not recorded)."""
        import functools

        from ..int8_search import search_recipes
        from .compress import ALL_W8A8, CONV_OP_TYPES, quantizable_ops

        calibration = functools.cache(_calibration(options))
        stats: dict[str, Any] = {}  # the float program's activation ranges, computed once
        names = list(model.output_names)
        built: dict[Path, tuple[Any, dict[str, Any]]] = {}
        numbers = itertools.count()

        def save(candidate: Any, name: str) -> Path:
            path = workdir / name
            candidate.save(str(path))
            return path

        def quantize(float_ops: list[str]) -> Path:
            result = compress(mlmodel, settings, calibration, can_predict(), float_ops, stats)
            path = save(result[0], f"w8a8-{next(numbers)}.mlpackage")
            built.clear()  # the search keeps the configuration it built last
            built[path] = result
            return path

        def runner(path: Path) -> Runner:
            return _runner(path, names, settings.compute_units)

        fp = runner(save(mlmodel, "float.mlpackage"))
        # When no configuration of coremltools' recipe (conv, pools, linear and add inputs int8) holds
        # the gate, the convolutions-only recipe the other targets search second (int8_search.py).
        result, recipe_floats = search_recipes(
            quantize,
            runner,
            quantizable_ops(mlmodel),
            quantizable_ops(mlmodel, CONV_OP_TYPES),
            fp,
            calibration(),
            options.gate,
            label,
            judge="artifact" if can_predict() else MilReferenceRunner.runtime,
            timed=can_predict(),
        )
        chosen, facts = built[result.path]
        facts["int8_search"] = result.to_dict()
        facts["int8_recipe"] = result.trials[result.chosen].recipe or ALL_W8A8
        facts["float_ops"] = result.float_nodes() + recipe_floats
        # the saved candidate is the artifact's program (metadata aside), judged by the runner parity
        # loads (Core ML on macOS, else the MIL interpreter): its verdict is the artifact's
        verdict = result.trials[result.chosen].verdict
        note = (verdict.note + " " if verdict.note else "") + "judged by the int8 search"
        return chosen, facts, dataclasses.replace(verdict, note=note)

    def load_runner(self, path: Path, artifact: ArtifactEntry, threads: int | None = None) -> Runner:
        opts = artifact.options if artifact else {}
        names = list(opts.get("reference_outputs") or _reference_outputs_from_spec(path))
        return _runner(Path(path), names, opts.get("compute_units") or "ALL")

    def op_histogram(self, path: Path) -> dict[str, int]:
        from .mil import MilInterpreter

        hist = MilInterpreter.from_mlpackage(path).op_histogram()
        hist.pop("const", None)  # weights and parameters, not computation
        return dict(collections.Counter(dict(hist.most_common())))

    def metadata(self, path: Path) -> dict[str, Any]:
        """The `mvit2_export.*` user-defined metadata of the package, with `rewrites` as a list of ids."""
        import coremltools as ct

        user = dict(ct.utils.load_spec(str(path)).description.metadata.userDefined)
        meta = {k[len(META_PREFIX) :]: v for k, v in user.items() if k.startswith(META_PREFIX)}
        if "rewrites_applied" in meta:
            meta["rewrites"] = [{"id": i, "fired": None} for i in json.loads(meta["rewrites_applied"])]
        return meta

    def static_audit(self, path: Path) -> list[dict[str, Any]]:
        return ane_audit(path)

    def lowered(
        self, model: nn.Module, artifact: ArtifactEntry, image_size: int
    ) -> tuple[nn.Module, Callable[[np.ndarray], torch.Tensor]]:
        """The rewritten program inside its Core ML head; the image input's scale and BGR order are the
        reference preprocessing."""
        from .convert import prepare_program

        argmax = bool(artifact.options.get("argmax_mask", False))
        module = prepare_program(model, image_size, argmax).program.module()
        return module, lambda images: torch.from_numpy(images_to_pixel_values(images))

    def intermediates(
        self, path: Path, artifact: ArtifactEntry, images: np.ndarray, lowered: nn.Module | None = None
    ) -> dict[str, np.ndarray]:
        """Every op output of the saved program, executed by the MIL interpreter (program order)."""
        runner = MilReferenceRunner(Path(path), [])
        _, trace = runner.interp.run(runner.feed(images[0]), trace=True)
        return trace


def _runner(path: Path, names: list[str], compute_units: str) -> Runner:
    """Core ML itself on macOS; elsewhere the MIL interpreter (NumPy's BLAS threads govern it)."""
    if can_predict():
        return CoreMLRunner(path, names, compute_units)
    return MilReferenceRunner(path, names)


def _output_spec(name: str, model: nn.Module, size: int) -> TensorSpec:
    cfg = model.config
    if model.task == "classification":
        return TensorSpec(name, [1, cfg.num_labels], "float32", "NC")
    return TensorSpec(
        name,
        [1, "C", "H", "W"] if name != "pooler_output" else [1, "C"],
        "float32",
        "NCHW" if name != "pooler_output" else "NC",
    )


def _reference_outputs_from_spec(path: Path) -> list[str]:
    """Without a manifest entry: the spec's outputs minus the ones we add for apps."""
    import coremltools as ct

    names = [o.name for o in ct.utils.load_spec(str(path)).description.output]
    extra = {PROBS_NAME, LABEL_NAME, "mask"}
    return [n for n in names if n not in extra]
