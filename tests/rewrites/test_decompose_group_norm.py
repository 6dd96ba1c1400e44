import torch

from ._helpers import ATOL, counts, export, max_diff, randomize_norms, rewrite

RID = "common::decompose_group_norm"


def test_single_group_norm_decomposed():
    x = 3 * torch.randn(2, 8, 4, 16) + 1
    ep = export(lambda x, m: m["gn"](x), x, dynamic=True, gn=randomize_norms(torch.nn.GroupNorm(1, 8)))
    assert counts(ep)["group_norm"] == 1
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    after = counts(new)
    assert "group_norm" not in after and after["mean"] == 2 and after["rsqrt"] == 1
    assert max_diff(ep, new, x) <= ATOL


def test_two_groups_left_alone():
    ep = export(lambda x, m: m["gn"](x), torch.randn(2, 8, 4, 4), gn=torch.nn.GroupNorm(2, 8))
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and res.reason == "group_norm with 2 groups (only 1 group is a LayerNorm)"
    assert counts(new)["group_norm"] == 1
