"""Refresh `meta["val"]` after a rewrite by re-running fake-tensor propagation only where the graph changed.

A full FakeTensorProp of a width-1.0 program costs ~0.4 s; the pipelines re-propagate after every rewrite
that fires, which was half of a pipeline's time. A rewrite adds a few nodes and rewires a few others, so
only nodes that are new, whose target or arguments changed, or whose inputs' shapes changed are
re-propagated; every other node keeps its value. The final torch.export re-trace still checks it all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._guards import detect_fake_mode
from torch.fx import GraphModule, Node
from torch.fx.node import map_aggregate, map_arg
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from .graph_utils import get_attr_tensor


def _signature(gm: GraphModule, n: Node) -> str:
    """What a node computes, with input nodes by name: changes when a rewrite retargets or rewires it
    (or, for a get_attr, replaces the tensor behind the name)."""
    args = map_arg((n.args, n.kwargs), lambda a: f"%{a.name}")
    t = get_attr_tensor(gm, n)
    if t is not None:
        args = (args, id(t), tuple(t.shape), t.dtype)
    return repr((n.op, n.target, args))


def _describe(val: Any) -> Any:
    """Shape, stride and dtype of a meta value (what downstream propagation depends on)."""

    def one(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return (str(tuple(v.shape)), str(v.stride()), v.dtype)
        return repr(v)

    return map_aggregate(val, one)


class ShapeRefresher:
    """Keeps each node's signature as of its last propagation; `refresh(gm)` re-propagates the stale part."""

    def __init__(self, gm: GraphModule) -> None:
        self._seen: dict[Node, str] = {n: _signature(gm, n) for n in gm.graph.nodes if "val" in n.meta}
        self.propagated = 0  # nodes re-propagated so far (for tests and profiling)

    def refresh(self, gm: GraphModule) -> None:
        inputs = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
        mode = detect_fake_mode(inputs)
        if mode is None:
            raise RuntimeError("placeholders carry no fake tensors to re-trace with")
        with mode:
            _Incremental(gm, mode, self).propagate_dont_convert_inputs(*inputs)
        live = set(gm.graph.nodes)
        self._seen = {n: s for n, s in self._seen.items() if n in live}


class _Incremental(FakeTensorProp):
    def __init__(self, gm: GraphModule, mode: Any, state: ShapeRefresher) -> None:
        super().__init__(gm, mode)
        self._state = state
        self._changed: set[Node] = set()  # nodes whose value description changed in this pass

    def run_node(self, n: Node) -> Any:
        sig = _signature(self.module, n)
        clean = (
            n.op != "placeholder"
            and "val" in n.meta
            and self._state._seen.get(n) == sig
            and not any(a in self._changed for a in n.all_input_nodes)
        )
        if clean:
            return n.meta["val"]
        before = _describe(n.meta["val"]) if "val" in n.meta else None
        result = super().run_node(n)
        if n.op != "placeholder":
            self._state.propagated += 1
        if "val" not in n.meta or _describe(n.meta["val"]) != before:
            self._changed.add(n)
        self._state._seen[n] = sig
        return result
