"""Runners for a .pte: the ExecuTorch runtime itself (`executorch.runtime`, XNNPACK delegate), and for a
Core ML-delegated program, which only runs on Apple hardware, the Core ML program it carries executed by
the project's MIL interpreter (exporters/coreml/mil).

Both read the artifact from disk. Input: uint8 RGB [B,H,W,3]; programs have batch 1 (phone runtimes
run one image at a time), so a batch runs image by image; outputs come back in the reference layout.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UsageError, first_line
from ..base import default_threads, stack_per_image
from .pte import load_program, metadata_of, read_bytes, read_metadata
from .quantize import model_inputs

RUNTIME = "executorch"
MIL_RUNTIME = "executorch-coreml-mil-reference"


_loaded = [False]  # whether this process has loaded a delegate (which then holds the thread pool)


def set_threads(threads: int) -> int:
    """Size ExecuTorch's thread pool, before the first program is loaded; returns the size in effect.

    The pool is one per process and every XNNPACK delegate keeps a pointer to it when it is loaded:
    resizing it later frees the pool live delegates use (a segfault in `bench`, measured). So the first
    load decides, and later runners report the size they really run with."""
    from executorch.extension.pybindings import portable_lib

    if not _loaded[0] and portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    _loaded[0] = True
    return int(portable_lib._threadpool_get_thread_count())


class ExecuTorchRunner:
    """`Method.execute` of the program's `forward`, on this host's ExecuTorch runtime."""

    runtime = RUNTIME

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.program = load_program(path)
        self.meta = metadata_of(self.program, path)
        self.threads = set_threads(threads or default_threads())  # before the delegate loads
        try:
            self.method = self.program.load_method("forward")
        except Exception as exc:
            raise UsageError(f"{path}: ExecuTorch cannot load the program ({first_line(exc)})") from exc
        self.embedded = bool(self.meta.get("preprocessing", {}).get("embedded_in_graph"))

    def run_one(self, x: torch.Tensor) -> list[np.ndarray]:
        return [np.asarray(o.numpy(), dtype=np.float32) for o in self.method.execute([x])]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return stack_per_image([self.run_one(x) for x in model_inputs(images, self.embedded)])


def coreml_package(path: Path, workdir: Path) -> Path:
    """Unpack the Core ML delegate's payload (a flattened model directory) and return its .mlpackage."""
    from executorch.backends.apple.coreml import executorchcoreml
    from executorch.exir._serialize._program import _extract_delegate_payload

    payload = _extract_delegate_payload(read_bytes(path), "coreml")
    if payload is None:
        raise UsageError(f"{path}: no Core ML delegate in this program")
    if not executorchcoreml.unflatten_directory_contents(payload, str(workdir)):
        raise UsageError(f"{path}: cannot unpack the Core ML delegate payload")
    (package,) = workdir.rglob("*.mlpackage")
    return package


class CoreMLDelegateRunner:
    """The Core ML program inside a Core ML-delegated .pte, run by the NumPy MIL interpreter.

    What it proves: the program ExecuTorch hands to Core ML computes the model (every op it contains, in
    its precision). What it does not: that ExecuTorch's Core ML backend loads and feeds it on a device
    (that runtime is Apple-only), or the Neural Engine's numerics."""

    runtime = MIL_RUNTIME
    not_timed = (
        "ExecuTorch's Core ML delegate runs only on Apple hardware (here a NumPy oracle runs its program)"
    )

    def __init__(self, path: Path) -> None:
        import json

        from ..coreml.mil import MilInterpreter

        self.meta = read_metadata(path)
        with tempfile.TemporaryDirectory() as d:
            package = coreml_package(path, Path(d))
            self.interp = MilInterpreter.from_mlpackage(package)
            info = json.loads((package.parent / "metadata.json").read_text())
        self.interp.check_supported()
        self.input_name = info["inputNames"][0]
        self.output_names = info["outputNames"]
        self.embedded = bool(self.meta.get("preprocessing", {}).get("embedded_in_graph"))

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        feeds = [{self.input_name: x.numpy()} for x in model_inputs(images, self.embedded)]
        outs = self.interp.run_batch(feeds)  # each image bit-identical to its own run
        return stack_per_image([[np.asarray(o[n]) for n in self.output_names] for o in outs])


def load(path: Path, threads: int | None = None) -> Any:
    """The runner for what the .pte's delegate is (read from the tool's metadata)."""
    if read_metadata(path).get("delegate_backend") == "coreml":
        return CoreMLDelegateRunner(path)
    return ExecuTorchRunner(path, threads)
