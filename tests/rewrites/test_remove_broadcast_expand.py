import torch

from ._helpers import ATOL, counts, export, max_diff, rewrite

RID = "common::remove_broadcast_expand"


def test_expand_as_into_mul_dropped():
    x = torch.randn(2, 4, 4, 9)

    def fn(x, m):
        ctx = x.sum(dim=-1, keepdim=True)  # [B, C, P, 1] as in MobileViTV2's linear attention
        return torch.relu(x) * ctx.expand_as(x) + ctx.expand(-1, -1, -1, 9)

    ep = export(fn, x, dynamic=True)
    before = counts(ep)
    assert before["expand_as"] + before["expand"] == 2
    new, res = rewrite(ep, RID)
    assert res.fired == 2
    after = counts(new)
    assert "expand" not in after and "expand_as" not in after
    assert max_diff(ep, new, torch.randn(3, 4, 4, 9)) <= ATOL


def test_expand_into_non_elementwise_left_alone():
    x = torch.randn(2, 4, 1)
    ep = export(lambda x, m: (x.expand(-1, -1, 5) @ torch.ones(5, 3)).sum(), x)
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and "expand feeds non-elementwise op" in res.reason
    assert counts(new)["expand"] == 1


def test_expand_that_defines_output_shape_left_alone():
    x = torch.randn(2, 4, 1)
    ep = export(lambda x, m: x.expand(-1, -1, 5) + 1, x)  # without it the result would be [2, 4, 1]
    _, res = rewrite(ep, RID)
    assert res.fired == 0 and "would change shape" in res.reason
