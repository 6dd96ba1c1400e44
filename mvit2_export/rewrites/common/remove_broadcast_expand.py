"""common::remove_broadcast_expand — drop an expand whose only users broadcast anyway.

Before::

    ctx [B, C, P, 1] ──> expand_as(v) ──> [B, C, P, N] ──┐
    relu(v) [B, C, P, N] ─────────────────────────────────┴──> mul ──> [B, C, P, N]

After::

    ctx [B, C, P, 1] ──┐
    relu(v) ───────────┴──> mul (implicit broadcast) ──> [B, C, P, N]

Materialised expands become Expand (ONNX) or a broadcast_to that TFLite's MUL then rejects; the
element-wise op broadcasts by itself. Only fires when every user is element-wise and its output
shape is unchanged without the expand.
"""

from __future__ import annotations

from torch.fx import GraphModule, Node

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import aten, broadcast, find, is_op, same_dim, shape

_ELEMENTWISE = (
    aten.add,
    aten.sub,
    aten.mul,
    aten.div,
    aten.where,
    aten.maximum,
    aten.minimum,
    aten.pow,
    aten.eq,
    aten.ne,
    aten.lt,
    aten.le,
    aten.gt,
    aten.ge,
)


def _same_shape(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(same_dim(x, y) for x, y in zip(a, b, strict=True))


@register_rewrite
class RemoveBroadcastExpand(Rewrite):
    id = "common::remove_broadcast_expand"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        nodes = list(find(gm, aten.expand, aten.expand_as))
        if not nodes:
            return self.fired(0, ["no expand/expand_as node"])
        for node in nodes:
            src = node.args[0]
            reason = self._blocker(node, src)
            if reason:
                skipped.append(reason)
                continue
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
            count += 1
        return self.fired(count, skipped)

    @staticmethod
    def _blocker(node: Node, src: Node) -> str | None:
        """Why this expand must stay, or None when it can go."""
        src_shape = shape(src)
        if src_shape is None:
            return f"{node.name}: input shape unknown"
        for user in node.users:
            if not is_op(user, *_ELEMENTWISE):
                return f"expand feeds non-elementwise op {user.target}"
            shapes = []
            for a in user.args:
                if a is node:
                    shapes.append(src_shape)
                elif isinstance(a, Node):
                    s = shape(a)
                    if s is None:
                        return f"{user.name}: operand shape unknown"
                    shapes.append(s)
            out, got = shape(user), broadcast(shapes)
            if out is None or got is None or not _same_shape(out, got):
                return f"{user.name} would change shape without {node.name}"
        return None
