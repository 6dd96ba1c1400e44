"""ONNX backend: export through the rewritten torch.export program, run with onnxruntime CPU."""

from typing import Any

from .exporter import OnnxExporter

__all__ = ["OnnxExporter", "OnnxRunner", "onnx_op_histogram"]


def __getattr__(name: str) -> Any:
    # The runtime side needs onnxruntime: loaded when asked for, not with the exporter class.
    if name in ("OnnxRunner", "onnx_op_histogram"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)
