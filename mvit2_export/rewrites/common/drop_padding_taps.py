"""common::drop_padding_taps — drop the kernel taps of a conv that only ever read its zero padding.

DeepLabV3's ASPP runs 3x3 convs at dilations 6, 12 and 18 on the last feature map: 1/16 of the image
with the embedded default's output stride 16 (32x32 at 512 px, 16x16 at 256, 10x10 at 160). A tap
further off centre than the map is wide reads only padding at every output position, yet every backend
multiplies it by the zeros: XNNPACK ran a 384 -> 512 dilation-18 3x3 conv on a 16x16 map in 17.3 ms,
the 1x1 conv it equals in 0.73 ms (2 threads, AVX2 host). At 512 px with output stride 16 every tap
reads the map somewhere and nothing changes.

Before::

    x [N, C, 16, 16] ──> conv2d(W [O, C, 3, 3], padding 18, dilation 18) ──> y

After::

    x [N, C, 16, 16] ──> conv2d(W[:, :, 1:2, 1:2], padding 0, dilation 1) ──> y

Per spatial axis, the taps whose reads all fall in the padding are removed (they add exact zeros, so
the result is the same up to the order of the float sums). Fires only when what is left can keep the
same output size with torch's symmetric padding: as many taps dropped at each end of the axis.
"""

from __future__ import annotations

from typing import Any

from torch.fx import GraphModule, Node

from ..base import Rewrite, RewriteResult, register_rewrite
from ..graph_utils import add_constant, aten, conv2d_args, find, get_attr_tensor, is_static, shape


def live_taps(n: int, k: int, stride: int, pad: int, dil: int) -> tuple[int, int] | None:
    """First and last tap (of `k`) that reads a real input position for some output, on an axis of `n`
    positions; None when no tap does (the conv would output only its bias)."""
    out = (n + 2 * pad - dil * (k - 1) - 1) // stride + 1
    live = [i for i in range(k) if i * dil - pad <= n - 1 and (out - 1) * stride + i * dil - pad >= 0]
    return (live[0], live[-1]) if live else None


def _conv_args(conv: Node) -> list[Any] | None:
    """A non-transposed 2-D conv's arguments, defaults filled in (stride, padding and dilation at 3, 4
    and 5 for both aten.conv2d and aten.convolution), else None."""
    if aten.conv2d.default == conv.target:
        return conv2d_args(conv)
    if aten.convolution.default == conv.target and not conv.args[6]:
        return list(conv.args)
    return None


def _pair(value: Any) -> list[int] | None:
    """A stride, padding or dilation as [h, w] ints ([d] means [d, d]); None when it is not ints."""
    pair = list(value)
    if len(pair) == 1:
        pair *= 2
    return pair if len(pair) == 2 and all(isinstance(v, int) for v in pair) else None


@register_rewrite
class DropPaddingTaps(Rewrite):
    id = "common::drop_padding_taps"

    def apply(self, gm: GraphModule) -> RewriteResult:
        count, skipped = 0, []
        convs = list(find(gm, aten.conv2d, aten.convolution))
        if not convs:
            return self.fired(0, ["no conv2d node"])
        for conv in convs:
            args = _conv_args(conv)
            params = [_pair(p) for p in args[3:6]] if args else [None]
            x_shape = shape(conv.args[0])
            w = get_attr_tensor(gm, conv.args[1])
            if None in params or conv.kwargs or x_shape is None or len(x_shape) != 4 or w is None:
                skipped.append(f"{conv.name}: not a 2-D conv with constant weights and list arguments")
                continue
            if not all(is_static(d) for d in x_shape[2:]):
                skipped.append(f"{conv.name}: spatial size is not static")
                continue
            stride, padding, dilation = params
            new_pad, new_dil, keep = [], [], []
            for axis in range(2):
                n, k = int(x_shape[2 + axis]), int(w.shape[2 + axis])
                s, p, d = stride[axis], padding[axis], dilation[axis]
                lo, hi = live_taps(n, k, s, p, d) or (0, k - 1)
                if lo != k - 1 - hi:  # symmetric padding could not keep the output size
                    lo, hi = 0, k - 1
                new_pad.append(p - lo * d)
                new_dil.append(d if hi > lo else 1)
                keep.append(slice(lo, hi + 1))
            if (keep[0].stop - keep[0].start, keep[1].stop - keep[1].start) == tuple(w.shape[2:]):
                skipped.append("no conv has a tap (or symmetric pair of taps) that reads only padding")
                continue
            w_node = add_constant(gm, f"{conv.name}_live_taps", w[:, :, keep[0], keep[1]], conv)
            args[1], args[4], args[5] = w_node, new_pad, new_dil
            conv.args = tuple(args)
            count += 1
        return self.fired(count, skipped)
