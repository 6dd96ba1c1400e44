"""ExecuTorch exporter (torch.export -> to_edge_transform_and_lower -> .pte; XNNPACK or Core ML delegate;
executorch.runtime for parity)."""

from . import rewrites  # noqa: F401 - registers the executorch:: rewrites the pipeline names
from .exporter import ExecuTorchExporter

__all__ = ["ExecuTorchExporter"]
