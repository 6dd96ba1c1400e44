"""Core ML exporter: MobileViTV2 -> .mlpackage (mlprogram), with compression and a Neural Engine audit.

coremltools is imported lazily inside functions, so importing this package works without it and
`CoreMLExporter.check_available()` reports the missing extra.
"""

from __future__ import annotations

from .ane_audit import ane_audit
from .exporter import CoreMLExporter
from .settings import PRECISIONS, CoreMLSettings, parse_settings

__all__ = ["PRECISIONS", "CoreMLExporter", "CoreMLSettings", "ane_audit", "parse_settings"]
