"""NumPy reference interpreter for saved Core ML mlprogram (.mlpackage) artifacts.

coremltools cannot run predictions on Linux; this executes the saved program op by op instead::

    interp = MilInterpreter.from_mlpackage("model.mlpackage")
    outs = interp.run({"pixel_values": x})
"""

from __future__ import annotations

from ._registry import OPS
from .interpreter import MilInterpreter, run_mlpackage

SUPPORTED_OPS: frozenset[str] = frozenset(OPS) | {"const"}

__all__ = ["MilInterpreter", "SUPPORTED_OPS", "run_mlpackage"]
