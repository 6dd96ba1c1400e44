import torch

from ._helpers import ATOL, counts, export, max_diff, rewrite, unfold_fn

RID = "common::unfold_to_pixel_unshuffle"


def test_unfold_becomes_pixel_unshuffle_same_order():
    x = torch.randn(2, 6, 8, 12)
    ep = export(unfold_fn(2, 2), x)
    assert counts(ep)["im2col"] == 1
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    after = counts(new)
    assert "im2col" not in after and after["pixel_unshuffle"] == 1
    assert max_diff(ep, new, x) == 0.0  # a pure permutation of elements


def test_dynamic_batch_survives():
    x = torch.randn(2, 4, 8, 8)
    ep = export(unfold_fn(2, 2), x, dynamic=True)
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    for b in (1, 3, 5):
        assert max_diff(ep, new, torch.randn(b, 4, 8, 8)) <= ATOL


def test_overlapping_windows_left_alone():
    ep = export(unfold_fn(3, 1), torch.randn(1, 2, 6, 6))
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and res.reason == "im2col with overlapping windows (kernel 3 != stride 1)"
    assert counts(new)["im2col"] == 1


def test_nounfold_fn():
    _, res = rewrite(export(lambda x, m: x * 2, torch.randn(1, 2, 4, 4)), RID)
    assert res.fired == 0 and res.reason == "no im2col node"
