"""TFLite-only graph edits after the shared `tflite` rewrite pipeline, and the NHWC I/O wrapper.

The shared pipeline leaves the transformer stages channels last ([B, P, N, C]). Three things still
cost ops or fail in litert-torch, fixed here on the unlifted module (`ep.module()`) without touching
the shared rewrites (see the report for what should move there):

* `linear` on a contiguous rank-4 input: litert-torch's decomposition emits a rank-4 BATCH_MATMUL that
  the TFLite converter rejects -> flatten to [-1, C] around a 2-D FULLY_CONNECTED.
* softmax over N of the [B, P, N, 1] query: not the last axis, so it lowers to 5 ops (max, sub, exp,
  sum, div) -> softmax of the [B, P, N] view over its last axis, which the converter fuses to SOFTMAX.
* the per-channel affine (gamma, beta) of a GroupNorm whose only consumer is a linear layer is folded
  into that layer's weight and bias (2 element-wise ops per norm, 2 full passes over the activations).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from ...rewrites.graph_utils import add_constant, aten, get_attr_tensor, is_op, shape


def _result(rid: str, fired: int, reason: str) -> dict[str, Any]:
    return {"id": rid, "fired": fired, "reason": None if fired else reason}


def fold_linear_batch_dims(gm: GraphModule) -> dict[str, Any]:
    """linear(x[..., C]) of rank > 2 -> reshape(linear(reshape(x, [-1, C])), [..., C'])."""
    count, g = 0, gm.graph
    for n in [n for n in g.nodes if is_op(n, aten.linear)]:
        s, out = shape(n.args[0]), shape(n)
        if s is None or out is None or len(s) <= 2:
            continue
        with g.inserting_before(n):
            flat = g.call_function(aten.reshape.default, (n.args[0], [-1, int(s[-1])]))
        n.args = (flat, *n.args[1:])
        with g.inserting_after(n):
            back = g.call_function(aten.reshape.default, (n, [int(d) for d in out]))
        n.replace_all_uses_with(back, delete_user_cb=lambda u, b=back: u is not b)
        count += 1
    return _result("tflite_exporter::fold_linear_batch_dims", count, "no linear of rank > 2")


def softmax_last_axis(gm: GraphModule) -> dict[str, Any]:
    """softmax(x, d) with x [..., 1] and d not last -> squeeze the unit axis so d is last (fused SOFTMAX)."""
    count, g = 0, gm.graph
    for n in [n for n in g.nodes if is_op(n, aten.softmax, aten._softmax)]:
        s = shape(n.args[0])
        if s is None or len(s) < 2 or s[-1] != 1:
            continue
        d = int(n.args[1]) % len(s)
        if d != len(s) - 2:
            continue
        dims = [int(v) for v in s]
        with g.inserting_before(n):
            sq = g.call_function(aten.reshape.default, (n.args[0], dims[:-1]))
            sm = g.call_function(aten._softmax.default, (sq, len(s) - 2, False))
            back = g.call_function(aten.reshape.default, (sm, dims))
        n.replace_all_uses_with(back)
        g.erase_node(n)
        count += 1
    return _result("tflite_exporter::softmax_last_axis", count, "no softmax over a [..., N, 1] tensor")


def _const_of(gm: GraphModule, node: Node, other: Node) -> tuple[Node, torch.Tensor] | None:
    """For a binary node with one constant operand: (the other operand, the constant)."""
    for a, b in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
        if a is other and isinstance(b, Node):
            t = get_attr_tensor(gm, b)
            if t is not None:
                return a, t
    return None


def fold_norm_affine(gm: GraphModule) -> dict[str, Any]:
    """linear(y * gamma + beta) == linear'(y) with W' = W diag(gamma), b' = b + W beta (gamma, beta [C])."""
    count, g = 0, gm.graph
    for lin in [n for n in g.nodes if is_op(n, aten.linear)]:
        add = lin.args[0]
        if not (is_op(add, aten.add) and len(add.users) == 1):
            continue
        mul = next((a for a in add.args if is_op(a, aten.mul) and len(a.users) == 1), None)
        if mul is None:
            continue
        beta_pair = _const_of(gm, add, mul)
        y = next((a for a in mul.args if isinstance(a, Node) and get_attr_tensor(gm, a) is None), None)
        gamma_pair = _const_of(gm, mul, y) if y is not None else None
        w = get_attr_tensor(gm, lin.args[1])
        b = get_attr_tensor(gm, lin.args[2]) if len(lin.args) > 2 and lin.args[2] is not None else None
        if beta_pair is None or gamma_pair is None or w is None:
            continue
        gamma, beta = gamma_pair[1], beta_pair[1]
        if gamma.dim() != 1 or beta.dim() != 1 or gamma.numel() != w.shape[1] or beta.numel() != w.shape[1]:
            continue  # only a per-input-feature affine folds into the weight columns
        with torch.no_grad():
            w2 = (w.double() * gamma.double()[None, :]).to(w.dtype)
            b0 = b.double() if b is not None else torch.zeros(w.shape[0], dtype=torch.float64)
            b2 = (b0 + w.double() @ beta.double()).to(w.dtype)
        w_node = add_constant(gm, f"{lin.name}_affine_w", w2, lin)
        b_node = add_constant(gm, f"{lin.name}_affine_b", b2, lin)
        lin.args = (y, w_node, b_node)
        g.erase_node(add)
        g.erase_node(mul)
        count += 1
    return _result("tflite_exporter::fold_norm_affine", count, "no norm affine feeding a linear")


def apply_tflite_edits(gm: GraphModule) -> list[dict[str, Any]]:
    """The edits above, in order (the affine fold matches the 4-D linear, so it runs first)."""
    results = [fold_norm_affine(gm), softmax_last_axis(gm), fold_linear_batch_dims(gm)]
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return results


class TFLiteIO(nn.Module):
    """NHWC in, reference computation, named outputs with 4-D ones channels last.

    Input: float32 BGR [0,1] NHWC, or (embedded preprocessing) uint8 RGB NHWC. The NHWC->NCHW permute at
    the input cancels against the first conv's own layout change in litert-torch's layout pass, as does
    the NCHW->NHWC permute of 4-D outputs at the end: no TRANSPOSE is left at either end.
    """

    def __init__(self, body: nn.Module, output_names: list[str], embedded: bool) -> None:
        super().__init__()
        self.body = body
        self.output_names = output_names
        self.embedded = embedded

    def io(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.embedded:
            x = x.to(torch.float32) * (1.0 / 255.0)
            x = x.flip(-1)
        out = self.body(x.permute(0, 3, 1, 2))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {
            name: (o.permute(0, 2, 3, 1) if o.dim() == 4 else o)
            for name, o in zip(self.output_names, outs, strict=True)
        }


class PixelValuesIO(TFLiteIO):
    """The signature input is named after forward's parameter: `pixel_values` (float32 BGR [0,1])."""

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.io(pixel_values)


class ImagesIO(TFLiteIO):
    """Embedded preprocessing: the signature input is `images` (uint8 RGB)."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.io(images)


def io_module(body: nn.Module, output_names: list[str], embedded: bool) -> TFLiteIO:
    return (ImagesIO if embedded else PixelValuesIO)(body, output_names, embedded)


def to_reference_layout(x: Any, layout: str) -> Any:
    """A runtime output back to the reference layout (NHWC -> NCHW for 4-D outputs)."""
    return x.transpose(0, 3, 1, 2) if layout == "NHWC" else x
