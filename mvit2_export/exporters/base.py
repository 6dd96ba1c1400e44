"""One interface for all exporters.

An exporter turns the reference model into one artifact file (or package) per precision, written
atomically, and gives back a `Runner` that executes the artifact on this host. Every runner takes the
same input, a batch of uint8 RGB images [B,H,W,3] (what a camera or a JPEG gives), and returns outputs
in the reference layout (NCHW, output order of `model.output_names`), so parity code is backend-free.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import BackendMissingError, OutputExistsError, UsageError
from ..manifest import ArtifactEntry
from .options import OptionSpec

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]
    dtype: str
    layout: str  # NCHW, NHWC, NC, ...

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExportOptions:
    precision: str = "fp32"
    image_size: int = 256
    embed_preprocessing: bool = False
    calibration_images: Path | None = None
    force: bool = False
    backend: dict[str, Any] = field(default_factory=dict)  # target-specific: opset, deployment target, ...
    # Where the int8 artifact will run (cpu.py INT8_ISAS, auto already resolved): decides e.g. 7-bit weights.
    int8_isa: str = "x86-avx2"
    # The int8 accuracy gate (`Gate`), for precisions held to int8; None when not checking.
    gate: Gate | None = None


@dataclass
class Artifact:
    """What an exporter reports about the file it wrote; becomes a manifest entry."""

    target: str
    precision: str
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    rewrites: list[dict[str, Any]]
    runtime: str
    options: dict[str, Any] = field(default_factory=dict)
    # The held-out gate's verdict (parity/gate.py GateResult) on this very program in `runtime`, when the
    # exporter has already judged it (the int8 search's chosen configuration): parity does not run the
    # same images through the same runtime again. `check` always does.
    heldout: Any = None

    def to_entry(self, root: Path | None = None) -> ArtifactEntry:
        """Its manifest entry (sha256, size, audit and parity are added by the API)."""
        return ArtifactEntry(**self.to_dict(root))

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        return {
            "target": self.target,
            "precision": self.precision,
            "path": str(self.path.relative_to(root) if root else self.path),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "rewrites": self.rewrites,
            "runtime": self.runtime,
            "options": self.options,
        }


class GateVerdict(Protocol):
    passed: bool  # the gate holds, or is not enforced (untrained weights)
    met: bool  # the numbers meet the gate, enforced or not
    agreement: float

    def to_dict(self) -> dict[str, Any]: ...


class Gate(Protocol):
    """The held-out accuracy gate (parity/gate.py: AccuracyGate), handed to exporters so an int8 export
    can search for the fastest configuration that holds it (`exporters/int8_search.py`)."""

    active: bool  # a miss fails the export (trained weights); else numbers are only reported

    def __call__(self, runner: Runner, stop_early: bool = False) -> GateVerdict:
        """`stop_early`: a search's trial may stop once the gate is certainly missed."""
        ...


class Runner(Protocol):
    """A loaded artifact. A runner whose timings say nothing about a device (a NumPy interpreter standing
    in for an Apple-only runtime) also sets `not_timed` to why; `bench` records that instead of a latency."""

    runtime: str

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """uint8 RGB [B,H,W,3] -> outputs in the reference layout and order."""
        ...


class Exporter(abc.ABC):
    """One target. Everything about it is declared here, so no code outside `exporters/<target>/` needs
    to know a target by name: register the class (`@register`) and every command takes it."""

    target: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs the backend
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    precision_notes: ClassVar[dict[str, str]] = {}  # what a precision only this target has means (--help)
    # precision -> the parity rule class it is held to (parity/thresholds.py); default: its own name
    threshold_classes: ClassVar[dict[str, str]] = {}
    # The rewrite pipeline it lowers: a name in rewrites/pipelines.py, or a tuple of rewrite ids.
    pipeline: ClassVar[str | tuple[str, ...]]
    required_modules: ClassVar[tuple[str, ...]] = ()
    # The attention audit: ops that must not appear, and the transpose op with the most allowed.
    forbidden_ops: ClassVar[frozenset[str]] = frozenset()
    transpose_op: ClassVar[str | None] = None
    max_transposes: ClassVar[int | None] = None
    cost: ClassVar[int] = 3  # relative export time, for planning parallel lanes (lanes.py)
    color: ClassVar[str] = "#777777"  # in report.png
    devices: ClassVar[dict[str, str]] = {}  # `bench --device NAME` -> what runs the artifacts there
    # `bench --device android` with a tool other than TFLite's benchmark_model: a module with FLAG (its
    # command-line flag), DEVICE_BINARY, argv(binary, model, threads, runs, warmup), parse(text, warmup)
    # and can_run(artifact options).
    android_tool: ClassVar[Any] = None
    option_specs: ClassVar[tuple[OptionSpec, ...]] = ()  # its command-line flags

    def calibrates(self, options: ExportOptions) -> bool:
        """Whether this export runs calibration (the slow part of a static int8 export)."""
        return False

    @classmethod
    def threshold_class(cls, precision: str) -> str:
        return cls.threshold_classes.get(precision, precision)

    @classmethod
    def check_available(cls) -> None:
        missing = [m for m in cls.required_modules if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendMissingError(cls.target, cls.extra, f"missing {', '.join(missing)}")

    def check_options(self, options: ExportOptions) -> None:
        if options.precision not in self.precisions:
            raise UsageError(
                f"{self.target} does not support precision {options.precision!r} "
                f"(supported: {', '.join(self.precisions)})"
            )

    @abc.abstractmethod
    def export(self, model: nn.Module, options: ExportOptions, dest: Path) -> Artifact:
        """Write the artifact to `dest` atomically and describe it."""

    @abc.abstractmethod
    def load_runner(self, path: Path, artifact: ArtifactEntry, threads: int | None = None) -> Runner:
        """A runner for an artifact on disk; `artifact` is its manifest entry."""

    @abc.abstractmethod
    def op_histogram(self, path: Path) -> dict[str, int]:
        """Operation type -> count, as the backend sees the artifact."""

    def bench_threads(self, candidates: list[int]) -> list[int]:
        """The thread counts `bench` can time this runtime at in this process, out of `candidates` (1 ..
        the cores, or the pinned count): all of them unless the runtime fixes its pool once per process."""
        return candidates

    def bench_settings(self) -> list[dict[str, Any]]:
        """Runtime knobs besides the thread count that `bench` searches (each a `load_runner` keyword
        set); [{}] when the thread count is the only one."""
        return [{}]

    def metadata(self, path: Path) -> dict[str, Any]:
        """The tool's metadata stored in the artifact (rewrites, preprocessing, checkpoint sha256), if any."""
        return {}

    def intermediates(
        self, path: Path, artifact: ArtifactEntry, images: np.ndarray, lowered: nn.Module | None = None
    ) -> dict[str, np.ndarray]:
        """Every intermediate tensor the runtime can expose, by value name, in execution order (for --localize).
        `lowered` is the module `lowered` returned, for a runtime that must lower it again to expose them."""
        raise UsageError(f"--localize is not available for {self.target} artifacts yet")

    def lowered(
        self, model: nn.Module, artifact: ArtifactEntry, image_size: int
    ) -> tuple[nn.Module, Callable[[np.ndarray], torch.Tensor]]:
        """The module this exporter lowered for `artifact` (rewritten, wrappers included; from the one
        `rewrites.prepare` cache) and how to turn uint8 RGB images into its input: what `check
        --localize` runs as the reference."""
        raise UsageError(f"--localize is not available for {self.target} artifacts yet")

    def static_audit(self, path: Path) -> list[dict[str, Any]]:
        """Backend-specific static findings (e.g. Neural Engine constraints); empty when there are none."""
        return []


class ValueTrace(dict[str, np.ndarray]):
    """`Exporter.intermediates` for a runtime whose value names mean nothing to the reference (name ->
    value, execution order), with, per value, the traced values its op read; `check --localize` matches
    these to the reference by value."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, list[str]] = {}

    def add(self, name: str, value: np.ndarray, inputs: list[str]) -> None:
        self[name] = value
        self.inputs[name] = inputs


# -- shared helpers ----------------------------------------------------------------------------------


def provenance(model: nn.Module) -> dict[str, Any]:
    """What every artifact's own metadata says about where it came from: task, labels, checkpoint,
    whether the weights are untrained, and the tool's version."""
    from .. import __version__

    ckpt = getattr(model, "checkpoint", None)
    return {
        "task": model.task,
        "id2label": {str(k): v for k, v in (getattr(model.config, "id2label", None) or {}).items()},
        "checkpoint_sha256": (ckpt.sha256 if ckpt and ckpt.sha256 else ""),
        "checkpoint_source": (ckpt.source if ckpt else ""),
        "untrained": bool(ckpt.untrained) if ckpt else True,
        "mvit2_export_version": __version__,
    }


def stack_per_image(per_image: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per-image output lists of a batch-1 runtime -> one float32 batch per output."""
    return [np.concatenate(parts).astype(np.float32) for parts in zip(*per_image, strict=True)]


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def check_destination(dest: Path, force: bool) -> None:
    if dest.exists() and not force:
        raise OutputExistsError(f"{dest}: already exists (use --force to overwrite)")
    parent = dest.parent
    if parent.exists() and not parent.is_dir():
        raise OutputExistsError(f"{parent}: is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputExistsError(f"{parent}: cannot create output directory ({exc.strerror})") from exc
    if not os.access(parent, os.W_OK):
        raise OutputExistsError(f"{parent}: output directory is not writable")


@contextmanager
def atomic_output(dest: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it is renamed over `dest`, on any error removed.

    Works for files and directories (.mlpackage). The rename is atomic on one filesystem, so a reader
    never sees a half-written artifact and an interrupted run leaves nothing behind.
    """
    check_destination(dest, force)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp = tmpdir / dest.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"exporter wrote nothing to {tmp}")
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
