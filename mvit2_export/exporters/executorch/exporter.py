"""The ExecuTorch exporter: .pte programs delegated whole to XNNPACK (fp32, int8) or Core ML (fp32, fp16).

Everything ExecuTorch-specific lives in this package: its rewrites (`rewrites/`), lowering, PT2E int8,
the runners and the .pte reader. Modules that import executorch are imported where used, so the class
(and `--help`, `--target all`, the missing-backend error) loads without the `executorch` extra.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...data.images import calibration_images
from ...errors import IntegrityError, UsageError
from ...manifest import ArtifactEntry
from ...model import Preprocessor
from ...progress import step
from ..base import Artifact, Exporter, ExportOptions, Runner, TensorSpec, atomic_output, provenance
from ..options import OptionSpec
from ..registry import register
from . import device
from .rewrites import PIPELINE

BACKENDS = ("xnnpack", "coreml")  # the delegates `lower.partitioner` builds
# The int8 recipe searched when no configuration of XNNPACKQuantizer's own (every op it quantizes) holds
# the gate: only convolutions and linears int8; element-wise ops, means and pools float. Measured on the
# trained 128 px fixture, gated on each half of 1000 held-out crops (AVX2 host, 2026-12-07): XNNPACK's
# recipe topped out at 0.985 with 6 of 12 groups float (its many per-tensor ranges of element-wise
# values cost the agreement); convolutions only gave 0.964 all-int8 and, with 3 groups float, 0.992
# simulated and 0.994 in the ExecuTorch runtime. It is the slower recipe (a quantize/dequantize pair
# around every convolution): width 1.0 @ 256 on that host, all-int8 32.6 ms against XNNPACK's 27.3 ms
# (fp32 27.4 ms; AVX2 has no int8 dot product), hence second.
XNNPACK_RECIPE = "XNNPACKQuantizer's (every op it quantizes)"  # the first recipe searched
BACKEND_PRECISIONS = {"xnnpack": ("fp32", "fp16", "int8"), "coreml": ("fp32", "fp16")}
WHY_NOT = {
    ("coreml", "int8"): "the Core ML delegate runs only on Apple hardware, so the held-out int8 gate "
    "cannot run its int8 program here; use --target coreml --precision w8a8 (gated through the MIL "
    "interpreter) or --executorch-backend xnnpack",
}


def backend_of(options: ExportOptions) -> str:
    backend = str(options.backend.get("executorch_backend", "xnnpack"))
    if backend not in BACKENDS:
        raise UsageError(f"--executorch-backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    return backend


def preprocessing_dict(image_size: int, embedded: bool) -> dict[str, Any]:
    pre = Preprocessor.for_image_size(image_size).to_dict()
    if embedded:
        pre.update(do_rescale=False, do_flip_channel_order=False, channel_order="RGB", dtype="uint8")
        pre["layout"] = "NHWC"
    else:
        pre.update(channel_order="BGR", dtype="float32", layout="NCHW")
    pre["embedded_in_graph"] = embedded
    return pre


def _output_specs(model: nn.Module, module: nn.Module, example: torch.Tensor) -> list[TensorSpec]:
    with torch.no_grad():
        outs = module(example)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    layout = {2: "NC", 3: "NLC", 4: "NCHW"}
    return [
        TensorSpec(name, list(o.shape), "float32", layout.get(o.dim(), ""))
        for name, o in zip(model.output_names, outs, strict=True)
    ]


@register
class ExecuTorchExporter(Exporter):
    target: ClassVar[str] = "executorch"
    extra: ClassVar[str] = "executorch"
    suffix: ClassVar[str] = ".pte"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    precision_notes: ClassVar[dict[str, str]] = {}
    pipeline: ClassVar[tuple[str, ...]] = PIPELINE
    required_modules: ClassVar[tuple[str, ...]] = ("executorch",)
    # In the op histogram (pte.py): XNNPACK node types inside the delegate.
    forbidden_ops: ClassVar[frozenset[str]] = frozenset(
        {"XNNBatchMatrixMultiply", "XNNScaledDotProductAttention", "XNNStaticConstantPad"}
    )
    transpose_op: ClassVar[str | None] = "XNNStaticTranspose"
    cost: ClassVar[int] = 5  # fp32 lowering at width 1.0 @ 256: ~25 s on 2 cores
    color: ClassVar[str] = "#55A868"
    devices: ClassVar[dict[str, str]] = {"android": f"adb + ExecuTorch's executor_runner ({device.FLAG})"}
    android_tool: ClassVar[Any] = device
    option_specs: ClassVar[tuple[OptionSpec, ...]] = (
        OptionSpec(
            "--executorch-backend",
            "executorch_backend",
            "str",
            "ExecuTorch delegate: the whole program runs in it",
            choices=BACKENDS,
            default="xnnpack",
        ),
    )

    def calibrates(self, options: ExportOptions) -> bool:
        return options.precision == "int8"

    def check_options(self, options: ExportOptions) -> None:
        super().check_options(options)
        unknown = sorted(set(options.backend) - {"executorch_backend"})
        if unknown:
            raise UsageError(f"unknown executorch option(s) {unknown} (known: ['executorch_backend'])")
        backend = backend_of(options)
        if options.precision not in BACKEND_PRECISIONS[backend]:
            raise UsageError(
                f"--executorch-backend {backend} does not take {options.precision}: "
                f"{WHY_NOT[(backend, options.precision)]}"
            )

    def export(self, model: nn.Module, options: ExportOptions, dest: Path) -> Artifact:
        from . import lower
        from .quantize import PT2EInt8

        self.check_available()
        self.check_options(options)
        dest = Path(dest)
        backend = backend_of(options)
        embedded = options.embed_preprocessing
        int8 = options.precision == "int8"
        # Read calibration images before any work: a bad folder fails fast and writes nothing.
        calib = calibration_images(options.calibration_images, options.image_size) if int8 else None
        extra: dict[str, Any] = {"delegate_backend": backend, "executorch_version": _version()}
        with atomic_output(dest, options.force) as tmp:
            body = lower.prepared(model, options.image_size, embedded)
            outputs = _output_specs(model, body.module, body.example)
            if int8:
                step("int8 PT2E calibration")
                batched = lower.prepared(model, options.image_size, embedded, dynamic_batch=True)
                q = PT2EInt8(batched.module, body.example, calib, embedded)
                extra["int8"] = dict(q.settings, int8_isa=options.int8_isa)
                lowered = self._int8(q, model, options, body.rewrites, extra, tmp.parent, dest.name)
            else:
                step("torch.export of the rewritten program")
                half = options.precision == "fp16" and backend == "xnnpack"
                program = lower.export(HalfPrecision(body.module) if half else body.module, body.example)
                meta = self._metadata(model, options, body.rewrites, extra)
                lowered = lower.to_pte(program, backend, options.precision, meta)
            extra["delegation"] = lowered.delegation
            tmp.write_bytes(lowered.buffer)

        size = options.image_size
        shape = [1, size, size, 3] if embedded else [1, 3, size, size]
        name = "images" if embedded else "pixel_values"
        return Artifact(
            target=self.target,
            precision=options.precision,
            path=dest,
            inputs=[
                TensorSpec(name, shape, "uint8" if embedded else "float32", "NHWC" if embedded else "NCHW")
            ],
            outputs=outputs,
            rewrites=body.rewrites,
            runtime=f"executorch-{backend}",
            options=extra,
        )

    def _int8(
        self,
        q: Any,
        model: nn.Module,
        options: ExportOptions,
        rewrites: list[dict[str, Any]],
        extra: dict[str, Any],
        workdir: Path,
        label: str,
    ) -> Any:  # lower.Lowered
        """All-int8, or with a gate the fastest mixed-precision configuration that holds it, judged in the
        ExecuTorch runtime before anything is written (a miss on trained weights: GateNotMetError, exit 5,
        no file), through the same search as the other targets (exporters/int8_search.py).

        The search judges configurations on PT2E's simulated int8 (quantize.SimulatedRunner) and lowers
        only the one that meets the gate there, then gates that .pte in the runtime: lowering one
        configuration costs ~90 s at width 0.5 @ 128 on 2 quiet cores (ExecuTorch's passes re-trace every
        Q/DQ node), the simulation ~8 s for 500 held-out crops. Measured on the trained 128 px fixture:
        all-int8 0.978 simulated, 0.976 in the runtime (the two agree on the top-1 of 98% of crops).
        When XNNPACK's recipe misses the gate in every configuration, the same search runs on the
        CONVS_ONLY recipe (int8_search.search_recipes); the manifest records the recipe kept."""
        from ..int8_search import search_recipes
        from . import lower
        from .quantize import SimulatedRunner
        from .runner import ExecuTorchRunner

        built: dict[Path, Any] = {}
        numbers = itertools.count()

        def build(float_nodes: list[str], recipe: str = XNNPACK_RECIPE) -> Any:
            extra["int8"]["recipe"] = recipe  # in the .pte's metadata too: set before lowering
            extra["int8"]["float_nodes"] = q.floated(float_nodes)
            meta = self._metadata(model, options, rewrites, extra)
            return lower.to_pte(q.quantize(float_nodes), "xnnpack", options.precision, meta)

        def confirm(float_nodes: list[str], recipe: str) -> tuple[Path, Any]:
            path = workdir / f"int8-{next(numbers)}.pte"  # the runtime maps the file: never rewrite one
            lowered = build(float_nodes, recipe)
            built.clear()  # the search keeps the configuration it confirmed last
            built[path] = lowered
            path.write_bytes(built[path].buffer)
            return path, ExecuTorchRunner(path)

        if options.gate is None:
            return build([])
        simulated = lambda module: SimulatedRunner(module, q.embedded)  # noqa: E731
        fp32 = simulated(q.captured)

        result, _ = search_recipes(
            q.convert,
            simulated,
            q.quantizable_nodes(),  # both in execution order
            q.convolutions(),
            fp32,
            q.images,
            options.gate,
            label,
            confirm=lambda float_nodes, recipe: confirm(float_nodes, recipe or XNNPACK_RECIPE),
            judge=SimulatedRunner.runtime,
        )
        extra["int8_search"] = result.to_dict()
        return built[result.path]

    @staticmethod
    def _metadata(
        model: nn.Module, options: ExportOptions, rewrites: list[dict[str, Any]], extra: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            **provenance(model),
            "precision": options.precision,
            "image_size": options.image_size,
            "output_names": list(model.output_names),
            "preprocessing": preprocessing_dict(options.image_size, options.embed_preprocessing),
            "delegate_backend": backend_of(options),
            "rewrites": rewrites,
            "export_options": {k: v for k, v in extra.items() if k != "int8_search"},
        }

    def load_runner(self, path: Path, artifact: ArtifactEntry, threads: int | None = None) -> Runner:
        from .runner import load

        self.check_available()
        return load(Path(path), threads)

    def bench_threads(self, candidates: list[int]) -> list[int]:
        # One pool per process, fixed when the first delegate loads (see runner.set_threads): timing a
        # .pte at another count in this process would silently run at the pool's size. So size it for
        # the most threads asked for, and time only at the size it really has.
        from .runner import set_threads

        self.check_available()
        return [set_threads(max(candidates))]

    def op_histogram(self, path: Path) -> dict[str, int]:
        from .pte import op_histogram

        self.check_available()
        return op_histogram(Path(path))

    def metadata(self, path: Path) -> dict[str, Any]:
        from .pte import read_metadata

        self.check_available()
        return read_metadata(Path(path))

    def static_audit(self, path: Path) -> list[dict[str, Any]]:
        """The delegation audit: every compute op inside one delegate, none on portable kernels."""
        from .pte import instruction_histogram, read_bytes

        hist = instruction_histogram(read_bytes(Path(path)))  # the XNNPACK graph need not be decoded
        pieces = sum(n for op, n in hist.items() if op.startswith("delegate:"))
        kernels = {op[len("kernel:") :]: n for op, n in hist.items() if op.startswith("kernel:")}
        findings = []
        if pieces != 1:
            findings.append(_finding("one delegate piece", f"{pieces} delegate pieces"))
        for op, n in sorted(kernels.items()):
            findings.append(_finding("no portable-kernel fallback", f"{op} x{n}"))
        return findings

    def lowered(
        self, model: nn.Module, artifact: ArtifactEntry, image_size: int
    ) -> tuple[nn.Module, Callable[[np.ndarray], torch.Tensor]]:
        """The fp32 program the artifact was lowered from (for fp16, its cast is what gets tapped), as
        `taps.TapReference`; the input as the .pte takes it."""
        from . import lower
        from .quantize import model_inputs
        from .taps import TapReference, name_map

        self.check_available()
        backend = str(artifact.options.get("delegate_backend", "xnnpack"))
        if backend != "xnnpack":
            raise UsageError(
                "--localize for a Core ML-delegated .pte is not available here (its runtime needs Apple "
                "hardware); localize the same model with --target coreml, which runs in the MIL interpreter"
            )
        if artifact.precision == "int8":
            # A tap on a quantized op's float output changes what the partitioner fuses (the tapped
            # program would not be the shipped one), and re-quantizing needs the export's calibration.
            raise UsageError(
                "--localize is not available for int8 .pte artifacts; localize the int8 model with "
                "--target onnx or tflite (same rewrites, same held-out gate)"
            )
        embedded = artifact.inputs[0]["name"] == "images"
        body = lower.prepared(model, image_size, embedded)
        reference = lower.export(body.module, body.example)
        # its own program either way: tapping edits it in place
        half = artifact.precision == "fp16"
        source = lower.export(HalfPrecision(body.module) if half else body.module, body.example)
        return TapReference(reference, source, name_map(reference, source)), lambda images: model_inputs(
            images[:1], embedded
        )[0]

    def intermediates(
        self, path: Path, artifact: ArtifactEntry, images: np.ndarray, lowered: nn.Module | None = None
    ) -> dict[str, np.ndarray]:
        """Every op output of the program re-lowered with taps (taps.py), keyed by the reference's node
        names, after its outputs are checked to reproduce the shipped artifact's on the same image."""
        from .quantize import model_inputs
        from .runner import ExecuTorchRunner
        from .taps import REPRODUCTION_TOLERANCE, TapReference, reproduction_error, run_tapped

        if not isinstance(lowered, TapReference):
            raise UsageError("--localize for .pte needs the program from ExecuTorchExporter.lowered")
        x = model_inputs(images[:1], artifact.inputs[0]["name"] == "images")[0]
        tapped = run_tapped(lowered.source, x, lowered.names)
        err = reproduction_error(tapped.outputs, ExecuTorchRunner(Path(path)).run_one(x))
        if not err <= REPRODUCTION_TOLERANCE:
            raise IntegrityError(
                f"{Path(path).name}: the program re-lowered with taps does not reproduce the artifact's outputs "
                f"(rel err {err:.3g} > {REPRODUCTION_TOLERANCE:g}): the file is not what this model lowers to with executorch "
                f"{_version()} (it was lowered with {artifact.options.get('executorch_version', 'unknown')})"
            )
        return {lowered.names[name]: value for name, value in tapped.values.items()}


class HalfPrecision(nn.Module):
    """fp16 for XNNPACK: fp16 weights and compute, fp32 in and out (the casts sit at the program's
    ends). The Core ML delegate takes fp16 as a compute precision instead."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        import copy

        self.body = copy.deepcopy(body).half()

    def forward(self, x: torch.Tensor) -> Any:
        out = self.body(x.half() if x.is_floating_point() else x)
        return tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()


def _finding(rule: str, detail: str) -> dict[str, Any]:
    return {"scope": "executorch delegation", "severity": "warning", "rule": rule, "op_type": detail}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"
