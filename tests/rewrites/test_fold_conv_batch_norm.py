import torch

from ._helpers import ATOL, counts, export, max_diff, randomize_norms, rewrite

RID = "common::fold_conv_batch_norm"


def _convbn(bias: bool, groups: int = 1) -> dict[str, torch.nn.Module]:
    return {
        "conv": torch.nn.Conv2d(8, 8, 3, padding=1, bias=bias, groups=groups),
        "bn": randomize_norms(torch.nn.BatchNorm2d(8)),
    }


def test_folds_with_and_without_conv_bias():
    x = torch.randn(2, 8, 16, 16)
    mods = {
        **_convbn(False),
        "conv2": torch.nn.Conv2d(8, 8, 1),
        "bn2": randomize_norms(torch.nn.BatchNorm2d(8), 1),
    }
    ep = export(lambda x, m: m["bn2"](m["conv2"](torch.relu(m["bn"](m["conv"](x))))), x, **mods)
    assert counts(ep)["batch_norm"] == 2
    new, res = rewrite(ep, RID)
    assert res.fired == 2
    after = counts(new)
    assert "batch_norm" not in after and after["conv2d"] == 2
    assert max_diff(ep, new, x) <= ATOL
    # The old BN statistics are gone from the program's state; the folded conv has a bias.
    assert not any("running_mean" in k for k in new.state_dict)


def test_depthwise_and_dynamic_batch():
    x = torch.randn(2, 8, 8, 8)
    ep = export(lambda x, m: m["bn"](m["conv"](x)), x, dynamic=True, **_convbn(True, groups=8))
    new, res = rewrite(ep, RID)
    assert res.fired == 1 and "batch_norm" not in counts(new)
    assert max_diff(ep, new, torch.randn(5, 8, 8, 8)) <= ATOL


def test_conv_with_second_user_left_alone():
    x = torch.randn(2, 8, 8, 8)

    def fn(x, m):
        y = m["conv"](x)
        return m["bn"](y) + y  # conv output also needed un-normalised

    ep = export(fn, x, **_convbn(True))
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and "has other users" in res.reason
    assert counts(new)["batch_norm"] == 1


def test_bn_without_conv_left_alone():
    ep = export(lambda x, m: m["bn"](torch.relu(x)), torch.randn(2, 8, 4, 4), bn=torch.nn.BatchNorm2d(8))
    _, res = rewrite(ep, RID)
    assert res.fired == 0 and "does not follow a (non-transposed) conv" in res.reason
