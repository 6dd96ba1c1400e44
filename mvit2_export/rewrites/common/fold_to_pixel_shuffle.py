"""common::fold_to_pixel_shuffle — non-overlapping `fold` (col2im) as unflatten + pixel_shuffle.

Before::

    cols [B, C*r*r, L] ──> col2im(output=(H, W), kernel=r, stride=r, pad=0, dil=1) ──> [B, C, H, W]

After::

    cols [B, C*r*r, L] ──> unflatten(-1, (H/r, W/r)) ──> [B, C*r*r, H/r, W/r] ──> pixel_shuffle(r) ──> [B, C, H, W]

With kernel == stride no windows overlap, so col2im's sum is a pure scatter: out[b, c, ph*r+i, pw*r+j] =
cols[b, c*r*r + i*r + j, ph*(W/r) + pw], which is pixel_shuffle's order. `unflatten` on the last dim
leaves the (dynamic) batch untouched.
"""

from __future__ import annotations

from torch.fx import GraphModule

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import aten, find, is_static, shape


@register_rewrite
class FoldToPixelShuffle(Rewrite):
    id = "common::fold_to_pixel_shuffle"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        nodes = list(find(gm, aten.col2im))
        if not nodes:
            return self.fired(0, ["no col2im node"])
        for node in nodes:
            cols, output_size, kernel, dilation, padding, stride = node.args[:6]
            if list(kernel) != list(stride):
                skipped.append(
                    f"col2im with overlapping windows (kernel {list(kernel)} != stride {list(stride)})"
                )
                continue
            if kernel[0] != kernel[1]:
                skipped.append(f"col2im with a non-square kernel {list(kernel)}")
                continue
            if any(p != 0 for p in padding) or any(d != 1 for d in dilation):
                skipped.append(f"col2im with padding {list(padding)} / dilation {list(dilation)}")
                continue
            r = int(kernel[0])
            h, w = (int(s) for s in output_size)
            in_shape = shape(cols)
            if in_shape is None or len(in_shape) != 3:
                skipped.append("col2im input is not a known batched 3-D [B, C*k*k, L] tensor")
                continue
            if h % r or w % r or not is_static(in_shape[2]) or in_shape[2] != (h // r) * (w // r):
                skipped.append(
                    f"col2im output {h}x{w} is not tiled exactly by {in_shape[2]} blocks of {r}x{r}"
                )
                continue
            with gm.graph.inserting_before(node):
                grid = gm.graph.call_function(aten.unflatten.int, (cols, -1, [h // r, w // r]))
                shuffled = gm.graph.call_function(aten.pixel_shuffle.default, (grid, r))
            node.replace_all_uses_with(shuffled)
            gm.graph.erase_node(node)
            count += 1
        return self.fired(count, skipped)
