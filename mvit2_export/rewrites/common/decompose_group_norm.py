"""common::decompose_group_norm — a one-group GroupNorm as plain element-wise ops.

Before::

    x [B, C, *S] ──> group_norm(num_groups=1, gamma, beta, eps) ──> y

After::

    x ──> mean(dims 1..)──┐
    x ───────────────────> sub ──> d ──> mul(d, d) ──> mean(dims 1..) ──> add(eps) ──> rsqrt ──┐
                                   d ──────────────────────────────────────────────────────> mul ──> mul(gamma[C,1..]) ──> add(beta[C,1..]) ──> y

One group means statistics over all of (C, *S) per sample — a LayerNorm over every non-batch axis with
a per-channel (not per-element) affine. Converters either lack GroupNorm (TFLite) or lower it to
InstanceNormalization with reshapes; the element-wise form lowers everywhere and fuses downstream.
"""

from __future__ import annotations

from torch.fx import GraphModule, Node

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import add_constant, aten, find, get_attr_tensor, shape


def single_group_norm_blocker(gm: GraphModule, node: Node) -> str | None:
    """Why this group_norm cannot be rewritten as a one-group norm, or None."""
    x, groups = node.args[0], node.args[1]
    if groups != 1:
        return f"group_norm with {groups} groups (only 1 group is a LayerNorm)"
    s = shape(x)
    if s is None or len(s) < 3:
        return f"{node.name}: input is not a known [B, C, ...] tensor"
    for arg in node.args[2:4]:
        if arg is not None and get_attr_tensor(gm, arg) is None:
            return f"{node.name}: affine parameters are not constants"
    return None


def apply_channel_affine(gm: GraphModule, node: Node, y: Node) -> Node:
    """y * gamma + beta with gamma/beta stored as [C, 1, ...] constants (broadcast over the spatial dims)."""
    rank = len(shape(node.args[0]) or ())
    weight = node.args[2] if len(node.args) > 2 else None
    bias = node.args[3] if len(node.args) > 3 else None
    g = gm.graph
    for arg, op in ((weight, aten.mul.Tensor), (bias, aten.add.Tensor)):
        if arg is None:
            continue
        t = get_attr_tensor(gm, arg)
        assert t is not None  # checked by single_group_norm_blocker
        const = add_constant(
            gm,
            f"{node.name}_{'gamma' if op is aten.mul.Tensor else 'beta'}",
            t.reshape(-1, *([1] * (rank - 2))),
            node,
        )
        with g.inserting_before(node):
            y = g.call_function(op, (y, const))
    return y


@register_rewrite
class DecomposeGroupNorm(Rewrite):
    id = "common::decompose_group_norm"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        nodes = list(find(gm, aten.group_norm))
        if not nodes:
            return self.fired(0, ["no group_norm node"])
        g = gm.graph
        for node in nodes:
            reason = single_group_norm_blocker(gm, node)
            if reason:
                skipped.append(reason)
                continue
            x = node.args[0]
            eps = float(node.args[4]) if len(node.args) > 4 else 1e-5
            dims = list(range(1, len(shape(x) or ())))
            with g.inserting_before(node):
                mean = g.call_function(aten.mean.dim, (x, dims, True))
                d = g.call_function(aten.sub.Tensor, (x, mean))
                var = g.call_function(aten.mean.dim, (g.call_function(aten.mul.Tensor, (d, d)), dims, True))
                rstd = g.call_function(aten.rsqrt.default, (g.call_function(aten.add.Tensor, (var, eps)),))
                y = g.call_function(aten.mul.Tensor, (d, rstd))
            y = apply_channel_affine(gm, node, y)
            node.replace_all_uses_with(y)
            g.erase_node(node)
            count += 1
        return self.fired(count, skipped)
