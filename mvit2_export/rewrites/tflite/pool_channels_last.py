"""tflite::pool_channels_last — global average pooling reads the NHWC map it is given.

Before::

    fm [B,C,H,W] ──> mean(dims (2, 3), keepdim) ──> [B,C] or [B,C,1,1]

After::

    fm ──> permute(0,2,3,1) ──> mean(dims (1, 2), keepdim) ──> [B,C]      (keepdim: [B,1,1,C] ──> reshape [B,C,1,1])

litert-torch keeps the reference's NCHW semantics by wrapping NHWC kernels in transposes and cancelling
adjacent pairs. A mean over (H, W) of an NCHW tensor has no NHWC form in its layout pass, so it pays one
full TRANSPOSE of the last feature map before the classifier's pooling (and the segmentation head's
image pooling). Written over the NHWC view, the explicit permute cancels against the conv before it; with
keepdim the [B,1,1,C] result is reshaped, not permuted, to [B,C,1,1] (same memory order).
"""

from __future__ import annotations

from torch.fx import GraphModule

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import aten, find, reduce_args, shape


@register_rewrite
class PoolChannelsLast(Rewrite):
    id = "tflite::pool_channels_last"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        means = list(find(gm, aten.mean))
        if not means:
            return self.fired(0, ["no mean node"])
        g = gm.graph
        for n in means:
            s = shape(n.args[0])
            dims, keepdim = reduce_args(n)
            if s is None or len(s) != 4 or dims is None:
                skipped.append(f"{n.name}: not a mean over dims of a 4-D tensor")
                continue
            if sorted(int(d) % 4 for d in dims) != [2, 3]:
                skipped.append(f"{n.name}: reduces dims {list(dims)}, not (H, W)")
                continue
            with g.inserting_before(n):
                nhwc = g.call_function(aten.permute.default, (n.args[0], [0, 2, 3, 1]))
                pooled = g.call_function(aten.mean.dim, (nhwc, [1, 2], keepdim))
                out = g.call_function(aten.reshape.default, (pooled, [-1, s[1], 1, 1])) if keepdim else pooled
            n.replace_all_uses_with(out)
            g.erase_node(n)
            count += 1
        return self.fired(count, skipped)
