"""Exporters, one sub-package per target, loaded lazily so a missing backend fails only when asked for."""

from __future__ import annotations

import importlib

from ..errors import BackendMissingError, UsageError
from .base import Artifact, Exporter, ExportOptions, Runner, TensorSpec

TARGETS = ("onnx", "coreml", "tflite")
EXTRAS = {"onnx": "onnx", "coreml": "coreml", "tflite": "tflite"}
SUFFIXES = {".onnx": "onnx", ".mlpackage": "coreml", ".tflite": "tflite"}


def parse_targets(value: str) -> list[str]:
    names = [t.strip().lower() for t in value.split(",") if t.strip()]
    if not names:
        raise UsageError("--target needs a value: onnx, coreml, tflite or all")
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(t for t in TARGETS if t not in out)
        elif name in TARGETS:
            if name not in out:
                out.append(name)
        else:
            raise UsageError(f"unknown target {name!r}; expected onnx, coreml, tflite or all")
    return out


def get_exporter(target: str) -> Exporter:
    """The exporter of `target`, after checking its backend packages are installed."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    try:
        module = importlib.import_module(f"{__name__}.{target}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"{__name__}.{target}"):
            raise UsageError(f"the {target} exporter is not part of this version yet") from exc
        raise BackendMissingError(target, EXTRAS[target], f"missing {exc.name}") from exc
    cls = next(
        (
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Exporter) and getattr(obj, "target", None) == target
        ),
        None,
    )
    if cls is None:
        raise UsageError(f"the {target} exporter is not part of this version yet")
    cls.check_available()
    return cls()


def target_of_path(path: str) -> str:
    for suffix, target in SUFFIXES.items():
        if str(path).rstrip("/").endswith(suffix):
            return target
    raise UsageError(f"{path}: unknown artifact type (expected {', '.join(SUFFIXES)})")


__all__ = [
    "TARGETS",
    "Artifact",
    "ExportOptions",
    "Exporter",
    "Runner",
    "TensorSpec",
    "get_exporter",
    "parse_targets",
    "target_of_path",
]
