"""executorch::sum_as_depthwise_conv — the attention's sum over patches as a depthwise convolution.

Before::

    kv [B, C, P, N] ──> sum(dim -1, keepdim) ──> [B, C, P, 1]

After::

    kv ──> conv2d(ones [C, 1, 1, N], groups=C) ──> [B, C, P, 1]

The separable self-attention's context vector is a weighted sum over the N patches. XNNPACK has no sum
reduction (its partitioner leaves `sum.dim_IntList` to ExecuTorch's portable kernels, one cut per
attention layer); a depthwise convolution with a (1, N) kernel of ones is the same sum, and XNNPACK runs
depthwise convolutions natively (int8 included: ones quantize exactly).
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from ....rewrites import Rewrite, RewriteResult, register_rewrite
from ....rewrites.graph_utils import add_constant, aten, find, reduce_args, shape


@register_rewrite
class SumAsDepthwiseConv(Rewrite):
    id = "executorch::sum_as_depthwise_conv"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        g = gm.graph
        for n in find(gm, aten.sum):
            s = shape(n.args[0])
            dims, keepdim = reduce_args(n)
            if s is None or len(s) != 4 or not all(isinstance(d, int) for d in s[1:]):
                skipped.append(f"{n.name}: not a sum over a 4-D tensor of static shape")
                continue
            if dims is None or [int(d) % 4 for d in dims] != [3] or not keepdim:
                skipped.append(f"{n.name}: sums dims {dims} (keepdim={keepdim}), not the last with keepdim")
                continue
            c, n_patches = int(s[1]), int(s[3])
            weight = add_constant(gm, f"{n.name}_ones", torch.ones(c, 1, 1, n_patches), n)
            with g.inserting_before(n):
                out = g.call_function(
                    aten.conv2d.default, (n.args[0], weight, None, [1, 1], [0, 0], [1, 1], c)
                )
            n.replace_all_uses_with(out)
            g.erase_node(n)
            count += 1
        return self.fired(count, skipped)
