"""The int8 gate judges each half of the held-out set on its own (parity/gate.py): a configuration whose
pooled number passes only because one half carries the other is refused, since the search keeps the
first configuration that passes and a pooled number is then optimistic. On enough images the gate also
needs the 95% lower confidence bound of its agreement to reach the level: a classifier's over images, a
segmenter's over mosaics (its pixels are not independent)."""

from __future__ import annotations

import numpy as np
import pytest

from mvit2_export.data.validation import HeldoutSet
from mvit2_export.parity.gate import (
    MIN_MOSAICS,
    AccuracyGate,
    GateSpec,
    allowed_disagreements,
    halves,
    min_images,
    mosaic_lower,
    wilson_lower,
)


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
    g = gate(200)  # a small folder: too few images for the lower bound, so the halves alone decide
    crowded = g.evaluate(flipped(g, [0, 2]))  # 2 of 200, both in the even half
    assert crowded.agreement == pytest.approx(0.99) and not crowded.bound_applies
    assert [h.agreement for h in crowded.halves] == pytest.approx([0.98, 1.0])
    assert not crowded.met and not crowded.passed
    (why,) = crowded.failures()
    assert "halves 0.9800 / 1.0000" in why and "each half" in why
    spread = g.evaluate(flipped(g, [0, 1]))  # the same 2, one in each half
    assert spread.met and spread.lowest == pytest.approx(0.99)
    record = spread.to_dict()
    assert record["lowest_half"] == pytest.approx(0.99) and [h["n_images"] for h in record["halves"]] == [
        100,
        100,
    ]
    assert record["bound_applies"] is False and "not gated: fewer than 268 images" in spread.summary()


def test_on_enough_images_the_gate_needs_the_95_percent_lower_bound():
    """1000 images: at most 4 may disagree (Wilson's bound at 996/1000 is 0.9911, at 995/1000 0.9898),
    however they fall between the halves; the bound is what the report and the refusal show."""
    assert min_images(0.99) == 268 and allowed_disagreements(1000, 0.99) == 4
    assert wilson_lower(268, 268) >= 0.99 > wilson_lower(267, 267)  # n / (n + z^2) with none disagreeing
    g = gate(1000)
    four = g.evaluate(flipped(g, [0, 1, 2, 3]))
    assert four.bound_applies and four.met and four.lower_bound == pytest.approx(0.9911, abs=1e-4)
    five = g.evaluate(flipped(g, [0, 1, 2, 3, 4]))  # halves 0.994 / 0.996: they alone would pass
    assert five.lowest >= 0.99 and not five.met
    (why,) = five.failures()
    assert "95% lower confidence bound 0.9898 is under 0.99" in why and "at most 4 of 1000" in why
    assert five.to_dict()["lower_bound"] == pytest.approx(0.9898, abs=1e-4)
    # a looser level needs fewer images and allows more disagreements
    assert min_images(0.95) == 52 and allowed_disagreements(1000, 0.95) > 30


def segmenter(n: int) -> AccuracyGate:
    """A segmentation gate on n mosaics of 8x8 output pixels."""
    logits = np.random.default_rng(1).normal(size=(n, 5, 8, 8)).astype(np.float32)
    heldout = HeldoutSet(np.zeros((n, 2, 2, 3), np.uint8), None, "mosaics")
    return AccuracyGate("segmentation", heldout, [logits], GateSpec(), trained=True)


def pixels_flipped(g: AccuracyGate, per_mosaic: dict[int, int]) -> list[np.ndarray]:
    """The reference logits with the top-1 class of the first k pixels of mosaic m changed."""
    out = g.reference[0].copy()
    for m, k in per_mosaic.items():
        flat = out[m].reshape(out.shape[1], -1)  # a view: classes x pixels
        for p in range(k):
            flat[(flat[:, p].argmax() + 1) % flat.shape[0], p] = flat[:, p].max() + 1
    return [out]


def test_a_segmenters_bound_counts_mosaics_not_pixels():
    """96 mosaics of 64 pixels (the trained fixture's held-out set): 40 wrong pixels pass each half when
    spread thin, but crowded into a few mosaics the per-mosaic spread puts the bound under 0.99; pixels
    as independent units would have passed both (40 of 6144 is well inside a pixel-level bound)."""
    g = segmenter(96)
    assert g.bound_applies and not segmenter(MIN_MOSAICS - 1).bound_applies
    spread = g.evaluate(pixels_flipped(g, dict.fromkeys(range(40), 1)))
    crowded = g.evaluate(pixels_flipped(g, {0: 10, 1: 10, 2: 10, 3: 10}))
    assert spread.agreement == crowded.agreement == pytest.approx(1 - 40 / 6144)
    assert spread.lowest >= 0.99 and crowded.lowest >= 0.99  # the halves alone pass both
    assert spread.met and spread.lower_bound >= 0.99
    assert not crowded.met and crowded.lower_bound < 0.99
    (why,) = crowded.failures()
    assert "95% lower confidence bound" in why and "over 96 mosaics" in why
    per_mosaic = np.ones(96)
    per_mosaic[:4] = 54 / 64
    assert crowded.lower_bound == pytest.approx(mosaic_lower(per_mosaic))
    assert crowded.to_dict()["bound_applies"] is True


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
