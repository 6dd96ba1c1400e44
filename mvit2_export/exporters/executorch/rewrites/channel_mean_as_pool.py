"""executorch::channel_mean_as_pool — a mean over (C, H, W) as a global average pool and a 1x1 conv.

Before::

    x [B, C, H, W] ──> mean(dims (1, 2, 3), keepdim) ──> [B, 1, 1, 1]

After::

    x ──> mean(dims (2, 3), keepdim) ──> [B, C, 1, 1] ──> conv2d(1/C [1, C, 1, 1]) ──> [B, 1, 1, 1]

    and a scalar added to the mean (the norm's eps) becomes that conv's bias.

XNNPACK delegates `mean.dim` only as global average pooling (4-D, dims (2, 3), keepdim); each one-group
norm's two means over (C, H, W) would otherwise run on ExecuTorch's portable kernels and cut the program
into a delegate piece per norm (42 means at any width). The channel mean is a 1x1 convolution with equal
weights: C multiply-adds per sample, exact up to float summation order. The eps goes into the bias
because XNNPACK holds the [B, 1, 1, 1] result channels-last and wraps an add of a scalar in two
transposes (42 of the 59 transposes in its graph at width 0.5, before this fold).
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from ....rewrites import Rewrite, RewriteResult, register_rewrite
from ....rewrites.graph_utils import add_constant, aten, find, is_op, reduce_args, shape


@register_rewrite
class ChannelMeanAsPool(Rewrite):
    id = "executorch::channel_mean_as_pool"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        g = gm.graph
        for n in find(gm, aten.mean):
            s = shape(n.args[0])
            dims, keepdim = reduce_args(n)
            dims = None if dims is None else sorted(int(d) % 4 for d in dims)
            if s is None or len(s) != 4 or not isinstance(s[1], int):
                skipped.append(f"{n.name}: not a mean of a 4-D tensor with static channels")
                continue
            if dims != [1, 2, 3] or not keepdim:
                skipped.append(
                    f"{n.name}: reduces dims {dims} (keepdim={keepdim}), not (C, H, W) with keepdim"
                )
                continue
            c = int(s[1])
            weight = add_constant(gm, f"{n.name}_channel_mean", torch.full((1, c, 1, 1), 1.0 / c), n)
            (user,) = n.users if len(n.users) == 1 else (None,)
            eps = user.args[1] if is_op(user, aten.add.Tensor) and user.args[0] is n else None
            folded = isinstance(eps, (int, float))
            bias = add_constant(gm, f"{n.name}_eps", torch.full((1,), float(eps)), n) if folded else None
            with g.inserting_before(n):
                pooled = g.call_function(aten.mean.dim, (n.args[0], [2, 3], True))
                out = g.call_function(aten.conv2d.default, (pooled, weight, bias))
            replaced = user if folded else n
            replaced.replace_all_uses_with(out)
            if folded:
                g.erase_node(user)
            g.erase_node(n)
            count += 1
        return self.fired(count, skipped)
