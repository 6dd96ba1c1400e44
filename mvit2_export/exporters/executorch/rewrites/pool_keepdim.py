"""executorch::pool_keepdim — the classifier's global pooling keeps its (1, 1) dims, then flattens.

Before::

    fm [B, C, H, W] ──> mean(dims (2, 3)) ──> [B, C]

After::

    fm ──> mean(dims (2, 3), keepdim) ──> [B, C, 1, 1] ──> reshape [B, C]

XNNPACK delegates `mean.dim` only with keepdim (it becomes global average pooling); the reshape of a
[B, C, 1, 1] tensor is free in either memory layout.
"""

from __future__ import annotations

from torch.fx import GraphModule

from ....rewrites import Rewrite, RewriteResult, register_rewrite
from ....rewrites.graph_utils import aten, find, reduce_args, shape


@register_rewrite
class PoolKeepdim(Rewrite):
    id = "executorch::pool_keepdim"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        g = gm.graph
        for n in find(gm, aten.mean):
            s = shape(n.args[0])
            dims, keepdim = reduce_args(n)
            if s is None or len(s) != 4 or dims is None:
                skipped.append(f"{n.name}: not a mean over dims of a 4-D tensor")
                continue
            if sorted(int(d) % 4 for d in dims) != [2, 3] or keepdim:
                skipped.append(f"{n.name}: not a mean over (H, W) without keepdim")
                continue
            with g.inserting_before(n):
                pooled = g.call_function(aten.mean.dim, (n.args[0], [2, 3], True))
                out = g.call_function(aten.reshape.default, (pooled, [-1, s[1]]))
            n.replace_all_uses_with(out)
            g.erase_node(n)
            count += 1
        return self.fired(count, skipped)
