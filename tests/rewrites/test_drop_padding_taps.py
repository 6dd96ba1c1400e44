import pytest
import torch

from mvit2_export.rewrites.common.drop_padding_taps import live_taps

from ._helpers import ATOL, export, max_diff, rewrite

RID = "common::drop_padding_taps"


def _weights(ep):
    return [tuple(v.shape) for k, v in ep.state_dict.items() if v.dim() == 4]


@pytest.mark.parametrize(("size", "dilation"), [(16, 18), (5, 6), (5, 12), (2, 18)])
def test_a_dilated_conv_on_a_smaller_map_becomes_the_1x1_it_equals(size, dilation):
    conv = torch.nn.Conv2d(16, 24, 3, padding=dilation, dilation=dilation)
    x = torch.randn(2, 16, size, size)
    ep = export(lambda x, m: torch.relu(m["conv"](x)), x, conv=conv)
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    assert _weights(new) == [(24, 16, 1, 1)]
    assert max_diff(ep, new, x) <= ATOL


def test_taps_that_read_the_map_somewhere_stay():
    # Dilation 6 on 16x16 (ASPP at 512 px): the off-centre taps read real pixels for some outputs.
    x = torch.randn(1, 8, 16, 16)
    ep = export(lambda x, m: m["conv"](x), x, conv=torch.nn.Conv2d(8, 8, 3, padding=6, dilation=6))
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and "reads only padding" in res.reason
    assert _weights(new) == [(8, 8, 3, 3)]


def test_one_axis_only_and_a_strided_conv():
    # A 3x5 kernel whose rows all read the 2-row map but whose outer columns only read padding.
    conv = torch.nn.Conv2d(4, 6, (3, 5), stride=(1, 2), padding=(1, 8), dilation=(1, 4), bias=False)
    x = torch.randn(1, 4, 2, 3)
    ep = export(lambda x, m: m["conv"](x), x, conv=conv)
    new, res = rewrite(ep, RID)
    assert res.fired == 1 and _weights(new) == [(6, 4, 3, 1)]
    assert max_diff(ep, new, x) <= ATOL


def test_live_taps_and_the_asymmetric_case_left_alone():
    assert live_taps(16, 3, 1, 18, 18) == (1, 1)
    assert live_taps(16, 3, 1, 12, 12) == (0, 2)
    assert live_taps(6, 3, 6, 5, 5) == (1, 2)  # stride 6: only the last two taps read the map
    x = torch.randn(1, 4, 6, 6)
    ep = export(lambda x, m: m["conv"](x), x, conv=torch.nn.Conv2d(4, 4, 3, stride=6, padding=5, dilation=5))
    new, res = rewrite(ep, RID)
    assert res.fired == 0  # dropping tap 0 alone would need padding on one side only
    assert max_diff(ep, new, x) == 0
