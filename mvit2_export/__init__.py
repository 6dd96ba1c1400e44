"""mvit2-export: MobileViTV2 to ONNX, Core ML and TFLite, with parity proven against PyTorch."""

__version__ = "0.1.0"

from .api import export  # noqa: E402 - after __version__, which api reads
from .errors import Mvit2ExportError  # noqa: E402
from .model import MobileViTV2Config, Preprocessor, load_model  # noqa: E402

__all__ = ["MobileViTV2Config", "Mvit2ExportError", "Preprocessor", "__version__", "export", "load_model"]
