"""common::remove_identity_ops — drop inference-time no-ops (eval dropout, alias, detach, clone).

Before::

    x ──> dropout(p, train=False) ──> y ──> ...

After::

    x ──> ...

Dropout in eval mode (or with p == 0) returns its input; exporters otherwise emit it as an Identity
(ONNX) or keep a node that blocks pattern matches (softmax -> dropout -> mul).
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import aten, find

_DROPOUTS = (aten.dropout, aten.feature_dropout, aten.alpha_dropout, aten.feature_alpha_dropout)
_IDENTITIES = (aten.alias, aten.detach, aten.clone)
_KEEP_FORMATS = (None, torch.preserve_format, torch.contiguous_format)


@register_rewrite
class RemoveIdentityOps(Rewrite):
    id = "common::remove_identity_ops"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        for node in find(gm, *_DROPOUTS, *_IDENTITIES):
            if node.target.overloadpacket in _DROPOUTS:
                p, train = node.args[1], node.args[2]
                if train and p > 0:
                    skipped.append(f"{node.name} is a training-mode dropout (p={p})")
                    continue
            elif node.kwargs.get("memory_format") not in _KEEP_FORMATS:
                skipped.append(f"{node.name} changes the memory format")  # a layout op, not a no-op
                continue
            src = node.args[0]
            if src.op == "placeholder" and any(u.op == "output" for u in node.users):
                skipped.append(f"{node.name} would make an output alias an input")
                continue
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
            count += 1
        if not count and not skipped:
            skipped.append("no dropout/alias/detach/clone node")
        return self.fired(count, skipped)
