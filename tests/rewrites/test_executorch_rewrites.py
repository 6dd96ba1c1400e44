"""The executorch:: rewrites (exporters/executorch/rewrites/), each on the smallest graph that has its
pattern: it fires, removes the op XNNPACK's partitioner refuses, and computes the same values."""

from __future__ import annotations

import pytest
import torch

import mvit2_export.exporters.executorch  # noqa: F401 - registers the executorch:: rewrites
from tests.rewrites._helpers import ATOL, Fn, counts, export_program, max_diff, rewrite

torch.manual_seed(0)


def check(fn, x, rewrite_id, gone, fired=1, **modules):
    ep = export_program(Fn(fn, **modules).eval(), x)
    new, result = rewrite(ep, rewrite_id)
    assert result.fired == fired, result
    after = counts(new)
    assert not any(op in after for op in gone), after
    assert max_diff(ep, new, x) <= ATOL * (1 + 10 * float(x.abs().max()))
    return after


def test_channel_mean_as_pool_folds_the_eps_into_the_conv_bias():
    def norm(x, m):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        d = x - mean
        return d * torch.rsqrt((d * d).mean(dim=(1, 2, 3), keepdim=True) + 1e-5)

    after = check(norm, torch.randn(2, 8, 5, 6), "executorch::channel_mean_as_pool", [], fired=2)
    assert after["mean"] == 2 and after["conv2d"] == 2  # each now a (H, W) pool and a 1x1 conv
    assert "add" not in after  # the eps is the second conv's bias


def test_channel_mean_as_pool_leaves_other_means():
    ep = export_program(Fn(lambda x, m: x.mean(dim=(2, 3), keepdim=True)).eval(), torch.randn(1, 4, 3, 3))
    _, result = rewrite(ep, "executorch::channel_mean_as_pool")
    assert result.fired == 0 and "not (C, H, W)" in result.reason


def test_sum_as_depthwise_conv():
    after = check(
        lambda x, m: (x * x.sigmoid()).sum(dim=-1, keepdim=True),
        torch.randn(1, 6, 4, 9),
        "executorch::sum_as_depthwise_conv",
        ["sum"],
    )
    assert after["conv2d"] == 1


def test_softmax_as_pool_ops_is_the_stable_softmax():
    x = 30 * torch.randn(1, 1, 4, 16)  # large logits: the max must be subtracted
    after = check(lambda x, m: torch.softmax(x, dim=-1), x, "executorch::softmax_as_pool_ops", ["softmax"])
    assert after["max_pool2d"] == 1 and after["exp"] == 1 and after["div"] == 1


def test_split_conv_outputs_splits_the_weights():
    conv = torch.nn.Conv2d(8, 1 + 2 * 6, 1)

    def attention_inputs(x, m):
        q, k, v = m["conv"](x).split([1, 6, 6], dim=1)
        return q * k + v

    after = check(
        attention_inputs,
        torch.randn(1, 8, 4, 5),
        "executorch::split_conv_outputs",
        ["split_with_sizes"],
        conv=conv,
    )
    assert after["conv2d"] == 3


def test_pool_keepdim():
    after = check(lambda x, m: x.mean(dim=(-2, -1)), torch.randn(2, 5, 3, 4), "executorch::pool_keepdim", [])
    assert after["mean"] == 1 and after["reshape"] == 1


@pytest.mark.parametrize("shape", [(1, 4, 3, 3)])
def test_silu_as_sigmoid_mul(shape):
    after = check(
        lambda x, m: torch.nn.functional.silu(x),
        torch.randn(*shape),
        "executorch::silu_as_sigmoid_mul",
        ["silu"],
    )
    assert after["sigmoid"] == 1 and after["mul"] == 1
