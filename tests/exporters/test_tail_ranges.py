"""TailRanges (exporters/coreml/tail_ranges.py): activation ranges as percentiles of every calibration sample,
against numpy's own percentiles."""

from __future__ import annotations

import numpy as np

from mvit2_export.exporters.coreml.tail_ranges import TailRanges

TAIL = 1e-4


def test_tail_ranges_match_numpy_percentiles_and_ignore_a_lone_outlier():
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal(300_000).astype(np.float32) for _ in range(3)]
    samples[1][17] = 1e3  # one activation far out: min/max would spend the int8 steps on it
    tails = TailRanges(len(samples), TAIL)
    for s in samples:
        tails.add("x", s)
        tails.add("small", s[:50])  # 150 values in all: under one in 1/TAIL, so min and max
    r = tails.ranges()
    x = np.concatenate(samples)
    assert r["x"]["rmax"] < 10
    assert abs(r["x"]["rmax"] - np.percentile(x, 100 * (1 - TAIL))) < 0.05
    assert abs(r["x"]["rmin"] - np.percentile(x, 100 * TAIL)) < 0.05
    small = np.concatenate([s[:50] for s in samples])
    assert r["small"] == {"rmin": float(small.min()), "rmax": float(small.max())}
