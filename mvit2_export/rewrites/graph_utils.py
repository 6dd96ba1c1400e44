"""Small helpers shared by rewrites: node matching, shapes from `meta["val"]`, constants on the module."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten


def is_op(node: object, *targets: Any) -> bool:
    """True when `node` is a call_function to one of `targets` (OpOverload or OpOverloadPacket)."""
    if not isinstance(node, Node) or node.op != "call_function":
        return False
    for t in targets:
        if node.target is t or getattr(node.target, "overloadpacket", None) is t:
            return True
    return False


def find(gm: GraphModule, *targets: Any) -> Iterator[Node]:
    """Nodes calling one of `targets`, as a list snapshot so callers may edit the graph while iterating."""
    return iter([n for n in gm.graph.nodes if is_op(n, *targets)])


def shape(node: object) -> tuple[Any, ...] | None:
    """Static-or-symbolic shape recorded by export, or None when unknown (e.g. a node we just created)."""
    val = node.meta.get("val") if isinstance(node, Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def reduce_args(node: Node) -> tuple[list[Any] | None, bool]:
    """(dims, keepdim) of a reduction node (mean, sum): dims as the graph gives them, None when they are
    not a list (a reduction over everything)."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim", False))
    return (list(dims) if isinstance(dims, (list, tuple)) else None), keepdim


def is_static(dim: Any) -> bool:
    return isinstance(dim, int)


def same_dim(a: Any, b: Any) -> bool:
    """Dimension equality that also holds for the same symbol (e.g. the dynamic batch `s0`)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return str(a) == str(b)


def broadcast(shapes: Sequence[Sequence[Any]]) -> tuple[Any, ...] | None:
    """numpy broadcasting over possibly symbolic shapes; None when not provably broadcastable."""
    rank = max(len(s) for s in shapes)
    out: list[Any] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        non_one = [d for d in dims if not (is_static(d) and d == 1)]
        if not non_one:
            out.append(1)
            continue
        if any(not same_dim(non_one[0], d) for d in non_one[1:]):
            return None
        out.append(non_one[0])
    return tuple(out)


_CONV2D_DEFAULTS: tuple[Any, ...] = (
    None,
    [1, 1],
    [0, 0],
    [1, 1],
    1,
)  # bias, stride, padding, dilation, groups


def conv2d_args(node: Node) -> list[Any]:
    """aten.conv2d's (input, weight, bias, stride, padding, dilation, groups), its defaults filled in."""
    return list(node.args) + list(_CONV2D_DEFAULTS[len(node.args) - 2 :])


def get_attr_tensor(gm: GraphModule, node: object) -> torch.Tensor | None:
    """The tensor behind a `get_attr` node (parameter, buffer or constant), else None."""
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    obj: Any = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.Tensor) else None


def add_buffer(gm: GraphModule, stem: str, value: torch.Tensor) -> str:
    """Store `value` as a new buffer on `gm` under a fresh name derived from `stem`; returns the name.

    Buffers (not parameters): folded weights are inference constants; re-export lifts them either way.
    """
    base = "_rw_" + "".join(c if c.isalnum() else "_" for c in stem)
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    gm.register_buffer(name, value.detach().clone().contiguous())
    return name


def add_constant(gm: GraphModule, stem: str, value: torch.Tensor, before: Node) -> Node:
    """Store `value` as a new buffer on `gm` and return a `get_attr` node for it, placed before `before`."""
    name = add_buffer(gm, stem, value)
    with gm.graph.inserting_before(before):
        return gm.graph.get_attr(name)


def op_histogram(graph: torch.fx.Graph) -> dict[str, int]:
    """Count call_function nodes by op name (`aten.conv2d.default` -> `conv2d`), largest first."""
    names = []
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        t = n.target
        name = t.name() if hasattr(t, "name") and callable(t.name) else getattr(t, "__name__", str(t))
        names.append(name.split("::")[-1].split(".")[0])
    return dict(Counter(names).most_common())


def erase_unused(gm: GraphModule) -> None:
    """Drop dead nodes and the tensors no `get_attr` uses any more (so folded-away BN stats do not ship)."""
    gm.graph.eliminate_dead_code()
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    names = [k for k, _ in gm.named_parameters(remove_duplicate=False)]
    names += [k for k, _ in gm.named_buffers(remove_duplicate=False)]
    for name in names:
        if name in used:
            continue
        owner_path, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        if hasattr(owner, attr):
            delattr(owner, attr)
