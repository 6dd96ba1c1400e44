import torch
import torch.nn.functional as F

from ._helpers import ATOL, counts, export, max_diff, rewrite

RID = "common::fold_to_pixel_shuffle"


def _fold(k: int, s: int, size: tuple[int, int]):
    return lambda x, m: F.fold(x * 2, output_size=size, kernel_size=k, stride=s)


def test_fold_becomes_pixel_shuffle():
    x = torch.randn(2, 3 * 4, 4 * 6)  # C=3, r=2, 8x12 output
    ep = export(_fold(2, 2, (8, 12)), x, dynamic=True)
    assert counts(ep)["col2im"] == 1
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    after = counts(new)
    assert "col2im" not in after and after["pixel_shuffle"] == 1
    assert max_diff(ep, new, x) == 0.0
    assert max_diff(ep, new, torch.randn(3, 12, 24)) <= ATOL  # another batch size


def test_overlapping_fold_left_alone():
    ep = export(_fold(3, 1, (6, 6)), torch.randn(1, 2 * 9, 16))
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and "overlapping windows" in res.reason
    assert counts(new)["col2im"] == 1
