"""`OUT/manifest.json`: what was exported, from what, and how well it matches the reference.

Between layers the manifest is typed (`Manifest`, `ArtifactEntry`); on disk it is their `to_json()`:

{
  "schema": 2, "tool": {"name", "version"},
  "model": {task, checkpoint_source, checkpoint_weights_file, checkpoint_sha256, untrained,
            width_multiplier, image_size, output_stride, parameters, num_labels, id2label, outputs,
            preprocessing},
  "artifacts": [{target, precision, path (relative to OUT), runtime, sha256, size_bytes, inputs, outputs,
                 rewrites, options, op_histogram, audit, parity (metrics, checks, passed, ...),
                 latency, device_latency}],
  "failed": [{artifact, target, precision, stage, error_type, exit_code, message}],
  "host": {cpu, machine, isa, usable_cores}, "reference_latency": {...}      (after `bench`)
}
Schema 1 (no size_bytes, no failed/host) still reads: its entries lack only the newer optional fields.
Written atomically (temp file + rename) after every artifact, so it never lists a file that is not there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import IntegrityError, UsageError

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
MANIFEST = "manifest.json"


@dataclass
class ArtifactEntry:
    """One artifact: what the exporter wrote, its audit, parity and (after `bench`) latency."""

    target: str
    precision: str
    path: str  # relative to the output directory
    runtime: str
    sha256: str = ""
    size_bytes: int | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    rewrites: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    op_histogram: dict[str, int] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    device_latency: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, data: Any) -> ArtifactEntry:
        if not isinstance(data, dict) or not {"target", "precision", "path"} <= data.keys():
            raise IntegrityError(f"manifest entry {str(data)[:80]!r} lacks target, precision or path")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("runtime", "")
        return cls(**kwargs)


@dataclass
class Manifest:
    """Everything an export wrote into OUT, and what `bench` added."""

    model: dict[str, Any]
    tool: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # artifacts that could not be exported
    host: dict[str, Any] | None = None
    reference_latency: dict[str, Any] | None = None
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "tool": self.tool,
            "model": self.model,
            "artifacts": [a.to_json() for a in self.artifacts],
            "failed": self.failed,
        }
        if self.host is not None:
            data["host"] = self.host
        if self.reference_latency is not None:
            data["reference_latency"] = self.reference_latency
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST) -> Manifest:
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema not in READABLE_SCHEMAS:
            raise IntegrityError(f"{where}: unsupported manifest schema {schema!r}")
        if not isinstance(data.get("model"), dict):
            raise IntegrityError(f"{where}: no model section")
        return cls(
            model=data["model"],
            tool=data.get("tool") or {},
            artifacts=[ArtifactEntry.from_json(a) for a in data.get("artifacts") or []],
            failed=list(data.get("failed") or []),
            host=data.get("host"),
            reference_latency=data.get("reference_latency"),
            schema=schema,
        )


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


def write_manifest(out_dir: Path, manifest: Manifest) -> Path:
    path = out_dir / MANIFEST
    write_json_atomic(path, manifest.to_json())
    return path


def read_manifest(out_dir: Path) -> Manifest:
    path = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: not a directory (expected an mvit2-export output directory)")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"{out_dir}: no {MANIFEST} (not an mvit2-export output directory)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path}: unreadable manifest ({exc})") from exc
    return Manifest.from_json(data, str(path))


def verify_artifact(out_dir: Path, entry: ArtifactEntry) -> Path:
    """The artifact's path, after checking it exists and its sha256 is the one recorded."""
    path = out_dir / entry.path
    if not path.exists():
        raise IntegrityError(f"{path}: listed in the manifest but missing")
    digest = sha256_path(path)
    if digest != entry.sha256:
        raise IntegrityError(
            f"{path}: sha256 {digest[:12]}... differs from the manifest's {entry.sha256[:12]}..."
        )
    return path
