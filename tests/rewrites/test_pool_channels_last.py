import torch

from ._helpers import ATOL, counts, export, max_diff, rewrite

RID = "tflite::pool_channels_last"


def test_global_pool_reads_nhwc():
    for keepdim in (False, True):

        def fn(x, m, keepdim=keepdim):
            return m["conv"](x).mean(dim=[-2, -1], keepdim=keepdim) * 2

        x = torch.randn(2, 3, 6, 6)
        ep = export(fn, x, dynamic=True, conv=torch.nn.Conv2d(3, 5, 3))
        new, result = rewrite(ep, RID)
        assert result.fired == 1
        after = counts(new)
        assert after["permute"] == 1 and after["mean"] == 1 and after.get("reshape", 0) == int(keepdim)
        mean = next(n for n in new.graph.nodes if "mean" in str(n.target))
        assert list(mean.args[1]) == [1, 2]
        assert max_diff(ep, new, x) <= ATOL
        assert max_diff(ep, new, torch.randn(3, 3, 6, 6)) <= ATOL


def test_mean_over_channels_left_alone():
    def fn(x, m):
        return x.mean(dim=1, keepdim=True) * 2

    ep = export(fn, torch.randn(1, 3, 4, 4))
    new, result = rewrite(ep, RID)
    assert result.fired == 0 and "not (H, W)" in result.reason
    assert "permute" not in counts(new)
