"""tflite::patches_to_channels_last — run each transformer stage on the NHWC patch grid, not on (B, C, P, N).

Before (after the common rewrites; every tensor in the stage is [B, C, P, N], P = r*r, N = H/r * W/r)::

    fm [B,C,H,W] ─> pixel_unshuffle(r) ─> flatten ─> reshape [B,C,P,N] ─> ┌ stage: conv2d 1x1, split(dim 1),    ┐
                                                                          │ softmax(-1), sum(-1), mean(1,2,3),  │
                                                                          └ mul/add with [C,1,1] consts, silu...┘
                                       ─> reshape [B,C*P,N] ─> unflatten ─> pixel_shuffle(r) ─> fm' [B,C,H,W]

After (the stage's tensors are the NHWC feature map viewed as a grid [B, H/r, r, W/r, r, C])::

    fm ─> permute(0,2,3,1) ─> reshape [B,H/r,r,W/r,r,C]
       ─> ┌ stage: reshape [-1,C] ─> linear ─> reshape (was conv2d 1x1), split(dim 5),             ┐
          │ softmax over N = exp(x - amax(x, (1,3))) / sum(.., (1,3)), sum over N = sum(dims 1,3),  │
          └ mean(dims 1..5), mul/add with [C] consts, silu ...                                      ┘
       ─> reshape [B,H,W,C] ─> permute(0,3,1,2) ─> fm'

TFLite is NHWC. The stage's patch axis P is (row, col) inside a patch and N is (row, col) of the patch:
both are just axes of the NHWC map's grid view, so entering and leaving the stage is a reshape (no
data movement), and every op inside works on its own axes: 1x1 convs are FULLY_CONNECTED over the
last axis, reductions over N reduce axes (1, 3). The NCHW<->NHWC permutes at the ends cancel against
the neighbouring convs' own layout change in litert-torch, so the stage needs no TRANSPOSE (the old
(B, P, N, C) form needed one patch gather at each end). The price: N is two non-adjacent axes, so the
softmax over N (one channel, H*W values) is five small ops instead of TFLite's last-axis SOFTMAX.
The stage is found by flooding forward from the unfold pattern to the fold pattern; any op not in the
table below leaves the stage alone.
"""

from __future__ import annotations

import operator

from torch.fx import GraphModule, Node

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import add_constant, aten, conv2d_args, find, get_attr_tensor, is_op, is_static, shape

# Old [B, C, P, N] dim -> the grid [B, H/r, r, W/r, r, C] dims it became (P = the two r axes,
# N = the two H/r, W/r axes).
_GRID_DIMS = {0: (0,), 1: (5,), 2: (2, 4), 3: (1, 3)}
_UNARY = (aten.relu, aten.silu, aten.gelu, aten.sigmoid, aten.tanh, aten.rsqrt, aten.sqrt, aten.neg, aten.exp)
_BINARY = (aten.add, aten.sub, aten.mul, aten.div)
_REDUCE = (aten.mean, aten.sum)


def _dims(dims: object) -> list[int]:
    """Old dim(s) -> the sorted grid dims."""
    seq = dims if isinstance(dims, (list, tuple)) else [dims]
    return sorted(g for d in seq for g in _GRID_DIMS[int(d) % 4])


def _entry(node: Node) -> tuple[Node, int] | None:
    """(feature map, r) when `node` is reshape(flatten(pixel_unshuffle(fm, r), 2), [B, C, r*r, N])."""
    if not is_op(node, aten.reshape, aten.view):
        return None
    flat = node.args[0]
    if not (is_op(flat, aten.flatten) and list(flat.args[1:3]) == [2, 3] and len(flat.users) == 1):
        return None
    unshuffle = flat.args[0]
    if not is_op(unshuffle, aten.pixel_unshuffle) or len(unshuffle.users) != 1:
        return None
    r = int(unshuffle.args[1])
    out = shape(node)
    if out is None or len(out) != 4 or out[2] != r * r:
        return None
    return unshuffle.args[0], r


def _exit(node: Node) -> tuple[Node, int] | None:
    """(pixel_shuffle node, r) when `node` is reshape([B,C,P,N] -> [B,C*P,N]) -> unflatten(-1) -> pixel_shuffle(r)."""
    if not is_op(node, aten.reshape, aten.view) or len(node.users) != 1:
        return None
    unflat = next(iter(node.users))
    if not is_op(unflat, aten.unflatten) or len(unflat.users) != 1:
        return None
    shuffle = next(iter(unflat.users))
    if not is_op(shuffle, aten.pixel_shuffle):
        return None
    in_shape, r = shape(node.args[0]), int(shuffle.args[1])
    if in_shape is None or len(in_shape) != 4 or in_shape[2] != r * r:
        return None
    return shuffle, r


class _Stage:
    """One unfold ... fold region and the edits that move it to channels last."""

    def __init__(self, gm: GraphModule, entry: Node) -> None:
        self.gm, self.entry = gm, entry
        self.nodes: list[Node] = []
        self.exits: list[Node] = []
        self.grid: tuple[int, int, int, int] = (0, 0, 0, 0)  # (H/r, r, W/r, r), set by convert

    def collect(self) -> str | None:
        """Flood forward from the entry; return why the region is not convertible, or None."""
        seen: set[Node] = set()
        todo = list(self.entry.users)
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if _exit(n) is not None:
                self.exits.append(n)
                continue
            reason = self._check(n)
            if reason:
                return reason
            self.nodes.append(n)
            todo.extend(n.users)
        if not self.exits:
            return f"{self.entry.name}: no fold (reshape -> unflatten -> pixel_shuffle) closes the stage"
        return self._check_inputs()

    def _check_inputs(self) -> str | None:
        """Inputs from outside the stage may only be constants (conv weights, per-channel affines)."""
        inside = set(self.nodes) | {self.entry}
        for n in self.nodes:
            for a in n.all_input_nodes:
                if a in inside or (is_op(n, aten.conv2d) and a in n.args[1:3]):
                    continue
                if not (is_op(n, *_BINARY) and get_attr_tensor(self.gm, a) is not None):
                    return f"{n.name} reads {a.name} from outside the stage"
        return None

    def _check(self, n: Node) -> str | None:
        if n.op != "call_function":
            return f"stage output {n.name} escapes to {n.op}"
        s = shape(n)
        if n.target is operator.getitem:
            return None  # a split's output; the split and the getitem's users are checked
        if is_op(n, aten.split_with_sizes):
            dim = n.args[2] if len(n.args) > 2 else 0
            return None if int(dim) % 4 == 1 else f"{n.name} splits dim {dim}, not the channels"
        if s is None or len(s) != 4:
            return f"{n.name} ({n.target}) is not a 4-D tensor op"
        if is_op(n, aten.conv2d):
            w = get_attr_tensor(self.gm, n.args[1])
            _, stride, padding, dilation, groups = conv2d_args(n)[2:]
            convs = [
                list(stride),
                padding if isinstance(padding, str) else list(padding),
                list(dilation),
                groups,
            ]
            if w is None or tuple(w.shape[2:]) != (1, 1) or convs != [[1, 1], [0, 0], [1, 1], 1]:
                return f"{n.name} is not a constant 1x1 stride-1 ungrouped conv"
            return None
        if is_op(n, *_REDUCE) and not (
            len(n.args) > 2 and isinstance(n.args[1], (list, tuple)) and n.args[2]
        ):
            return f"{n.name} reduces without explicit dims and keepdim"
        if is_op(n, *_BINARY):
            return None
        if is_op(n, *_UNARY, *_REDUCE, aten.split_with_sizes, aten.softmax, aten._softmax):
            return None
        return f"{n.name}: {n.target} has no channels-last form here"

    def convert(self, r: int) -> None:
        g = self.gm.graph
        fm = _entry(self.entry)[0]  # type: ignore[index]
        _, c, h, w = shape(fm)  # type: ignore[misc]
        self.grid = (h // r, r, w // r, r)
        with g.inserting_before(self.entry):
            t = g.call_function(aten.permute.default, (fm, [0, 2, 3, 1]))
            new_entry = g.call_function(aten.reshape.default, (t, [-1, *self.grid, c]))
        self.entry.replace_all_uses_with(new_entry)
        for n in self.nodes:
            self._convert_node(n)
        for ex in self.exits:
            shuffle, _ = _exit(ex)  # type: ignore[misc]
            x = ex.args[0]
            ch = shape(x)[1]  # type: ignore[index]
            ho, wo = shape(shuffle)[2:]  # type: ignore[index]
            with g.inserting_before(shuffle):
                t = g.call_function(aten.reshape.default, (x, [-1, ho, wo, ch]))
                t = g.call_function(aten.permute.default, (t, [0, 3, 1, 2]))
            shuffle.replace_all_uses_with(t)

    def _grid_shape(self, old: tuple[object, ...]) -> list[int]:
        """[B, C, P|1, N|1] -> [-1, H/r|1, r|1, W/r|1, r|1, C]."""
        hp, r, wp, _ = self.grid
        p1, n1 = old[2] == 1, old[3] == 1
        return [-1, 1 if n1 else hp, 1 if p1 else r, 1 if n1 else wp, 1 if p1 else r, int(old[1])]  # type: ignore[arg-type]

    def _convert_node(self, n: Node) -> None:
        args = list(n.args)
        if is_op(n, aten.conv2d):  # 1x1 conv over channels == linear over the (now last) channel axis
            w = get_attr_tensor(self.gm, args[1])
            assert w is not None  # checked in _check
            w2 = add_constant(self.gm, f"{n.name}_linear_weight", w.reshape(w.shape[0], w.shape[1]), n)
            # A 2-D input: litert-torch lowers a higher-rank linear to a BATCH_MATMUL (rejected at
            # batch 1); on [rows, C] it is one FULLY_CONNECTED. The reshapes move no data.
            n.target, n.args, n.kwargs = (
                aten.linear.default,
                (args[0], w2, args[2] if len(args) > 2 else None),
                {},
            )
            self._on_rows(n, int(w.shape[1]))
        elif is_op(n, aten.relu):
            # litert-torch lowers relu to tfl.maximum(x, 0), which is illegal above rank 5; on the
            # [rows, C] view it is a RELU, and the converter folds the reshapes away again.
            self._on_rows(n, int(shape(n)[1]))  # type: ignore[index]
        elif is_op(n, aten.split_with_sizes):
            n.args = (args[0], args[1], 5)
        elif is_op(n, aten.softmax, aten._softmax):
            self._softmax(n, _dims(args[1]))
        elif is_op(n, *_REDUCE):
            args[1] = _dims(args[1])
            n.args = tuple(args)
        elif is_op(n, *_BINARY):
            n.args = tuple(
                self._const_grid(a, n) if isinstance(a, Node) and a.op == "get_attr" else a for a in args
            )

    def _on_rows(self, n: Node, channels: int) -> None:
        """Run `n` on its input viewed as [rows, channels]; its output is viewed back as the grid."""
        g = self.gm.graph
        with g.inserting_before(n):
            flat = g.call_function(aten.reshape.default, (n.args[0], [-1, channels]))
        n.args = (flat, *n.args[1:])
        with g.inserting_after(n):
            back = g.call_function(aten.reshape.default, (n, self._grid_shape(shape(n))))  # type: ignore[arg-type]
        n.replace_all_uses_with(back, delete_user_cb=lambda u: u is not back)

    def _softmax(self, n: Node, dims: list[int]) -> None:
        """One softmax when the old axis is one grid axis (C); over P or N (two axes) its five ops."""
        if len(dims) == 1:
            n.args = (n.args[0], dims[0], *n.args[2:])
            return
        g, x = self.gm.graph, n.args[0]
        with g.inserting_before(n):
            m = g.call_function(aten.amax.default, (x, dims, True))
            e = g.call_function(aten.exp.default, (g.call_function(aten.sub.Tensor, (x, m)),))
            out = g.call_function(
                aten.div.Tensor, (e, g.call_function(aten.sum.dim_IntList, (e, dims, True)))
            )
        n.replace_all_uses_with(out)
        g.erase_node(n)

    def _const_grid(self, a: Node, user: Node) -> Node:
        """A constant broadcast against [B, C, P, N] (e.g. gamma [C, 1, 1]) re-laid out for the grid."""
        t = get_attr_tensor(self.gm, a)
        assert t is not None  # checked in _check
        t4 = t.reshape(*([1] * (4 - t.dim())), *t.shape)
        hp, r, wp, _ = self.grid
        p_axes = (r, r) if t4.shape[2] != 1 else (1, 1)
        n_axes = (hp, wp) if t4.shape[3] != 1 else (1, 1)
        t6 = t4.reshape(t4.shape[0], t4.shape[1], *p_axes, *n_axes).permute(0, 4, 2, 5, 3, 1)
        while t6.dim() > 1 and t6.shape[0] == 1:  # [1, 1, 1, 1, 1, C] -> [C]: same broadcast
            t6 = t6[0]
        return add_constant(self.gm, f"{a.name}_grid", t6.contiguous(), user)


@register_rewrite
class PatchesToChannelsLast(Rewrite):
    id = "tflite::patches_to_channels_last"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        entries = [n for n in find(gm, aten.reshape, aten.view) if _entry(n) is not None]
        if not entries:
            return self.fired(
                0, ["no pixel_unshuffle -> flatten -> reshape patch entry (run the unfold rewrite first)"]
            )
        for entry in entries:
            fm, r = _entry(entry)  # type: ignore[misc]
            fm_shape = shape(fm)
            if fm_shape is None or not all(is_static(d) for d in fm_shape[1:]):
                skipped.append(f"{entry.name}: feature map C/H/W are not static")
                continue
            stage = _Stage(gm, entry)
            reason = stage.collect()
            if reason:
                skipped.append(reason)
                continue
            stage.convert(r)
            count += 1
        return self.fired(count, skipped)
