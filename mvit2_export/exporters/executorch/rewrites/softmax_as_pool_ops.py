"""executorch::softmax_as_pool_ops — the attention's softmax over patches from pooling-shaped ops.

Before::

    q [B, 1, P, N] ──> softmax(dim -1) ──> s

After::

    q ──> max_pool2d(kernel (1, N)) ──> m [B, 1, P, 1]
    q ──> sub(m) ──> exp ──> e ──> div(conv2d(ones [1, 1, 1, N])) ──> s

XNNPACK delegates softmax only over the last dim, and executorch 1.5.1 gets it wrong on a tensor it holds
channels-last (a conv output, as the query scores always are): it normalises over the channels, max abs
error ~0.3 on the scores and ~4 on the logits (measured). This is the same numerically stable softmax
(max subtracted) written with ops XNNPACK lays out itself: max pooling for the max, a (1, N) convolution
of ones for the sum.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from ....rewrites import Rewrite, RewriteResult, register_rewrite
from ....rewrites.graph_utils import add_constant, aten, find, shape


@register_rewrite
class SoftmaxAsPoolOps(Rewrite):
    id = "executorch::softmax_as_pool_ops"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        g = gm.graph
        for n in find(gm, aten.softmax, aten._softmax):
            s = shape(n.args[0])
            dim = int(n.args[1]) if len(n.args) > 1 else int(n.kwargs.get("dim", -1))
            if s is None or len(s) != 4 or not all(isinstance(d, int) for d in s[1:]):
                skipped.append(f"{n.name}: not a softmax of a 4-D tensor of static shape")
                continue
            if dim % 4 != 3:
                skipped.append(f"{n.name}: softmax over dim {dim}, not the last")
                continue
            c, n_patches = int(s[1]), int(s[3])
            ones = add_constant(gm, f"{n.name}_ones", torch.ones(c, 1, 1, n_patches), n)
            kernel = [1, n_patches]
            with g.inserting_before(n):
                top = g.call_function(aten.max_pool2d.default, (n.args[0], kernel, kernel))
                e = g.call_function(aten.exp.default, (g.call_function(aten.sub.Tensor, (n.args[0], top)),))
                total = g.call_function(aten.conv2d.default, (e, ones, None, [1, 1], [0, 0], [1, 1], c))
                out = g.call_function(aten.div.Tensor, (e, total))
            n.replace_all_uses_with(out)
            g.erase_node(n)
            count += 1
        return self.fired(count, skipped)
