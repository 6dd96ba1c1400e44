"""Exporters, one sub-package per target, each registering its exporter class (see registry.py)."""

from __future__ import annotations

from .base import Artifact, Exporter, ExportOptions, Runner, TensorSpec
from .options import OptionSpec
from .registry import (
    available_targets,
    exporter_class,
    get_exporter,
    known_precisions,
    parse_targets,
    register,
    registered,
    target_names,
    target_of_path,
    targets_for_device,
)

__all__ = [
    "Artifact",
    "ExportOptions",
    "Exporter",
    "OptionSpec",
    "Runner",
    "TensorSpec",
    "available_targets",
    "exporter_class",
    "get_exporter",
    "known_precisions",
    "parse_targets",
    "register",
    "registered",
    "target_names",
    "target_of_path",
    "targets_for_device",
]
