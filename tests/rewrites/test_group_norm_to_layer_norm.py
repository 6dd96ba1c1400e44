import torch

from ._helpers import ATOL, counts, export, max_diff, randomize_norms, rewrite

RID = "onnx::group_norm_to_layer_norm"


def test_single_group_norm_to_layer_norm():
    x = 3 * torch.randn(2, 8, 4, 16) + 1
    ep = export(lambda x, m: m["gn"](x), x, dynamic=True, gn=randomize_norms(torch.nn.GroupNorm(1, 8)))
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    after = counts(new)
    assert "group_norm" not in after and after["layer_norm"] == 1 and after["mul"] == 1 and after["add"] == 1
    assert max_diff(ep, new, torch.randn(3, 8, 4, 16)) <= ATOL


def test_two_groups_left_alone():
    ep = export(lambda x, m: m["gn"](x), torch.randn(2, 8, 4, 4), gn=torch.nn.GroupNorm(2, 8))
    _, res = rewrite(ep, RID)
    assert res.fired == 0 and "2 groups" in res.reason
