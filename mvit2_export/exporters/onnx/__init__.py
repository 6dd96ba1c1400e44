"""ONNX backend: export through the rewritten torch.export program, run with onnxruntime CPU."""

from .exporter import OnnxExporter
from .runner import OnnxRunner, bench_onnx, onnx_op_histogram

__all__ = ["OnnxExporter", "OnnxRunner", "bench_onnx", "onnx_op_histogram"]
