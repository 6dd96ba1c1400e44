"""Graph rewrites on torch.export programs (ATen graphs), matched on graph patterns only.

ep = export_program(module, x, dynamic_batch=True)
new_ep, results = apply_pipeline(ep, "onnx")   # or "coreml", "tflite"
"""

from __future__ import annotations

from . import common, coreml, onnx, tflite  # noqa: F401 - imported to register the rewrites
from .base import REGISTRY, Registry, Rewrite, RewriteResult, register_rewrite
from .export import export_program
from .graph_utils import op_histogram
from .manager import apply_pipeline, rewrite_module
from .pipelines import PIPELINES
from .prepare import Prepared, prepare

__all__ = [
    "PIPELINES",
    "Prepared",
    "REGISTRY",
    "Registry",
    "Rewrite",
    "RewriteResult",
    "apply_pipeline",
    "export_program",
    "op_histogram",
    "prepare",
    "register_rewrite",
    "rewrite_module",
]
