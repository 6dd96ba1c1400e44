"""The int8 search's trials stop once a half of the held-out set can no longer meet the gate
(parity/gate.py, `stop_early`): refused on the images that prove it, never a configuration that meets
it, and never where nothing is gated or there is no count to exhaust."""

from __future__ import annotations

import numpy as np
import pytest

from mvit2_export.data.validation import HeldoutSet
from mvit2_export.parity.gate import AccuracyGate, GateSpec


class Replay:
    """A runner that returns fixed outputs for the held-out images in the order the gate asks for them."""

    runtime = "replay"

    def __init__(self, outputs: np.ndarray) -> None:
        self.outputs, self.seen = outputs, 0

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        out = self.outputs[self.seen : self.seen + len(images)]
        self.seen += len(images)
        return [out]


def gate(reference: np.ndarray, task: str = "classification", trained: bool = True) -> AccuracyGate:
    heldout = HeldoutSet(np.zeros((len(reference), 2, 2, 3), np.uint8), None, "test")
    return AccuracyGate(task, heldout, [reference], GateSpec(min_agreement=0.99), trained=trained)


def logits(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)


def flip(out: np.ndarray, rows: list[int]) -> np.ndarray:
    out = out.copy()
    for r in rows:
        out[r, (out[r].argmax() + 1) % out.shape[1]] = out[r].max() + 1
    return out


def test_a_half_with_more_misses_than_allowed_stops_the_run_and_is_refused_on_what_was_run():
    ref = logits(1000)
    bad = flip(ref, [0, 2, 4, 6, 8, 10])  # 6 misses in the even half by image 10: 5 of 500 allowed
    runner = Replay(bad)
    result = gate(ref)(runner, stop_early=True)
    assert runner.seen == 16 and result.n_images == 16 and result.planned == 1000
    assert not result.met and not result.passed
    assert result.halves[0].agreement == pytest.approx(2 / 8) and result.halves[1].agreement == 1.0
    assert result.to_dict()["stopped_early_of"] == 1000
    assert "the first 16 of 1000" in result.failures()[0]
    full = gate(ref)(Replay(bad))  # without stop_early: every image, the same verdict
    assert full.n_images == 1000 and not full.planned and not full.met
    assert "stopped_early_of" not in full.to_dict()


def test_a_configuration_exactly_at_the_gate_is_judged_on_every_image_and_meets_it():
    ref = logits(1000)
    at_gate = flip(ref, [0, 2, 4, 6])  # the 4 misses the 95% lower bound allows in 1000, all in one half
    runner = Replay(at_gate)
    result = gate(ref)(runner, stop_early=True)
    assert runner.seen == 1000 and result.n_images == 1000 and not result.planned
    assert result.lowest == 0.992 and result.lower_bound >= 0.99 and result.met
    runner = Replay(flip(ref, [0, 1, 2, 3, 5]))  # a fifth: the bound is under 0.99 for good
    result = gate(ref)(runner, stop_early=True)
    assert runner.seen == 16 and not result.met and "at most 4 of 1000" in result.failures()[-1]


def test_segmentation_counts_pixels():
    """Each half's pixels decide when to stop (the per-mosaic bound, parity/gate.py, holds here: one
    wrong pixel in each of a few mosaics)."""
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(64, 3, 4, 4)).astype(np.float32)  # 32 x 16 pixels per half: 5 may differ
    out = ref.copy()

    def flip_pixel(mosaic: int) -> None:
        out[mosaic, :, 1, 1] = 0.0
        out[mosaic, (ref[mosaic, :, 1, 1].argmax() + 1) % 3, 1, 1] = 10.0

    for mosaic in (0, 2, 4, 6):  # the even half
        flip_pixel(mosaic)
    assert gate(ref, "segmentation")(Replay(out), stop_early=True).met  # 4 of 512 pixels: 0.992
    flip_pixel(8)  # a fifth pixel: 0.990, still met
    assert gate(ref, "segmentation")(Replay(out), stop_early=True).met
    flip_pixel(10)  # a sixth: below the gate for good
    runner = Replay(out)
    result = gate(ref, "segmentation")(runner, stop_early=True)
    assert runner.seen == 16 and result.planned == 64 and not result.met


@pytest.mark.parametrize("case", ["untrained", "backbone"])
def test_nothing_stops_where_the_gate_is_not_enforced_or_is_a_cosine(case):
    ref = logits(100)
    bad = -ref  # every top-1 differs; the cosine is -1
    g = gate(ref, trained=False) if case == "untrained" else gate(ref, task="backbone")
    runner = Replay(bad)
    result = g(runner, stop_early=True)
    assert runner.seen == 100 and not result.planned and not result.met


def test_non_finite_outputs_stop_the_run():
    ref = logits(100)
    bad = ref.copy()
    bad[3, 0] = np.inf
    runner = Replay(bad)
    result = gate(ref)(runner, stop_early=True)
    assert runner.seen == 16 and not result.met and result.extra["nonfinite"] == 1.0
