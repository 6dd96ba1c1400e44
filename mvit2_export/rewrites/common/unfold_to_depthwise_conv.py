"""common::unfold_to_depthwise_conv — non-overlapping `unfold` as a depthwise conv with one-hot weights.

Before::

    x [B, C, H, W] ──> im2col(kernel=r, stride=r, pad=0, dil=1) ──> [B, C*r*r, L]

After (the patching ml-cvnets uses for Core ML)::

    x [B, C, H, W] ──> conv2d(W_onehot [C*r*r, 1, r, r], stride=r, groups=C) ──> [B, C*r*r, H/r, W/r]
                   ──> flatten(2) ──> [B, C*r*r, L]

W_onehot[c*r*r + i*r + j, 0, i, j] = 1 and 0 elsewhere, so output channel c*r*r + i*r + j at patch
(ph, pw) is exactly x[c, ph*r + i, pw*r + j]: im2col's order, computed as one multiply by 1 plus zeros
(bit-exact in fp32 and fp16). Why: pixel_unshuffle is decomposed by torch.export into rank-6
reshape + permute, which lower to TRANSPOSE ops (and need rank 6, over the Neural Engine's limit of 5);
a depthwise conv is a native, layout-free op on every backend.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from ..base import register_rewrite
from ..graph_utils import add_buffer, aten, is_static, shape
from .unfold_to_pixel_unshuffle import UnfoldRewrite


def one_hot_patch_weight(channels: int, r: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    eye = torch.eye(r * r, dtype=dtype).reshape(r * r, 1, r, r)  # kernel position q = i*r + j picks (i, j)
    return eye.repeat(channels, 1, 1, 1)  # [C*r*r, 1, r, r], channel-major like im2col


@register_rewrite
class UnfoldToDepthwiseConv(UnfoldRewrite):
    id = "common::unfold_to_depthwise_conv"

    def replacement(self, gm: GraphModule, x: Node, r: int) -> Node | str:
        c = shape(x)[1]  # type: ignore[index]
        if not is_static(c):
            return "im2col input has a dynamic channel count"
        weight = gm.graph.get_attr(add_buffer(gm, f"unfold_onehot_{c}_{r}", one_hot_patch_weight(int(c), r)))
        conv = gm.graph.call_function(aten.conv2d.default, (x, weight, None, [r, r], [0, 0], [1, 1], int(c)))
        return gm.graph.call_function(aten.flatten.using_ints, (conv, 2, 3))
