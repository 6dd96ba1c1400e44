"""executorch::silu_as_sigmoid_mul — SiLU written out as x * sigmoid(x).

Before::

    x ──> silu ──> y

After::

    x ──> sigmoid ──> mul(x) ──> y

XNNPACK runs SiLU as exactly this pair either way. Written out before export, an fp16 program keeps it
in fp16: ExecuTorch's edge decomposition of a half-precision `silu` upcasts to fp32 around every one
(52 casts at width 0.5, each left on the portable kernels, cutting the program into 51 delegate pieces;
measured with executorch 1.5.1).
"""

from __future__ import annotations

from torch.fx import GraphModule

from ....rewrites import Rewrite, RewriteResult, register_rewrite
from ....rewrites.graph_utils import aten, find


@register_rewrite
class SiluAsSigmoidMul(Rewrite):
    id = "executorch::silu_as_sigmoid_mul"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count = 0
        g = gm.graph
        for n in find(gm, aten.silu):
            with g.inserting_before(n):
                out = g.call_function(
                    aten.mul.Tensor, (n.args[0], g.call_function(aten.sigmoid.default, (n.args[0],)))
                )
            n.replace_all_uses_with(out)
            g.erase_node(n)
            count += 1
        return self.fired(count, ["no silu node"])
