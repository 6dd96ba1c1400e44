"""common::fold_conv_batch_norm — fold an inference BatchNorm into the conv that feeds it.

Before::

    x ──> conv2d(W, b) ──> batch_norm(gamma, beta, mean, var, eps, training=False) ──> y

After::

    x ──> conv2d(W * s, (b - mean) * s + beta) ──> y        s = gamma / sqrt(var + eps)

The folded weight/bias become new buffers on the unlifted module; the old BN tensors are dropped and
re-export lifts the new ones into the program's signature. Only folds when the conv has no other
user (else its unnormalised output is still needed) and every tensor is a constant (`get_attr`).
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import add_constant, aten, find, get_attr_tensor, is_op

_BN_LEGIT = aten._native_batch_norm_legit_no_training


def _bn_parts(bn: Node) -> tuple[list[object], float, Node] | None:
    """(weight, bias, mean, var) args, eps, and the node whose value is the BN output; None if training."""
    if is_op(bn, aten.batch_norm):
        if bn.args[5]:
            return None
        return list(bn.args[1:5]), float(bn.args[7]), bn
    users = list(bn.users)  # _native_batch_norm_legit_no_training returns (out, mean, rstd)
    if len(users) != 1 or not (users[0].target is operator.getitem and users[0].args[1] == 0):
        return None
    return list(bn.args[1:5]), float(bn.args[6]), users[0]


@register_rewrite
class FoldConvBatchNorm(Rewrite):
    id = "common::fold_conv_batch_norm"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        bns = list(find(gm, aten.batch_norm, _BN_LEGIT))
        if not bns:
            return self.fired(0, ["no batch_norm node"])
        for bn in bns:
            conv = bn.args[0]
            is_conv = is_op(conv, aten.conv2d) or (is_op(conv, aten.convolution) and not conv.args[6])
            if not is_conv:
                skipped.append(f"{bn.name} does not follow a (non-transposed) conv")
                continue
            if len(conv.users) != 1:
                skipped.append(f"{conv.name} has other users besides {bn.name}")
                continue
            parts = _bn_parts(bn)
            if parts is None:
                skipped.append(f"{bn.name} is in training mode")
                continue
            (gamma_n, beta_n, mean_n, var_n), eps, out = parts
            w = get_attr_tensor(gm, conv.args[1])
            b_node = conv.args[2] if len(conv.args) > 2 else None
            b = get_attr_tensor(gm, b_node) if b_node is not None else None
            mean, var = get_attr_tensor(gm, mean_n), get_attr_tensor(gm, var_n)
            if w is None or mean is None or var is None or (b_node is not None and b is None):
                skipped.append(f"{bn.name}: conv weight/bias or BN statistics are not constants")
                continue
            gamma = get_attr_tensor(gm, gamma_n) if gamma_n is not None else torch.ones_like(mean)
            beta = get_attr_tensor(gm, beta_n) if beta_n is not None else torch.zeros_like(mean)
            if gamma is None or beta is None:
                skipped.append(f"{bn.name}: affine parameters are not constants")
                continue
            with torch.no_grad():  # fold in float64, store in the conv's dtype
                scale = gamma.double() / torch.sqrt(var.double() + eps)
                new_w = (w.double() * scale.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
                bias0 = b.double() if b is not None else torch.zeros_like(scale)
                new_b = ((bias0 - mean.double()) * scale + beta.double()).to(w.dtype)
            w_node = add_constant(gm, f"{conv.name}_bn_weight", new_w, conv)
            b_node = add_constant(gm, f"{conv.name}_bn_bias", new_b, conv)
            args = list(conv.args) + [None] * max(0, 3 - len(conv.args))
            args[1], args[2] = w_node, b_node
            conv.args = tuple(args)
            out.replace_all_uses_with(conv)
            if out is not bn:
                gm.graph.erase_node(out)
            gm.graph.erase_node(bn)
            count += 1
        return self.fired(count, skipped)
