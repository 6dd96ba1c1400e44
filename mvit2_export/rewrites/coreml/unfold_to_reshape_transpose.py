"""coreml::unfold_to_reshape_transpose — non-overlapping `unfold` (im2col) as rank-5 reshapes + transposes.

Before::

    x [B, C, H, W] ──> im2col(kernel=r, stride=r, pad=0, dil=1) ──> [B, C*r*r, L]

After (h = H/r, w = W/r)::

    x ──> reshape [B*C*h, r, w, r] ──> permute(0,1,3,2) ──> [B*C*h, r, r, w]
      ──> reshape [B, C, h, r*r, w] ──> permute(0,1,3,2,4) ──> [B, C, r*r, h, w] ──> reshape [B, C*r*r, L]

Same order as common::unfold_to_pixel_unshuffle (out[b, c*r*r + i*r + j, ph*w + pw] = x[b, c, ph*r+i, pw*r+j]),
but without pixel_unshuffle, which coremltools only maps from iOS16, and never above rank 5 (Core ML's
limit), so a plain `coremltools.convert` (iOS15 mlprogram) works. Batch dims are -1.
"""

from __future__ import annotations

from torch.fx import GraphModule, Node

from ..base import register_rewrite
from ..common.unfold_to_pixel_unshuffle import UnfoldRewrite
from ..graph_utils import aten, shape


@register_rewrite
class UnfoldToReshapeTranspose(UnfoldRewrite):
    id = "coreml::unfold_to_reshape_transpose"

    def replacement(self, gm: GraphModule, x: Node, r: int) -> Node:
        g = gm.graph
        _, c, hh, ww = shape(x)  # type: ignore[misc]
        h, w = hh // r, ww // r
        t = g.call_function(aten.reshape.default, (x, [-1, r, w, r]))
        t = g.call_function(aten.permute.default, (t, [0, 1, 3, 2]))
        t = g.call_function(aten.reshape.default, (t, [-1, c, h, r * r, w]))
        t = g.call_function(aten.permute.default, (t, [0, 1, 3, 2, 4]))
        return g.call_function(aten.reshape.default, (t, [-1, c * r * r, h * w]))
