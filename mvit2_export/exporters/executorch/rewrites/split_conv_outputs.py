"""executorch::split_conv_outputs — a convolution whose output is split becomes one convolution per piece.

Before::

    x ──> conv2d(W [1+2d, C, 1, 1], b) ──> split_with_sizes([1, d, d], dim 1) ──> getitem 0, 1, 2

After::

    x ──> conv2d(W[0:1], b[0:1])      (query)
    x ──> conv2d(W[1:1+d], b[1:1+d])  (key)
    x ──> conv2d(W[1+d:], b[1+d:])    (value)

XNNPACK's partitioner has no `split_with_sizes_copy`: each attention's query/key/value split would run on
ExecuTorch's portable kernels, between delegate pieces. Rewriting it as channel slices is delegated but
computes wrong values (executorch 1.5.1: a slice along the channel dim of a tensor XNNPACK holds
channels-last; max abs error ~4 on the logits, measured). Splitting the weights instead needs no slice
at all and does the same multiply-adds.
"""

from __future__ import annotations

import operator

from torch.fx import GraphModule

from ....rewrites import Rewrite, RewriteResult, register_rewrite
from ....rewrites.graph_utils import add_constant, aten, find, get_attr_tensor, is_op


@register_rewrite
class SplitConvOutputs(Rewrite):
    id = "executorch::split_conv_outputs"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        g = gm.graph
        for n in find(gm, aten.split_with_sizes):
            conv, sizes = n.args[0], n.args[1]
            dim = int(n.args[2]) if len(n.args) > 2 else int(n.kwargs.get("dim", 0))
            users = list(n.users)
            if dim != 1 or not is_op(conv, aten.conv2d) or len(conv.users) != 1:
                skipped.append(f"{n.name}: not a channel split of a convolution used only by it")
                continue
            weight = get_attr_tensor(gm, conv.args[1])
            bias = (
                get_attr_tensor(gm, conv.args[2]) if len(conv.args) > 2 and conv.args[2] is not None else None
            )
            if weight is None or (len(conv.args) > 2 and conv.args[2] is not None and bias is None):
                skipped.append(f"{conv.name}: weights are not constants")
                continue
            if int(conv.args[6] if len(conv.args) > 6 else 1) != 1:
                skipped.append(f"{conv.name}: grouped convolution")
                continue
            if not all(u.op == "call_function" and u.target is operator.getitem for u in users):
                skipped.append(f"{n.name}: a user is not a getitem")
                continue
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            for u in users:
                i = int(u.args[1])
                lo, hi = starts[i], starts[i] + sizes[i]
                w = add_constant(gm, f"{conv.name}_w{i}", weight[lo:hi], conv)
                b = add_constant(gm, f"{conv.name}_b{i}", bias[lo:hi], conv) if bias is not None else None
                with g.inserting_before(u):
                    piece = g.call_function(aten.conv2d.default, (conv.args[0], w, b, *conv.args[3:]))
                u.replace_all_uses_with(piece)
                g.erase_node(u)
            g.erase_node(n)
            g.erase_node(conv)
            count += 1
        return self.fired(count, skipped)
