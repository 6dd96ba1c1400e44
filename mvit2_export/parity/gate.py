"""The int8 accuracy gate, on held-out images (never the calibration images).

What the user states: `--min-agreement F` (default 0.99) with the fp32 PyTorch reference, measured as
top-1 agreement (classification), pixel agreement (segmentation) or cosine (backbone, the lowest over the
outputs); with a labelled `--validation-images` folder also `--max-accuracy-drop F` (default 0.01):
the artifact's accuracy on those labels may be at most F below the reference's.
On untrained weights int8 agreement is noise, so for every task the numbers are reported, not gated.

An `AccuracyGate` holds the held-out images and the reference's outputs on them (computed once, in the
parent process): it is picklable, so export lanes and the exporters' mixed-precision searches call it
as `gate(runner)` without importing anything from parity/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..data.validation import HeldoutSet, builtin_heldout, folder_heldout
from ..errors import UsageError
from .metrics import cosine, degenerate_reason

DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_MAX_ACCURACY_DROP = 0.01
METRIC = {"classification": "top1_agreement", "segmentation": "pixel_agreement", "backbone": "cosine"}


@dataclass
class GateSpec:
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    validation_images: Path | None = None
    count: int | None = None  # built-in held-out images (default per task: data/validation.py)

    def check(self, task: str) -> None:
        if not 0.0 < self.min_agreement <= 1.0:
            raise UsageError(f"--min-agreement {self.min_agreement:g} must be in (0, 1]")
        if not 0.0 <= self.max_accuracy_drop < 1.0:
            raise UsageError(f"--max-accuracy-drop {self.max_accuracy_drop:g} must be in [0, 1)")
        if self.validation_images is not None and task == "backbone":
            raise UsageError(
                "--validation-images needs labels, and a backbone has none: use --min-agreement alone"
            )
        if self.count is not None and self.count < 1:
            raise UsageError(f"--heldout-count {self.count} must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_agreement": self.min_agreement,
            "max_accuracy_drop": self.max_accuracy_drop,
            "validation_images": str(self.validation_images) if self.validation_images else None,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GateSpec:
        data = data or {}
        folder = data.get("validation_images")
        return cls(
            float(data.get("min_agreement", DEFAULT_MIN_AGREEMENT)),
            float(data.get("max_accuracy_drop", DEFAULT_MAX_ACCURACY_DROP)),
            Path(folder) if folder else None,
            data.get("count"),
        )


@dataclass
class GateResult:
    metric: str
    agreement: float
    min_agreement: float
    n_images: int
    source: str
    gated: bool
    accuracy_reference: float | None = None
    accuracy: float | None = None
    max_accuracy_drop: float | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy_ok(self) -> bool:
        if self.accuracy is None or self.accuracy_reference is None or self.max_accuracy_drop is None:
            return True
        return self.accuracy_reference - self.accuracy <= self.max_accuracy_drop + 1e-12

    @property
    def met(self) -> bool:
        """The numbers meet the gate (whether or not it is enforced)."""
        return self.agreement >= self.min_agreement and self.accuracy_ok

    @property
    def passed(self) -> bool:
        return self.met or not self.gated

    def failures(self) -> list[str]:
        out = []
        if self.agreement < self.min_agreement:
            out.append(f"held-out {self.metric}={self.agreement:.4f} (needs >= {self.min_agreement:g})")
        if not self.accuracy_ok:
            drop = self.accuracy_reference - self.accuracy  # type: ignore[operator]
            out.append(f"held-out accuracy drop {drop:.4f} (needs <= {self.max_accuracy_drop:g})")
        return out

    def summary(self) -> str:
        text = f"{self.metric} {self.agreement:.4f} on {self.n_images} held-out"
        if self.accuracy is not None:
            text += f", accuracy {self.accuracy:.4f} vs {self.accuracy_reference:.4f}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "agreement": self.agreement,
            "min_agreement": self.min_agreement,
            "accuracy_reference": self.accuracy_reference,
            "accuracy": self.accuracy,
            "max_accuracy_drop": self.max_accuracy_drop,
            "n_images": self.n_images,
            "source": self.source,
            "gated": self.gated,
            "met": self.met,
            "passed": self.passed,
            "note": self.note,
            **self.extra,
        }


class AccuracyGate:
    """gate(runner) -> GateResult on the held-out set, against the reference outputs computed at build."""

    def __init__(
        self, task: str, heldout: HeldoutSet, reference: list[np.ndarray], spec: GateSpec, trained: bool
    ) -> None:
        self.task, self.heldout, self.reference, self.spec, self.trained = (
            task,
            heldout,
            reference,
            spec,
            trained,
        )

    @property
    def active(self) -> bool:
        """Whether a miss is a failure (and so worth a mixed-precision search)."""
        return self.trained

    def __call__(self, runner: Any) -> GateResult:
        got: list[list[np.ndarray]] = []
        images = self.heldout.images
        for i in range(0, len(images), 16):
            got.append(runner.run(images[i : i + 16]))
        outs = [np.concatenate(parts) for parts in zip(*got, strict=True)]
        return self.evaluate(outs)

    def evaluate(self, outs: list[np.ndarray]) -> GateResult:
        ref, spec = self.reference, self.spec
        acc_ref = acc = None
        extra: dict[str, float] = {}
        if self.task == "classification":
            agreement = float((outs[0].argmax(-1) == ref[0].argmax(-1)).mean())
        elif self.task == "segmentation":
            agreement = float((outs[0].argmax(1) == ref[0].argmax(1)).mean())
        else:
            agreement = min(cosine(r, g) for r, g in zip(ref, outs, strict=True))
        if not all(np.isfinite(o).all() for o in outs):
            agreement = 0.0
            extra["nonfinite"] = 1.0
        labels = self.heldout.labels
        if labels is not None and self.task == "classification":
            acc_ref = float((ref[0].argmax(-1) == labels).mean())
            acc = float((outs[0].argmax(-1) == labels).mean())
        note = "" if self.trained else "untrained weights: held-out agreement is reported, not gated"
        return GateResult(
            METRIC[self.task],
            agreement,
            spec.min_agreement,
            len(self.heldout),
            self.heldout.source,
            gated=self.trained,
            accuracy_reference=acc_ref,
            accuracy=acc,
            max_accuracy_drop=spec.max_accuracy_drop if acc is not None else None,
            note=note,
            extra=extra,
        )


def heldout_for(model: nn.Module, size: int, spec: GateSpec) -> HeldoutSet:
    if spec.validation_images is not None:
        if model.task != "classification":
            # Segmentation folders would need per-pixel masks; the image-folder layout labels whole images.
            raise UsageError(
                f"--validation-images is an image-folder layout (one label per image): it applies to "
                f"classifiers, not a {model.task} model; use --min-agreement alone"
            )
        return folder_heldout(spec.validation_images, model.config.id2label, size)
    return builtin_heldout(model.task, size, spec.count)


def build_gate(model: nn.Module, size: int, spec: GateSpec) -> AccuracyGate:
    """Load the held-out set and run the reference on it (once per export)."""
    from .run import reference_outputs

    spec.check(model.task)
    heldout = heldout_for(model, size, spec)
    reference = reference_outputs(model, heldout.images)
    trained = not model.checkpoint.untrained and not degenerate_reason(reference, list(model.output_names))
    return AccuracyGate(model.task, heldout, reference, spec, trained)
