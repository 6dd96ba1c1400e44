import torch

from ._helpers import ATOL, counts, export, max_diff, rewrite, unfold_fn

RID = "common::unfold_to_depthwise_conv"


def test_unfold_becomes_a_depthwise_conv_bit_exact():
    x = torch.randn(2, 6, 8, 12)
    ep = export(unfold_fn(2, 2), x)
    before = counts(ep)
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    after = counts(new)
    assert before["im2col"] == 1 and "im2col" not in after
    assert after.get("conv2d", 0) == before.get("conv2d", 0) + 1
    assert "permute" not in after and "pixel_unshuffle" not in after
    assert max_diff(ep, new, x) == 0.0  # one multiply by 1 plus zeros per element


def test_patch_size_3_and_dynamic_batch():
    x = torch.randn(2, 4, 9, 6)
    ep = export(unfold_fn(3, 3), x, dynamic=True)
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    for b in (1, 3):
        assert max_diff(ep, new, torch.randn(b, 4, 9, 6)) <= ATOL


def test_overlapping_windows_left_alone():
    ep = export(unfold_fn(3, 1), torch.randn(1, 2, 6, 6))
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and res.reason == "im2col with overlapping windows (kernel 3 != stride 1)"
    assert counts(new)["im2col"] == 1


def test_nounfold_fn():
    _, res = rewrite(export(lambda x, m: x * 2, torch.randn(1, 2, 4, 4)), RID)
    assert res.fired == 0 and res.reason == "no im2col node"
