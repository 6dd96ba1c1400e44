"""The int8 gate judges each half of the held-out set on its own (parity/gate.py): a configuration whose
pooled number passes only because one half carries the other is refused, since the search keeps the
first configuration that passes and a pooled number is then optimistic."""

from __future__ import annotations

import numpy as np
import pytest

from mvit2_export.data.validation import HeldoutSet
from mvit2_export.parity.gate import AccuracyGate, GateSpec, halves


def gate(n: int, task: str = "classification", labels: np.ndarray | None = None, **spec) -> AccuracyGate:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    heldout = HeldoutSet(np.zeros((n, 2, 2, 3), np.uint8), labels, "test")
    return AccuracyGate(task, heldout, [logits], GateSpec(**spec), trained=True)


def flipped(g: AccuracyGate, rows: list[int]) -> list[np.ndarray]:
    """The reference logits with the top-1 decision of `rows` changed."""
    out = g.reference[0].copy()
    for r in rows:
        out[r, (out[r].argmax() + 1) % out.shape[1]] = out[r].max() + 1
    return [out]


def test_flips_crowded_into_one_half_miss_the_gate_that_the_pooled_number_meets():
    g = gate(1000)
    crowded = g.evaluate(flipped(g, [0, 2, 4, 6, 8, 10, 12, 14]))  # 8 of 1000, all in the even half
    assert crowded.agreement == pytest.approx(0.992)
    assert [h.agreement for h in crowded.halves] == pytest.approx([0.984, 1.0])
    assert not crowded.met and not crowded.passed
    (why,) = crowded.failures()
    assert "halves 0.9840 / 1.0000" in why and "each half" in why
    spread = g.evaluate(flipped(g, [0, 1, 2, 3, 4, 5, 6, 7]))  # the same 8, four in each half
    assert spread.met and spread.lowest == pytest.approx(0.992)
    record = spread.to_dict()
    assert record["lowest_half"] == pytest.approx(0.992) and [h["n_images"] for h in record["halves"]] == [
        500,
        500,
    ]


def test_the_accuracy_drop_is_judged_per_half_too():
    labels = np.zeros(100, dtype=np.int64)
    g = gate(100, labels=labels, min_agreement=0.5, max_accuracy_drop=0.05)
    labels[:] = g.reference[0].argmax(-1)  # the reference is right on every image
    wrong_even = g.evaluate(flipped(g, [0, 2, 4, 6]))  # 4 of 100 wrong: 0.04 pooled, 0.08 in one half
    assert wrong_even.accuracy_reference - wrong_even.accuracy == pytest.approx(0.04)
    assert not wrong_even.met and "accuracy drop" in wrong_even.failures()[0]
    assert g.evaluate(flipped(g, [0, 1, 2, 3])).met


def test_a_single_image_is_one_part_and_non_finite_outputs_agree_with_nothing():
    assert [len(h) for h in halves(1)] == [1] and [len(h) for h in halves(5)] == [3, 2]
    g = gate(6, task="backbone", min_agreement=0.9)
    bad = g.reference[0].copy()
    bad[1, 0] = np.nan
    result = g.evaluate([bad])
    assert not result.met and result.halves[0].agreement == pytest.approx(1.0)
    assert result.halves[1].agreement == 0.0 and result.extra["nonfinite"] == 1.0
