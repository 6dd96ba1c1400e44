"""common::unfold_to_pixel_unshuffle — non-overlapping `unfold` (im2col) as pixel_unshuffle + flatten.

Before::

    x [B, C, H, W] ──> im2col(kernel=r, stride=r, pad=0, dil=1) ──> [B, C*r*r, L] ──> reshape [B, C, r*r, L]

After::

    x [B, C, H, W] ──> pixel_unshuffle(r) ──> [B, C*r*r, H/r, W/r] ──> flatten(2) ──> [B, C*r*r, L] ──> reshape ...

Same element order: im2col's row index is c*r*r + i*r + j (channel-major, then kernel position) and its
column is the row-major patch index l = ph*(W/r) + pw, i.e. out[b, c*r*r + i*r + j, l] =
x[b, c, ph*r + i, pw*r + j] — exactly pixel_unshuffle's channel order, with the spatial dims flattened.
`flatten` keeps the batch symbolic (no baked size).
"""

from __future__ import annotations

from torch.fx import GraphModule, Node

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import aten, find, is_static, shape


class UnfoldRewrite(Rewrite):
    """Shared loop of the unfold rewrites: each non-overlapping im2col is replaced by `replacement`."""

    def replacement(self, gm: GraphModule, x: Node, r: int) -> Node | str:
        """Nodes computing im2col(x, kernel=stride=r) (inserted at the current point), or why not."""
        raise NotImplementedError

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        nodes = list(find(gm, aten.im2col))
        if not nodes:
            return self.fired(0, ["no im2col node"])
        for node in nodes:
            match = match_unfold(node)
            if isinstance(match, str):
                skipped.append(match)
                continue
            with gm.graph.inserting_before(node):
                new = self.replacement(gm, *match)
            if isinstance(new, str):
                skipped.append(new)
                continue
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            count += 1
        return self.fired(count, skipped)


@register_rewrite
class UnfoldToPixelUnshuffle(UnfoldRewrite):
    id = "common::unfold_to_pixel_unshuffle"

    def replacement(self, gm: GraphModule, x: Node, r: int) -> Node:
        unshuffled = gm.graph.call_function(aten.pixel_unshuffle.default, (x, r))
        return gm.graph.call_function(aten.flatten.using_ints, (unshuffled, 2, 3))


def match_unfold(node: Node) -> tuple[Node, int] | str:
    """(input, r) for a non-overlapping square im2col on a static-H/W 4-D input, else why not."""
    x, kernel, dilation, padding, stride = node.args[:5]
    if list(kernel) != list(stride):
        return f"im2col with overlapping windows (kernel {_fmt(kernel)} != stride {_fmt(stride)})"
    if kernel[0] != kernel[1]:
        return f"im2col with a non-square kernel {_fmt(kernel)}"
    if any(p != 0 for p in padding) or any(d != 1 for d in dilation):
        return f"im2col with padding {_fmt(padding)} / dilation {_fmt(dilation)}"
    r, in_shape = int(kernel[0]), shape(x)
    if in_shape is None or len(in_shape) != 4:
        return "im2col input is not a known 4-D [B, C, H, W] tensor"
    h, w = in_shape[2], in_shape[3]
    if not (is_static(h) and is_static(w) and h % r == 0 and w % r == 0):
        return f"im2col input size {h}x{w} is not a static multiple of kernel {r}"
    return x, r


def _fmt(v: object) -> str:
    vals = list(v)  # type: ignore[call-overload]
    return str(vals[0]) if len(set(vals)) == 1 else "x".join(str(i) for i in vals)
