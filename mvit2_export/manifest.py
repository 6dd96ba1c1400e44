"""`OUT/manifest.json` (schema 1): what was exported, from what, and how well it matches the reference.

{
  "schema": 1, "tool": {"name", "version"},
  "model": {task, source, weights_sha256, untrained, width_multiplier, image_size, num_labels, id2label,
            preprocessing, output_stride},
  "artifacts": [{target, precision, path (relative to OUT), sha256, inputs, outputs, rewrites,
                 op_histogram, audit, parity (metrics, checks, thresholds, passed), latency, runtime, options}]
}
Written atomically (temp file + rename) after every artifact, so it never lists a file that is not there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import IntegrityError, UsageError

SCHEMA = 1
MANIFEST = "manifest.json"


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory tree (relative paths and contents, in sorted order)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def size_path(path: Path) -> int:
    """Bytes on disk of a file, or of every file in a directory tree (an .mlpackage)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a manifest is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = out_dir / MANIFEST
    write_json_atomic(path, manifest)
    return path


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: not a directory (expected an mvit2-export output directory)")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"{out_dir}: no {MANIFEST} (not an mvit2-export output directory)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise IntegrityError(
            f"{path}: unsupported manifest schema {data.get('schema') if isinstance(data, dict) else None!r}"
        )
    return data


def verify_artifact(out_dir: Path, entry: dict[str, Any]) -> Path:
    """The artifact's path, after checking it exists and its sha256 is the one recorded."""
    path = out_dir / entry["path"]
    if not path.exists():
        raise IntegrityError(f"{path}: listed in the manifest but missing")
    digest = sha256_path(path)
    if digest != entry["sha256"]:
        raise IntegrityError(
            f"{path}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}..."
        )
    return path
