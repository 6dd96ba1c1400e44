"""`mvit2-export check`: re-verify exported artifacts (sha256 and parity) against the reference. A CI gate."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import Progress, load_reference_for_manifest
from .data.images import parity_images
from .errors import DegenerateReferenceError, IntegrityError, Mvit2ExportError, ParityError, UsageError
from .exporters import get_exporter
from .exporters.base import default_threads
from .manifest import ArtifactEntry, Manifest, read_manifest, verify_artifact
from .parity.gate import AccuracyGate, GateSpec, build_gate
from .parity.localize import localize_artifact
from .parity.run import run_parity
from .progress import ProgressEvent, as_listener


@dataclass
class CheckResult:
    path: str
    target: str
    precision: str
    passed: bool
    detail: str
    parity: dict[str, Any] | None = None
    localization: dict[str, Any] | None = None
    error: Mvit2ExportError | None = None  # what failed, typed: its exit code decides check's

    def numbers(self) -> str:
        """The primary output's parity numbers, one short phrase (empty when parity did not run)."""
        metrics = (self.parity or {}).get("metrics") or {}
        m = next(iter(metrics.values()), {})
        parts = [
            f"max abs/scale {m['max_abs_rel']:.3g}" if "max_abs_rel" in m else "",
            f"cosine {m['cosine']:.6f}" if "cosine" in m else "",
            f"top-1 {m['top1']:.3f}" if "top1" in m else "",
            f"pixel {m['pixel_agreement']:.3f}" if "pixel_agreement" in m else "",
        ]
        return ", ".join(p for p in parts if p)


def manifest_entries(path: Path) -> tuple[Path, Manifest, list[ArtifactEntry]]:
    """(OUT dir, manifest, entries to check) for an OUT directory or one artifact inside one."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_dir() and not path.name.endswith(".mlpackage"):
        manifest = read_manifest(path)
        return path, manifest, manifest.artifacts
    out = path.parent
    manifest = read_manifest(out)
    entries = [a for a in manifest.artifacts if (out / a.path).resolve() == path.resolve()]
    if not entries:
        raise IntegrityError(f"{path}: not listed in {out / 'manifest.json'}")
    return out, manifest, entries


def check(
    path: str | Path,
    checkpoint: str | None = None,
    threads: int | None = None,
    localize: bool = False,
    progress: Progress | None = None,
    gate: dict[str, Any] | None = None,
) -> list[CheckResult]:
    """Check every artifact; returns one result each (see `raise_on_failure`).

    With `localize`, each artifact's intermediates are also compared with PyTorch's, op by op, and the
    result names the first operation that diverges. `progress` as in `export` (events "parity",
    "localize", "done"). Artifacts held to the int8 rules are gated on held-out images as at export:
    `gate` (min_agreement, max_accuracy_drop, validation_images, count) overrides what the export recorded.
    """
    listener, started = as_listener(progress), time.time()

    def say(kind: str, text: str, done: int, total: int, entry: ArtifactEntry | None = None) -> None:
        target, precision = (entry.target, entry.precision) if entry else (None, None)
        listener(ProgressEvent(kind, text, done, total, target, precision).since(started))

    out, manifest, entries = manifest_entries(Path(path))
    model = load_reference_for_manifest(manifest, checkpoint)
    size = int(manifest.model["image_size"])
    results: list[CheckResult] = []
    per_entry = 2 if localize else 1
    held: list[AccuracyGate] = []  # built on the first artifact that needs it

    def heldout_gate() -> AccuracyGate:
        if not held:
            recorded = {k: v for k, v in (manifest.model.get("int8_gate") or {}).items() if v is not None}
            spec = GateSpec.from_dict({**recorded, **(gate or {})})
            held.append(build_gate(model, size, spec))
        return held[0]

    for n, entry in enumerate(entries):
        label = (entry.path, entry.target, entry.precision)
        try:
            artifact = verify_artifact(out, entry)
            exporter = get_exporter(entry.target)
            runner = exporter.load_runner(artifact, entry, threads or default_threads())
            say(
                "parity",
                f"checking parity of {entry.path}",
                n * per_entry,
                len(entries) * per_entry,
                entry,
            )
            report = run_parity(
                model, runner, entry.precision, size, rule=exporter.threshold_class(entry.precision)
            )
            if exporter.threshold_class(entry.precision) == "int8":
                report.heldout = heldout_gate()(runner)
            if localize:
                say(
                    "localize",
                    f"localizing {entry.path} op by op",
                    n * per_entry + 1,
                    len(entries) * per_entry,
                    entry,
                )
            where = (
                localize_artifact(model, exporter, artifact, entry, parity_images(size, 1, 0))
                if localize
                else None
            )
        except Mvit2ExportError as exc:
            results.append(CheckResult(*label, passed=False, detail=exc.message, error=exc))
            continue
        detail = "ok" if report.passed else report.degenerate or "; ".join(report.failures())
        if report.passed and not report.gated:
            detail = f"ok ({report.note})"
        if where is not None:
            detail += f" | {where.summary(report.passed)}"
        results.append(
            CheckResult(
                *label,
                passed=report.passed,
                detail=detail,
                parity=report.to_dict(),
                localization=where.to_dict() if where else None,
                error=None
                if report.passed
                else (DegenerateReferenceError if report.degenerate else ParityError)(
                    f"{entry.path}: {detail}"
                ),
            )
        )
    say("done", "done", len(entries) * per_entry, len(entries) * per_entry)
    return results


def raise_on_failure(results: list[CheckResult]) -> None:
    """IntegrityError when a file is missing or changed, else ParityError, naming every failed artifact."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return
    kind: type[Mvit2ExportError] = ParityError
    if any(isinstance(r.error, IntegrityError) for r in failed):
        kind = IntegrityError
    elif all(isinstance(r.error, DegenerateReferenceError) for r in failed):
        kind = DegenerateReferenceError
    raise kind(
        f"{len(failed)} of {len(results)} artifacts failed: "
        + " | ".join(f"{r.path}: {r.detail}" for r in failed)
    )
