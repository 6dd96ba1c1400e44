"""mvit2-export: MobileViTV2 to ONNX, Core ML and TFLite, with parity proven against PyTorch."""

from .errors import Mvit2ExportError
from .model import MobileViTV2Config, Preprocessor, load_model

__version__ = "0.1.0"

__all__ = ["MobileViTV2Config", "Mvit2ExportError", "Preprocessor", "__version__", "load_model"]
