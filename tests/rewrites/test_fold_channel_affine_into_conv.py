import torch

from ._helpers import ATOL, counts, export, max_diff, rewrite

RID = "common::fold_channel_affine_into_conv"


def _affine_conv(kernel: int = 1, padding: int = 0, stride: int = 1):
    gamma = 1 + 0.3 * torch.randn(6, 1, 1)
    beta = 0.5 * torch.randn(6, 1, 1)

    def fn(x, m):
        y = torch.relu(x)
        return m["conv"]((y * gamma - 0.25) / 2 + beta)  # mixed mul/sub/div/add by constants

    return fn, {"conv": torch.nn.Conv2d(6, 5, kernel, stride=stride, padding=padding)}


def test_affine_folds_into_1x1_and_strided_unpadded_conv():
    for kernel, stride in ((1, 1), (3, 2)):
        fn, mods = _affine_conv(kernel, stride=stride)
        x = torch.randn(2, 6, 9, 9)
        ep = export(fn, x, dynamic=True, **mods)
        new, result = rewrite(ep, RID)
        assert result.fired == 1
        before, after = counts(ep), counts(new)
        assert before["mul"] == 1 and before["add"] == 1 and before["sub"] == 1 and before["div"] == 1
        assert not {"mul", "add", "sub", "div"} & set(after) and after["conv2d"] == 1 and after["relu"] == 1
        assert max_diff(ep, new, x) <= ATOL
        assert max_diff(ep, new, torch.randn(3, 6, 9, 9)) <= ATOL


def test_padded_conv_left_alone():
    fn, mods = _affine_conv(kernel=3, padding=1)  # the shift would also move the zero border
    ep = export(fn, torch.randn(1, 6, 8, 8), **mods)
    new, result = rewrite(ep, RID)
    assert result.fired == 0 and "padded conv" in result.reason
    assert counts(new)["add"] == 1


def test_affine_with_another_reader_left_alone():
    gamma = torch.randn(6, 1, 1)

    def fn(x, m):
        y = x * gamma
        return m["conv"](y) + y.mean()  # the scaled tensor is needed as is

    ep = export(fn, torch.randn(1, 6, 4, 4), conv=torch.nn.Conv2d(6, 6, 1))
    new, result = rewrite(ep, RID)
    assert result.fired == 0 and "read only by this conv" in result.reason


def test_non_per_channel_constant_left_alone():
    pos = torch.randn(1, 4, 4)  # per position, not per channel

    def fn(x, m):
        return m["conv"](x * pos)

    ep = export(fn, torch.randn(1, 6, 4, 4), conv=torch.nn.Conv2d(6, 6, 1))
    _, result = rewrite(ep, RID)
    assert result.fired == 0
