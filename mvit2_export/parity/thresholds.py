"""Every parity threshold, in one table: rules per precision class, and the per-op localize tolerance.

fp32: max abs diff <= 1e-4 x max|reference| (every output).
fp16: cosine >= 0.9999 (every output) and top-1 agreement 100% (classification) / pixel agreement >= 99%
      (segmentation).
int8: finite outputs on the parity photos (their numbers are reported); the verdict is the held-out
      accuracy gate (parity/gate.py): agreement with the reference >= --min-agreement (0.99: top-1,
      pixel agreement, or cosine for the backbone) on images that were never calibration images, and
      with labelled --validation-images an accuracy drop <= --max-accuracy-drop (0.01). The parity
      photos are where the default calibration crops come from, so a gate on them proves little. On
      untrained (random) weights int8 agreement is noise, so it is reported without gating, every task.
An exporter maps each precision it accepts to one of these classes (`Exporter.threshold_classes`: Core ML's
palettized and w8a8 are held to int8). Every class also requires every output to be finite.
Degenerate references: when an output of the PyTorch reference is (near) zero everywhere, or the same for
every input, no comparison means anything (transformers' default init gives such outputs): parity says so,
with its own status and exit code (9), instead of a pass (max abs 0, cosine 1) or a fail on denormals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_TASKS = ("classification", "segmentation", "backbone")


@dataclass(frozen=True)
class Rule:
    """`metric` of the named outputs must be >= `limit` (at_least) or <= `limit`, for the tasks listed."""

    metric: str
    limit: float
    at_least: bool = True
    outputs: str = "all"  # "all" outputs, or the "primary" one (logits / last_hidden_state)
    tasks: tuple[str, ...] = ALL_TASKS


FINITE = Rule("finite", 1.0)

RULES: dict[str, tuple[Rule, ...]] = {
    "fp32": (FINITE, Rule("max_abs_rel", 1e-4, at_least=False)),
    "fp16": (
        FINITE,
        Rule("cosine", 0.9999),
        Rule("top1", 1.0, outputs="primary", tasks=("classification",)),
        Rule("pixel_agreement", 0.99, outputs="primary", tasks=("segmentation",)),
    ),
    "int8": (FINITE,),  # + the held-out gate (parity/gate.py)
}

# Classes whose verdict only means something on trained weights: on untrained ones they are reported.
GATED_ON_TRAINED_ONLY = frozenset({"int8"})

# `check --localize`: per-op max|diff| / max|ref| beyond which "this op already diverged".
LOCALIZE_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.15}

# A reference output whose max |value| is below this (absolute), or whose values do not change across the
# parity inputs by more than this fraction of its scale, is degenerate. Trained and randomised MobileViTV2
# outputs are O(0.1..10); transformers' default init gives exact zeros or ~1e-30.
DEGENERATE_SCALE = 1e-6
DEGENERATE_SPREAD = 1e-6


def rule_class(precision: str) -> str:
    """The class of a precision no exporter mapped: its own name, else int8 (any quantized form)."""
    return precision if precision in RULES else "int8"


def rules_for(cls: str, task: str) -> list[Rule]:
    return [r for r in RULES[rule_class(cls)] if task in r.tasks]


def thresholds_for(cls: str) -> dict[str, Any]:
    """metric -> limit of a class (every task), e.g. thresholds_for("int8")["top1"] == 0.99."""
    return {r.metric: r.limit for r in RULES[rule_class(cls)] if r is not FINITE}


def localize_tolerance(cls: str) -> float:
    return LOCALIZE_TOLERANCE[rule_class(cls)]
