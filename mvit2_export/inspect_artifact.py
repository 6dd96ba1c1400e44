"""`mvit2-export inspect ARTIFACT`: op histogram, attention audit, backend findings, rewrites applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .audit import audit_histogram
from .errors import UsageError
from .exporters import get_exporter, target_of_path


def inspect_artifact(path: Path) -> dict[str, Any]:
    target = target_of_path(str(path))
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    exporter = get_exporter(target)
    histogram = exporter.op_histogram(path)
    meta = exporter.metadata(path)
    rewrites = meta.get("rewrites")
    if isinstance(rewrites, str):
        rewrites = json.loads(rewrites)
    return {
        "path": str(path),
        "target": target,
        "op_histogram": dict(sorted(histogram.items())),
        "audit": audit_histogram(exporter, histogram),
        "ane_audit": exporter.static_audit(path),
        "rewrites": rewrites or [],
        "metadata": meta,
    }
