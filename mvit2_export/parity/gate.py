"""The int8 accuracy gate, on held-out images (never the calibration images).

What the user states: `--min-agreement F` (default 0.99) with the fp32 PyTorch reference, measured as
top-1 agreement (classification), pixel agreement (segmentation) or cosine (backbone, the lowest over the
outputs); with a labelled `--validation-images` folder also `--max-accuracy-drop F` (default 0.01):
the artifact's accuracy on those labels may be at most F below the reference's.
On untrained weights int8 agreement is noise, so for every task the numbers are reported, not gated.

The gate is met only when **each half** of the held-out set meets it on its own (images alternate between
the halves). The int8 search keeps the first configuration whose numbers pass, so a single pooled number is
an optimistic estimate of what the chosen configuration does on images it was never judged on: measured on
a trained fixture (2026-12-06, AVX2 host), TFLite met a pooled 500-crop gate at 0.992 and agreed 0.972 on
500 other crops of the same band. Requiring both halves asks the configuration to hold on two samples,
which costs a margin of about one standard error, not a second data set.

For a classifier the gate also needs the **95% lower confidence bound** of the top-1 agreement (Wilson's
score interval, one-sided) to reach `min_agreement`, wherever the held-out set is large enough for it to
(`min_images`: 268 images for 0.99, with no disagreement at all). With 1000 images that allows at most 4
disagreements. Why: the halves alone still passed configurations that miss the level on new images.
Measured on a trained fixture (2026-12-07, AVX2 host, classifier width 0.5 @ 128): ONNX's kept
configuration met the halves at 0.992 (lowest half 0.990), Core ML W8A8's at 0.994 (0.992); on nine
further sets of 1000 crops they agreed 0.988 and 0.987 on average (sd 0.004 between sets), so
neither held 0.99. The search tries up to a dozen configurations and keeps the first that passes, so the
one kept is the one whose sample was luckiest; a bound that asks for the level plus 1.6 standard errors
keeps that luck from deciding. A set too small for the bound (a user's folder of 100 images) is judged on
its halves alone, and the result says the bound could not apply.

A segmenter's pixels are far from independent within a mosaic, so its bound counts mosaics, not pixels:
the one-sided 95% lower bound of the mean per-mosaic pixel agreement (mean - z * sd / sqrt(n), a normal
approximation over the mosaics as units), wherever there are at least MIN_MOSAICS of them. Measured on
the trained segmenter (2026-12-08, AVX2 host, 96 held-out mosaics of 8x8 output pixels, ONNX int8 with 6
groups float): mean 0.9948, sd 0.0196 between mosaics, bound 0.9915. Its standard error (0.002) is
what ten further sets of 96 mosaics showed between sets (sd 0.0014 ONNX, 0.0021 TFLite; the kept files
agreed 0.9953 / 0.9941 on them on average). Core ML W8A8's best configuration there, 0.9922 on each
half with 6 groups float, would have passed the halves alone; its bound, 0.9881, refuses it.

The int8 search's trials stop early (`stop_early`): once a half (or, where a classifier's bound
applies, the whole set) has more disagreements than the gate allows it over its full size, no later
image can bring it back, and the configuration is refused on the images that prove it (its numbers are
then those of the images run, and say so). A segmenter's bound depends on the spread of the mosaics not
yet run, so only its halves stop a run early. A configuration that
meets the gate is always judged on every image. Measured on the trained fixture (Core ML W8A8 through
the MIL interpreter, 2026-12-07): four refused configurations at 0.927-0.991 cost 32-46 s each in full.

An `AccuracyGate` holds the held-out images and the reference's outputs on them (computed once, in the
parent process): it is picklable, so export lanes and the exporters' mixed-precision searches call it
as `gate(runner)` without importing anything from parity/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from torch import nn

from ..data.validation import HeldoutSet, builtin_heldout, folder_heldout
from ..errors import UsageError
from .metrics import cosine, degenerate_reason

DEFAULT_MIN_AGREEMENT = 0.99
CONFIDENCE = 0.95  # of the lower bounds (one-sided)
Z = NormalDist().inv_cdf(CONFIDENCE)  # 1.645
MIN_MOSAICS = 30  # the fewest mosaics whose mean the normal approximation is trusted for
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
class Half:
    """One half of the held-out set: its size and numbers."""

    n_images: int
    agreement: float
    accuracy_reference: float | None = None
    accuracy: float | None = None

    @property
    def drop(self) -> float | None:
        if self.accuracy is None or self.accuracy_reference is None:
            return None
        return self.accuracy_reference - self.accuracy

    def accuracy_ok(self, max_drop: float | None) -> bool:
        return self.drop is None or max_drop is None or self.drop <= max_drop + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_lower(agree: int, n: int) -> float:
    """The one-sided 95% lower bound of a proportion `agree` of `n` (Wilson's score interval: unlike
    the normal approximation, it stays below 1 when every image agrees)."""
    p, z2 = agree / n, Z * Z
    centre = p + z2 / (2 * n)
    return float((centre - Z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n))


def min_images(min_agreement: float) -> int:
    """The fewest images whose bound can reach `min_agreement` (all agreeing: n / (n + z^2) >= F)."""
    if min_agreement >= 1.0:
        return 2**62  # never: only every image agreeing, judged on the halves
    return int(np.ceil(Z * Z * min_agreement / (1 - min_agreement) - 1e-9))


def mosaic_lower(agreement: np.ndarray) -> float:
    """The one-sided 95% lower bound of the mean of per-mosaic agreements (normal approximation)."""
    n = len(agreement)
    if n < 2:
        return float(agreement.mean()) if n else 0.0
    return float(agreement.mean() - Z * agreement.std(ddof=1) / np.sqrt(n))


def fewest_for_bound(metric: str, min_agreement: float) -> int:
    """The fewest held-out images (mosaics) for which the lower bound is part of the gate."""
    return min_images(min_agreement) if metric == METRIC["classification"] else MIN_MOSAICS


def allowed_disagreements(n: int, min_agreement: float) -> int:
    """The most disagreements among `n` images whose bound still reaches `min_agreement` (-1: none)."""
    k = -1
    while k + 1 <= n and wilson_lower(n - k - 1, n) >= min_agreement:
        k += 1
    return k


def halves(n: int) -> list[np.ndarray]:
    """Indices of the two halves (alternating, so each spans the whole set: every label folder, every
    photo); a single image is one part."""
    return [np.arange(n)] if n < 2 else [np.arange(0, n, 2), np.arange(1, n, 2)]


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

    # each half's own numbers (one part for a single image); the gate needs every one
    halves: list[Half] = field(kw_only=True)
    # the held-out set's size when the run stopped before its end (`n_images` were run): a half could no
    # longer meet the gate, so the numbers are those of the first `n_images` (0: every image was run)
    planned: int = field(default=0, kw_only=True)
    # the 95% lower confidence bound of `agreement` (a classifier's over images, a segmenter's over
    # mosaics; None for a backbone), and whether the gate needs it: the held-out set is large enough
    lower_bound: float | None = field(default=None, kw_only=True)
    bound_applies: bool = field(default=False, kw_only=True)

    @property
    def accuracy_ok(self) -> bool:
        return all(h.accuracy_ok(self.max_accuracy_drop) for h in self.halves)

    @property
    def lowest(self) -> float:
        """The lowest half's agreement: what the gate compares with `min_agreement`."""
        return min(h.agreement for h in self.halves)

    @property
    def bound_ok(self) -> bool:
        return not self.bound_applies or (self.lower_bound or 0.0) >= self.min_agreement

    @property
    def met(self) -> bool:
        """The numbers meet the gate on each half and, where it applies, with the lower bound (whether
        or not the gate is enforced)."""
        return self.lowest >= self.min_agreement and self.bound_ok and self.accuracy_ok

    @property
    def passed(self) -> bool:
        return self.met or not self.gated

    def halves_text(self) -> str:
        return " / ".join(f"{h.agreement:.4f}" for h in self.halves)

    def images_text(self) -> str:
        return f"the first {self.n_images} of {self.planned}" if self.planned else str(self.n_images)

    def failures(self) -> list[str]:
        out = []
        if self.lowest < self.min_agreement:
            out.append(
                f"held-out {self.metric}={self.agreement:.4f} on {self.images_text()} (halves "
                f"{self.halves_text()}; each half needs >= {self.min_agreement:g})"
            )
        if not self.bound_ok:
            total = self.planned or self.n_images
            allowed = (
                f"at most {allowed_disagreements(total, self.min_agreement)} of {total} images may disagree"
                if self.metric == METRIC["classification"]
                else f"over {self.n_images} mosaics as units"
            )
            out.append(
                f"held-out {self.metric}={self.agreement:.4f} on {self.images_text()}: its "
                f"{CONFIDENCE:.0%} lower confidence bound {self.lower_bound:.4f} is under "
                f"{self.min_agreement:g} ({allowed})"
            )
        if not self.accuracy_ok:
            drops = " / ".join(f"{h.drop:.4f}" for h in self.halves if h.drop is not None)
            out.append(f"held-out accuracy drop {drops} (each half needs <= {self.max_accuracy_drop:g})")
        return out

    def summary(self) -> str:
        text = f"{self.metric} {self.agreement:.4f} on {self.n_images} held-out (halves {self.halves_text()}"
        if self.lower_bound is not None:
            text += f"; {CONFIDENCE:.0%} lower bound {self.lower_bound:.4f}"
            text += (
                ""
                if self.bound_applies
                else f", not gated: fewer than {fewest_for_bound(self.metric, self.min_agreement)} images"
            )
        text += ")"
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
            "halves": [h.to_dict() for h in self.halves],
            "lowest_half": self.lowest,
            "source": self.source,
            "gated": self.gated,
            "met": self.met,
            "passed": self.passed,
            "note": self.note,
            **({"stopped_early_of": self.planned} if self.planned else {}),
            **(
                {
                    "lower_bound": self.lower_bound,
                    "bound_applies": self.bound_applies,
                    "confidence": CONFIDENCE,
                }
                if self.lower_bound is not None
                else {}
            ),
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

    @property
    def bound_applies(self) -> bool:
        """Whether the lower bound is part of the gate (see the module's docstring)."""
        if self.task == "backbone":
            return False
        return len(self.heldout) >= fewest_for_bound(METRIC[self.task], self.spec.min_agreement)

    def __call__(self, runner: Any, stop_early: bool = False) -> GateResult:
        """`stop_early`: stop once the gate can no longer be met (the search's trials; see above)."""
        got: list[list[np.ndarray]] = []
        wrong: list[np.ndarray] = []  # disagreements per image so far (top-1: 0/1; pixels)
        images = self.heldout.images
        stop_early = stop_early and self.active and self.task != "backbone"  # a cosine has no count
        for i in range(0, len(images), 16):
            got.append(runner.run(images[i : i + 16]))
            if stop_early and i + 16 < len(images):
                if not all(np.isfinite(o).all() for o in got[-1]):
                    break  # non-finite outputs agree with nothing: the half's agreement is 0
                wrong.append(self._disagreements(got[-1][0], i))
                if self._cannot_meet(np.concatenate(wrong)):
                    break
        outs = [np.concatenate(parts) for parts in zip(*got, strict=True)]
        return self.evaluate(outs)

    def _matches(self, out: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Where the top-1 decision (per image, or per pixel for segmentation) equals the reference's."""
        axis = -1 if self.task == "classification" else 1
        return out.argmax(axis) == ref.argmax(axis)

    def _disagreements(self, out: np.ndarray, start: int) -> np.ndarray:
        """Per image of `out` (held-out images start..): how many of its top-1 labels (1) or pixels differ
        from the reference's."""
        ref = self.reference[0][start : start + len(out)]
        return (~self._matches(out, ref)).reshape(len(out), -1).sum(1)

    def _cannot_meet(self, wrong: np.ndarray) -> bool:
        """Whether a half, counting the disagreements of the images run so far (`wrong`, per image), is
        below the gate even if every later image agrees: its best agreement, computed as `_numbers`
        computes a mean of matches, is then under `min_agreement`; or, where the lower bound applies,
        the whole set already has more disagreements than a classifier's bound allows."""
        units = 1 if self.task == "classification" else int(np.prod(self.reference[0].shape[2:]))
        n = len(self.heldout)
        if (
            self.task == "classification"
            and self.bound_applies
            and int(wrong.sum()) > allowed_disagreements(n, self.spec.min_agreement)
        ):
            return True
        for index in halves(n):
            total = len(index) * units
            if (total - int(wrong[index[index < len(wrong)]].sum())) / total < self.spec.min_agreement:
                return True
        return False

    def evaluate(self, outs: list[np.ndarray]) -> GateResult:
        """The gate's numbers on `outs`, the outputs of the first len(outs[0]) held-out images (all of
        them, or the images a run that stopped early got through)."""
        spec, labels = self.spec, self.heldout.labels
        if labels is not None and self.task != "classification":
            labels = None
        n = len(outs[0])
        reference = [r[:n] for r in self.reference]
        labels = None if labels is None else labels[:n]
        agreement, acc_ref, acc = self._numbers(outs, reference, labels)
        parts = []
        for index in halves(n):
            numbers = self._numbers(
                [o[index] for o in outs],
                [r[index] for r in reference],
                None if labels is None else labels[index],
            )
            parts.append(Half(len(index), *numbers))
        extra: dict[str, float] = {}
        if not all(np.isfinite(o).all() for o in outs):
            extra["nonfinite"] = 1.0
        bound = self._lower_bound(outs[0], reference[0], agreement)
        note = "" if self.trained else "untrained weights: held-out agreement is reported, not gated"
        return GateResult(
            METRIC[self.task],
            agreement,
            spec.min_agreement,
            n,
            self.heldout.source,
            gated=self.trained,
            accuracy_reference=acc_ref,
            accuracy=acc,
            max_accuracy_drop=spec.max_accuracy_drop if acc is not None else None,
            note=note,
            extra=extra,
            halves=parts,
            planned=len(self.heldout) if n < len(self.heldout) else 0,
            lower_bound=bound,
            bound_applies=self.bound_applies,
        )

    def _lower_bound(self, out: np.ndarray, ref: np.ndarray, agreement: float) -> float | None:
        if self.task == "classification":
            # top-1 agreement is a mean of matches over the n images (0 when any output is non-finite)
            return wilson_lower(round(agreement * len(out)), len(out))
        if self.task == "segmentation":
            if not np.isfinite(out).all():
                return 0.0
            return mosaic_lower(self._matches(out, ref).reshape(len(out), -1).mean(1))
        return None

    def _numbers(
        self, outs: list[np.ndarray], ref: list[np.ndarray], labels: np.ndarray | None
    ) -> tuple[float, float | None, float | None]:
        """(agreement, reference accuracy, artifact accuracy) on these images; non-finite outputs agree
        with nothing."""
        if not all(np.isfinite(o).all() for o in outs):
            agreement = 0.0
        elif self.task != "backbone":
            agreement = float(self._matches(outs[0], ref[0]).mean())
        else:
            agreement = min(cosine(r, g) for r, g in zip(ref, outs, strict=True))
        if labels is None:
            return agreement, None, None
        return (
            agreement,
            float((ref[0].argmax(-1) == labels).mean()),
            float((outs[0].argmax(-1) == labels).mean()),
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
