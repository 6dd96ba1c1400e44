"""common::fold_channel_affine_into_conv — fold a per-channel scale/shift into the conv that reads it.

Before (e.g. the affine of a decomposed one-group GroupNorm feeding a 1x1 projection)::

    y [B, C, H, W] ──> mul(gamma[C,1,1]) ──> add(beta[C,1,1]) ──> conv2d(W, b, padding 0) ──> z

After::

    y ──> conv2d(W * gamma[None, :, None, None], b + sum_{c,kh,kw} W[:, c] * beta[c], padding 0) ──> z

Exact for any kernel and stride when the conv pads nothing (padding would add a shifted zero border)
and is ungrouped. Each norm in MobileViTV2's transformer feeds a 1x1 projection, so this removes two
full passes over the activations per norm (18 of the 21 norms; the stage's last norm feeds the fold).
The chain may mix mul/add/sub/div by constants in any order; every link must have the conv as its only
reader, else its value is still needed unscaled.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import add_constant, aten, find, get_attr_tensor, is_op, same_dim, shape

_AFFINE = (aten.mul, aten.add, aten.sub, aten.div)


def _per_channel(gm: GraphModule, node: object, rank: int, channels: int) -> torch.Tensor | None:
    """A constant (tensor or Python number) that broadcasts per channel against [B, C, ...] of `rank`,
    as a [C] float64 vector."""
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return torch.full((channels,), float(node), dtype=torch.float64)
    t = get_attr_tensor(gm, node)
    if t is None:
        return None
    if t.dim() == 0:
        return t.double().expand(channels)
    if t.dim() > rank:
        return None
    full = t.reshape(*([1] * (rank - t.dim())), *t.shape)
    if full.shape[0] != 1 or any(d != 1 for d in full.shape[2:]) or full.shape[1] not in (1, channels):
        return None
    return full.reshape(-1).double().expand(channels)


def _conv_blocker(gm: GraphModule, conv: Node) -> str | None:
    args = list(conv.args) + [None, [1, 1], [0, 0], [1, 1], 1][len(conv.args) - 2 :]
    w, padding, groups = get_attr_tensor(gm, args[1]), args[4], args[6]
    if w is None or (args[2] is not None and get_attr_tensor(gm, args[2]) is None):
        return f"{conv.name}: weight/bias are not constants"
    if isinstance(padding, str) or any(int(p) != 0 for p in padding):
        return f"{conv.name}: padded conv (a folded shift would be wrong on the zero border)"
    if groups != 1:
        return f"{conv.name}: grouped conv"
    return None


def _peel(gm: GraphModule, conv: Node) -> tuple[Node, torch.Tensor, torch.Tensor, int]:
    """Walk back from the conv input: (source y, scale, shift, links) with conv input = y * scale + shift."""
    cur = conv.args[0]
    s = shape(cur)
    rank, channels = len(s or ()), int(s[1]) if s and isinstance(s[1], int) else 0
    scale = torch.ones(channels, dtype=torch.float64)
    shift = torch.zeros(channels, dtype=torch.float64)
    links = 0
    while is_op(cur, *_AFFINE) and len(cur.users) == 1 and channels:
        a, b = cur.args[0], cur.args[1]
        const, other = _per_channel(gm, b, rank, channels), a
        if const is None and not is_op(cur, aten.sub, aten.div):  # commutative: constant on the left
            const, other = _per_channel(gm, a, rank, channels), b
        o = shape(other) if isinstance(other, Node) else None
        if const is None or o is None or len(o) != rank or not all(map(same_dim, o, s)):
            break
        if is_op(cur, aten.add):  # (u + c) * scale + shift
            shift = shift + const * scale
        elif is_op(cur, aten.sub):
            shift = shift - const * scale
        elif is_op(cur, aten.mul):
            scale = scale * const
        else:
            scale = scale / const
        cur, links = other, links + 1
    return cur, scale, shift, links


@register_rewrite
class FoldChannelAffineIntoConv(Rewrite):
    id = "common::fold_channel_affine_into_conv"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        convs = list(find(gm, aten.conv2d))
        if not convs:
            return self.fired(0, ["no conv2d node"])
        for conv in convs:
            if not is_op(conv.args[0], *_AFFINE):
                skipped.append(f"{conv.name}: input is not a mul/add by constants")
                continue
            reason = _conv_blocker(gm, conv)
            if reason:
                skipped.append(reason)
                continue
            y, scale, shift, links = _peel(gm, conv)
            if not links:
                skipped.append(f"{conv.name}: input is not a per-channel affine read only by this conv")
                continue
            w = get_attr_tensor(gm, conv.args[1])
            b = get_attr_tensor(gm, conv.args[2]) if len(conv.args) > 2 and conv.args[2] is not None else None
            assert w is not None  # checked by _conv_blocker
            with torch.no_grad():  # fold in float64, store in the conv's dtype
                wd = w.double()
                new_w = (wd * scale.reshape(1, -1, *([1] * (w.dim() - 2)))).to(w.dtype)
                bias0 = b.double() if b is not None else torch.zeros(w.shape[0], dtype=torch.float64)
                new_b = bias0 + (wd * shift.reshape(1, -1, *([1] * (w.dim() - 2)))).flatten(1).sum(1)
            args = list(conv.args) + [None] * max(0, 3 - len(conv.args))
            args[0] = y
            args[1] = add_constant(gm, f"{conv.name}_affine_weight", new_w, conv)
            args[2] = add_constant(gm, f"{conv.name}_affine_bias", new_b.to(w.dtype), conv)
            conv.args = tuple(args)
            count += 1
        gm.graph.eliminate_dead_code()
        return self.fired(count, skipped)
