"""Parity metrics between reference outputs and an artifact's outputs, and the pass/fail verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DegenerateReferenceError, ParityError
from .thresholds import DEGENERATE_SCALE, DEGENERATE_SPREAD, GATED_ON_TRAINED_ONLY, rule_class, rules_for


@dataclass
class Check:
    metric: str
    value: float
    threshold: float
    higher_is_better: bool

    @property
    def ok(self) -> bool:
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        op = ">=" if self.higher_is_better else "<="
        return {"metric": self.metric, "value": self.value, "rule": f"{op} {self.threshold:g}", "ok": self.ok}


@dataclass
class ParityReport:
    precision: str
    runtime: str
    n_inputs: int
    metrics: dict[str, dict[str, float]]
    checks: list[Check] = field(default_factory=list)
    gated: bool = True
    note: str = ""
    degenerate: str = ""  # why the reference outputs cannot be compared; empty when they can
    heldout: Any = None  # the int8 accuracy gate's GateResult (parity/gate.py) on held-out images

    @property
    def passed(self) -> bool:
        photos = not self.gated or all(c.ok for c in self.checks)
        return not self.degenerate and photos and (self.heldout is None or self.heldout.passed)

    @property
    def status(self) -> str:
        if self.degenerate:
            return "degenerate"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "runtime": self.runtime,
            "n_inputs": self.n_inputs,
            "metrics": self.metrics,
            "checks": [c.to_dict() for c in self.checks],
            "gated": self.gated,
            "passed": self.passed,
            "status": self.status,
            "note": self.note,
            **({"degenerate": self.degenerate} if self.degenerate else {}),
            **({"heldout": self.heldout.to_dict()} if self.heldout is not None else {}),
        }

    def failures(self) -> list[str]:
        out = [f"{c.metric}={c.value:.6g} (needs {c.to_dict()['rule']})" for c in self.checks if not c.ok]
        if self.heldout is not None and not self.heldout.passed:
            out += self.heldout.failures()
        return out

    def raise_if_failed(self, label: str) -> None:
        if self.degenerate:
            raise DegenerateReferenceError(f"{label}: {self.degenerate}")
        if not self.passed:
            raise ParityError(f"{label}: parity failed: {'; '.join(self.failures())}")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a64) * np.linalg.norm(b64)
    return float(a64 @ b64 / denom) if denom > 0 else float(np.array_equal(a64, b64))


def tensor_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    if ref.shape != got.shape:
        raise ParityError(f"output shape {tuple(got.shape)} differs from the reference {tuple(ref.shape)}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    scale = float(np.abs(ref).max())
    max_abs = float(diff.max())
    return {
        "max_abs": max_abs,
        "mean_abs": float(diff.mean()),
        "ref_max_abs": scale,
        "max_abs_rel": max_abs / scale if scale > 0 else max_abs,
        "cosine": cosine(ref, got),
        "finite": float(np.isfinite(got).all()),
    }


def classification_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    ref_top1 = ref.argmax(-1)
    k = min(5, ref.shape[-1])
    got_top5 = np.argsort(-got, axis=-1)[:, :k]
    return {
        "top1": float((got.argmax(-1) == ref_top1).mean()),
        "top5": float((got_top5 == ref_top1[:, None]).any(-1).mean()),
    }


def segmentation_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Argmax masks over the class axis (1): pixel agreement and mIoU over classes present in either."""
    a, b = ref.argmax(1), got.argmax(1)
    ious = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        inter = np.logical_and(a == c, b == c).sum()
        union = np.logical_or(a == c, b == c).sum()
        ious.append(inter / union)
    return {"pixel_agreement": float((a == b).mean()), "miou": float(np.mean(ious))}


def compare_outputs(
    ref: list[np.ndarray],
    got: list[np.ndarray],
    names: list[str],
    task: str,
    precision: str,
    runtime: str,
    trained: bool,
    rule: str | None = None,
) -> ParityReport:
    """Metrics for every output plus the task metric of the primary output, checked against the rules of
    `rule` (the class the exporter maps `precision` to; default: the precision's own class)."""
    if len(ref) != len(got):
        raise ParityError(f"artifact gives {len(got)} outputs, the reference {len(ref)}")
    metrics = {name: tensor_metrics(r, g) for name, r, g in zip(names, ref, got, strict=True)}
    primary = names[0]
    if task == "classification":
        metrics[primary].update(classification_metrics(ref[0], got[0]))
    elif task == "segmentation":
        metrics[primary].update(segmentation_metrics(ref[0], got[0]))

    cls = rule_class(rule or precision)
    report = ParityReport(
        precision, runtime, int(ref[0].shape[0]), metrics, degenerate=degenerate_reason(ref, names)
    )
    for r in rules_for(cls, task):
        for n in names if r.outputs == "all" else [primary]:
            report.checks.append(Check(f"{n}.{r.metric}", metrics[n][r.metric], r.limit, r.at_least))
    if cls in GATED_ON_TRAINED_ONLY and not trained:
        report.gated = False
        report.note = f"untrained weights: {precision} agreement is reported, not gated"
    return report


def degenerate_reason(ref: list[np.ndarray], names: list[str]) -> str:
    """Why these reference outputs prove nothing (all ~0, or the same for every input), else ""."""
    for name, r in zip(names, ref, strict=True):
        scale = float(np.abs(r).max()) if r.size else 0.0
        if scale < DEGENERATE_SCALE:
            return (
                f"reference outputs are degenerate ({name}: max |value| {scale:.3g}): untrained default "
                "weights? Nothing was compared"
            )
        if r.shape[0] > 1 and float(np.ptp(r.astype(np.float64), axis=0).max()) <= DEGENERATE_SPREAD * scale:
            return (
                f"reference outputs are degenerate ({name} is the same for every input): untrained default "
                "weights? Nothing was compared"
            )
    return ""
