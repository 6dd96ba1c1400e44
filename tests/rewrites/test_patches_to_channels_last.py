import torch
import torch.nn.functional as F

from mvit2_export.rewrites import apply_pipeline

from ._helpers import ATOL, counts, export, max_diff, randomize_norms

RID = "tflite::patches_to_channels_last"
PREP = [
    "common::unfold_to_pixel_unshuffle",
    "common::fold_to_pixel_shuffle",
    "common::remove_broadcast_expand",
    "common::decompose_group_norm",
]
C = 8


def _stage(inner_kernel: int = 1):
    """A MobileViTV2 stage in miniature: unfold -> norm -> linear attention -> residual -> norm -> fold."""

    def fn(x, m):
        x = m["pre"](x)
        b, c, h, w = x.shape
        p = F.unfold(x, kernel_size=2, stride=2).reshape(b, c, 4, -1)
        q, k, v = torch.split(m["qkv"](m["gn1"](p)), [1, C, C], dim=1)
        ctx = (k * torch.softmax(q, dim=-1)).sum(dim=-1, keepdim=True)
        p = p + m["out"](torch.relu(v) * ctx.expand_as(v))
        p = m["gn2"](p)
        fm = F.fold(p.reshape(b, c * 4, -1), output_size=(h, w), kernel_size=2, stride=2)
        return m["post"](fm)

    mods = {
        "pre": torch.nn.Conv2d(3, C, 3, padding=1),
        "qkv": torch.nn.Conv2d(C, 1 + 2 * C, 1),
        "out": torch.nn.Conv2d(C, C, inner_kernel, padding=inner_kernel // 2),
        "gn1": randomize_norms(torch.nn.GroupNorm(1, C), 1),
        "gn2": randomize_norms(torch.nn.GroupNorm(1, C), 2),
        "post": torch.nn.Conv2d(C, 4, 1),
    }
    return fn, mods


def test_stage_moves_to_channels_last():
    fn, mods = _stage()
    x = torch.randn(2, 3, 8, 12)
    ep = export(fn, x, dynamic=True, **mods)
    prepared, _ = apply_pipeline(ep, PREP)
    new, results = apply_pipeline(prepared, [RID])
    assert results[0].fired == 1
    before, after = counts(prepared), counts(new)
    assert before["conv2d"] == 4 and after["conv2d"] == 2 and after["linear"] == 2  # 1x1 convs -> linear
    # Entering and leaving the stage is NCHW<->NHWC (cancels against the convs in litert) plus reshapes:
    # no patch gather, so exactly the two 4-D permutes.
    assert "pixel_unshuffle" not in after and "pixel_shuffle" not in after and after["permute"] == 2
    permutes = [n for n in new.graph.nodes if "permute" in str(n.target)]
    assert sorted(list(n.args[1]) for n in permutes) == [[0, 2, 3, 1], [0, 3, 1, 2]]
    # The softmax over N (two grid axes) is its five ops over dims (1, 3) of the [B, H/2, 2, W/2, 2, 1] query.
    assert "softmax" not in after and after["amax"] == 1 and after["exp"] == 1
    amax = next(n for n in new.graph.nodes if "amax" in str(n.target))
    assert list(amax.args[1]) == [1, 3] and len(amax.meta["val"].shape) == 6
    assert max_diff(ep, new, x) <= ATOL
    assert max_diff(ep, new, torch.randn(3, 3, 8, 12)) <= ATOL


def test_channel_softmax_stays_one_softmax():
    """A softmax over C maps to the grid's last axis: kept as one softmax (TFLite's fused SOFTMAX)."""

    def fn(x, m):
        b, c, h, w = x.shape
        p = F.unfold(m["pre"](x), kernel_size=2, stride=2).reshape(b, C, 4, -1)
        p = torch.softmax(m["proj"](p), dim=1)
        return F.fold(p.reshape(b, C * 4, -1), output_size=(h, w), kernel_size=2, stride=2)

    mods = {"pre": torch.nn.Conv2d(3, C, 3, padding=1), "proj": torch.nn.Conv2d(C, C, 1)}
    x = torch.randn(1, 3, 8, 8)
    ep = export(fn, x, **mods)
    prepared, _ = apply_pipeline(ep, PREP)
    new, results = apply_pipeline(prepared, [RID])
    assert results[0].fired == 1 and counts(new)["softmax"] == 1 and "amax" not in counts(new)
    softmax = next(n for n in new.graph.nodes if "softmax" in str(n.target))
    assert softmax.args[1] == 5
    assert max_diff(ep, new, x) <= ATOL


def test_stage_with_spatial_conv_left_alone():
    fn, mods = _stage(inner_kernel=3)  # a 3x3 conv over (P, N) has no channels-last linear form
    ep = export(fn, torch.randn(1, 3, 8, 8), **mods)
    prepared, _ = apply_pipeline(ep, PREP)
    new, results = apply_pipeline(prepared, [RID])
    assert results[0].fired == 0 and "is not a constant 1x1 stride-1 ungrouped conv" in results[0].reason
    assert counts(new)["pixel_unshuffle"] == 1


def test_needs_unfold_rewrite_first():
    fn, mods = _stage()
    _, results = apply_pipeline(export(fn, torch.randn(1, 3, 8, 8), **mods), [RID])
    assert results[0].fired == 0 and "pixel_unshuffle" in results[0].reason


def test_split_over_patches_left_alone():
    def fn(x, m):
        b, c, h, w = x.shape
        p = F.unfold(m["pre"](x), kernel_size=2, stride=2).reshape(b, C, 4, -1)
        a, z = torch.split(p, [2, 2], dim=2)  # splits the patch axis: no single grid axis holds it
        p = a.repeat(1, 1, 2, 1) + z.repeat(1, 1, 2, 1)
        return F.fold(p.reshape(b, C * 4, -1), output_size=(h, w), kernel_size=2, stride=2)

    ep = export(fn, torch.randn(1, 3, 8, 8), pre=torch.nn.Conv2d(3, C, 3, padding=1))
    prepared, _ = apply_pipeline(ep, PREP)
    _, results = apply_pipeline(prepared, [RID])
    assert results[0].fired == 0 and "splits dim 2" in results[0].reason
