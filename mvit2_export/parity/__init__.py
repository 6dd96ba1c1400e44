"""Parity: the same inputs through the PyTorch reference and an artifact's runner, compared by metrics."""

from ..data.images import parity_images
from .metrics import ParityReport, compare_outputs
from .thresholds import RULES

__all__ = ["RULES", "ParityReport", "compare_outputs", "parity_images"]
