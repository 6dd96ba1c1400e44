"""TFLite / LiteRT exporter (litert-torch lowering, ai-edge-quantizer, ai-edge-litert runtime)."""

from .exporter import TFLiteExporter

__all__ = ["TFLiteExporter"]
