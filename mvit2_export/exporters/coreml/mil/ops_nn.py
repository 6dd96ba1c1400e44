"""Convolution, pooling, normalisation, linear algebra and resampling ops.

All of these accumulate in float32 (fp16 operands are upcast) and are rounded once to the
declared output dtype by the interpreter.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ._registry import OpArgs, f32, norm_axis, register

# -- padding helpers (mirror coremltools' defs/_utils.aggregated_pad) ---------------------------


def _pads(
    args: OpArgs, spatial: tuple[int, ...], kernel: list[int], strides: list[int], dil: list[int]
) -> list[tuple[int, int]]:
    pad_type = str(args.scalar("pad_type", "valid"))
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = args.ints("pad", [0] * (2 * n))
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for i, s, k, d in zip(spatial, strides, kernel, dil, strict=False):
            keff = (k - 1) * d + 1
            total = max(0, s * math.ceil(i / s) - i + keff - s)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _windows(xp: np.ndarray, kernel: list[int], strides: list[int], dil: list[int], out: list[int]):
    """Yield (kernel offset, strided view of xp) for every kernel position (spatial dims last)."""
    for pos in itertools.product(*(range(k) for k in kernel)):
        sl = tuple(
            slice(p * d, p * d + (o - 1) * s + 1, s)
            for p, d, s, o in zip(pos, dil, strides, out, strict=False)
        )
        yield pos, xp[(Ellipsis,) + sl]


# -- convolution --------------------------------------------------------------------------------


def _per_image_product(w: np.ndarray, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """w [G, O, C] applied to x [N, G, C, *spatial] -> `shape` [N, G, O, *spatial]. np.matmul over the
    stacked (image, group) axes calls BLAS once per 2-D slice, so an image's sums do not depend on how
    many images share the batch (an einsum contracts the batch into one product, whose blocking does:
    measured up to 0.1 on W8A8 logits)."""
    n, g, c = x.shape[:3]
    return np.matmul(w, x.reshape(n, g, c, -1)).reshape(shape)


@register("conv")
def _conv(args: OpArgs) -> np.ndarray:
    x, w = f32(args.arr("x")), f32(args.arr("weight"))
    n, cin = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    cout, cin_g = w.shape[:2]
    kernel = list(w.shape[2:])
    strides = args.ints("strides", [1] * nd)
    dil = args.ints("dilations", [1] * nd)
    groups = int(args.scalar("groups", 1))
    pads = _pads(args, spatial, kernel, strides, dil)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    out_sp = [(xp.shape[2 + i] - ((kernel[i] - 1) * dil[i] + 1)) // strides[i] + 1 for i in range(nd)]
    cout_g = cout // groups
    xg = xp.reshape((n, groups, cin_g) + xp.shape[2:])
    wg = w.reshape((groups, cout_g, cin_g) + tuple(kernel))
    acc = np.zeros((n, groups, cout_g) + tuple(out_sp), dtype=np.float32)
    for pos, view in _windows(xg, kernel, strides, dil, out_sp):
        wk = wg[(Ellipsis,) + pos]  # [G, Cout_g, Cin_g]
        if cin_g == 1 and cout_g == 1:  # depthwise: a broadcast multiply beats a product
            acc += view * wk.reshape((1, groups, 1) + (1,) * nd)
        else:
            acc += _per_image_product(wk, view, acc.shape)
    out = acc.reshape((n, cout) + tuple(out_sp))
    if "bias" in args:
        out += f32(args.arr("bias")).reshape((1, cout) + (1,) * nd)
    return out


@register("conv_transpose")
def _conv_transpose(args: OpArgs) -> np.ndarray:
    # weight is [Cin, Cout/groups, *K]; scatter every input pixel's kernel into the output.
    x, w = f32(args.arr("x")), f32(args.arr("weight"))
    n, cin = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    cout_g = w.shape[1]
    kernel = list(w.shape[2:])
    strides = args.ints("strides", [1] * nd)
    dil = args.ints("dilations", [1] * nd)
    groups = int(args.scalar("groups", 1))
    cin_g = cin // groups
    full = [(spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 for i in range(nd)]
    xg = x.reshape((n, groups, cin_g) + spatial)
    wg = w.reshape((groups, cin_g, cout_g) + tuple(kernel))
    acc = np.zeros((n, groups, cout_g) + tuple(full), dtype=np.float32)
    for pos in itertools.product(*(range(k) for k in kernel)):
        w_pos = np.swapaxes(wg[(Ellipsis,) + pos], 1, 2)  # [G, Cout_g, Cin_g]
        contrib = _per_image_product(w_pos, xg, (n, groups, cout_g) + spatial)
        sl = tuple(
            slice(p * d, p * d + (s_in - 1) * st + 1, st)
            for p, d, s_in, st in zip(pos, dil, spatial, strides, strict=False)
        )
        acc[(Ellipsis,) + sl] += contrib
    out = acc.reshape((n, groups * cout_g) + tuple(full))
    pad_type = str(args.scalar("pad_type", "valid"))
    if "output_shape" in args:
        target = args.ints("output_shape")[2:]
    else:
        target = None
    if pad_type == "custom":
        p = args.ints("pad", [0] * (2 * nd))
        crops = [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    elif pad_type in ("same", "same_lower"):
        target = target or [spatial[i] * strides[i] for i in range(nd)]
        crops = []
        for i in range(nd):
            total = max(0, full[i] - target[i])
            small, big = total // 2, total - total // 2
            crops.append((small, big) if pad_type == "same" else (big, small))
    else:
        crops = [(0, 0)] * nd
    sl = tuple(slice(b, full[i] - e) for i, (b, e) in enumerate(crops))
    out = out[(Ellipsis,) + sl]
    if target is not None and list(out.shape[2:]) != list(target):
        padw = [(0, 0), (0, 0)] + [(0, max(0, t - s)) for t, s in zip(target, out.shape[2:], strict=False)]
        out = np.pad(out, padw)[(Ellipsis,) + tuple(slice(0, t) for t in target)]
    if "bias" in args:
        out = out + f32(args.arr("bias")).reshape((1, -1) + (1,) * nd)
    return out


# -- pooling ------------------------------------------------------------------------------------


def _pool(args: OpArgs, kind: str) -> np.ndarray:
    x = f32(args.arr("x"))
    spatial = x.shape[2:]
    nd = len(spatial)
    kernel = args.ints("kernel_sizes")
    strides = args.ints("strides", [1] * nd)
    dil = [1] * nd
    pads = _pads(args, spatial, kernel, strides, dil)
    ceil_mode = bool(args.scalar("ceil_mode", False))
    out_sp, extra = [], []
    for i in range(nd):
        tot = spatial[i] + pads[i][0] + pads[i][1]
        if ceil_mode:
            o = (tot - kernel[i] + strides[i] - 1) // strides[i] + 1
            if (o - 1) * strides[i] >= spatial[i] + (pads[i][0] + pads[i][1]) / 2 and sum(pads[i]) > 0:
                o -= 1
        else:
            o = (tot - kernel[i]) // strides[i] + 1
        out_sp.append(o)
        extra.append(max(0, (o - 1) * strides[i] + kernel[i] - tot))  # ceil_mode overhang
    fill = -np.inf if kind == "max" else 0.0
    width = [(0, 0), (0, 0)] + [(p[0], p[1] + e) for p, e in zip(pads, extra, strict=False)]
    xp = np.pad(x, width, constant_values=fill)
    # Counts of real (non-padding) elements per window, for exclude_padding_from_average.
    real = np.pad(np.ones(spatial, np.float32), [(p[0], p[1] + e) for p, e in zip(pads, extra, strict=False)])
    inside = np.pad(
        np.ones([s + p[0] + p[1] for s, p in zip(spatial, pads, strict=False)], np.float32),
        [(0, e) for e in extra],
    )
    acc = np.full((x.shape[0], x.shape[1]) + tuple(out_sp), fill, np.float32)
    cnt_real = np.zeros(out_sp, np.float32)
    cnt_in = np.zeros(out_sp, np.float32)
    for (_, view), (_, rv), (_, iv) in zip(
        _windows(xp, kernel, strides, dil, out_sp),
        _windows(real, kernel, strides, dil, out_sp),
        _windows(inside, kernel, strides, dil, out_sp),
        strict=False,
    ):
        if kind == "max":
            np.maximum(acc, view, out=acc)
        elif kind == "l2":
            acc += view * view
        else:
            acc += view
        cnt_real += rv
        cnt_in += iv
    if kind == "max":
        return acc
    if kind == "l2":
        return np.sqrt(acc)
    # Explicit padding counts toward the average unless excluded; ceil_mode overhang never does.
    return acc / (cnt_real if bool(args.scalar("exclude_padding_from_average", False)) else cnt_in)


@register("avg_pool")
def _avg_pool(args: OpArgs) -> np.ndarray:
    return _pool(args, "avg")


@register("max_pool")
def _max_pool(args: OpArgs) -> np.ndarray:
    return _pool(args, "max")


@register("l2_pool")
def _l2_pool(args: OpArgs) -> np.ndarray:
    return _pool(args, "l2")


# -- normalisation ------------------------------------------------------------------------------


def _channel(v: np.ndarray, rank: int) -> np.ndarray:
    return f32(v).reshape((1, -1) + (1,) * (rank - 2))


def _channel_affine(y: np.ndarray, args: OpArgs) -> np.ndarray:
    """The optional per-channel gamma/beta (axis 1) of batch_norm and instance_norm."""
    if "gamma" in args:
        y = y * _channel(args["gamma"], y.ndim)
    if "beta" in args:
        y = y + _channel(args["beta"], y.ndim)
    return y


@register("batch_norm")
def _batch_norm(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    eps = float(args.scalar("epsilon", 1e-5))
    y = (x - _channel(args["mean"], x.ndim)) / np.sqrt(_channel(args["variance"], x.ndim) + eps)
    return _channel_affine(y, args)


@register("instance_norm")
def _instance_norm(args: OpArgs) -> np.ndarray:
    # Per sample and channel over all spatial dims; epsilon inside the sqrt with the variance.
    x = f32(args.arr("x"))
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(args.scalar("epsilon", 1e-5)))
    return _channel_affine(y, args)


@register("layer_norm")
def _layer_norm(args: OpArgs) -> np.ndarray:
    # gamma/beta have the shape of x over `axes` (which MIL requires to be trailing dims).
    x = f32(args.arr("x"))
    axes = tuple(sorted(norm_axis(a, x.ndim) for a in args.ints("axes", list(range(x.ndim)))))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(args.scalar("epsilon", 1e-5)))
    bshape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if "gamma" in args:
        y = y * f32(args.arr("gamma")).reshape(bshape)
    if "beta" in args:
        y = y + f32(args.arr("beta")).reshape(bshape)
    return y


@register("l2_norm")
def _l2_norm(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    axes = tuple(range(max(0, x.ndim - 3), x.ndim))  # the last three dims, batch-wise
    return x / np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + float(args.scalar("epsilon", 1e-6)))


@register("local_response_norm")
def _lrn(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    size = int(args.scalar("size"))
    alpha, beta, k = (
        float(args.scalar("alpha", 1e-4)),
        float(args.scalar("beta", 0.75)),
        float(args.scalar("k", 1.0)),
    )
    sq = np.pad(x * x, [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2))
    s = sum(sq[:, i : i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * s) ** beta


# -- linear algebra -----------------------------------------------------------------------------


@register("linear")
def _linear(args: OpArgs) -> np.ndarray:
    x, w = f32(args.arr("x")), f32(args.arr("weight")).T
    # a row at a time (a stacked product, see _per_image_product): a batch's rows as one GEMM would
    # round differently from one image's GEMV
    y = np.matmul(x[:, None, :], w)[:, 0, :] if x.ndim == 2 else x @ w
    return y + f32(args.arr("bias")) if "bias" in args else y


@register("matmul")
def _matmul(args: OpArgs) -> np.ndarray:
    x, y = f32(args.arr("x")), f32(args.arr("y"))
    if bool(args.scalar("transpose_x", False)):
        x = np.swapaxes(x, -1, -2) if x.ndim > 1 else x
    if bool(args.scalar("transpose_y", False)):
        y = np.swapaxes(y, -1, -2) if y.ndim > 1 else y
    return np.matmul(x, y)


@register("einsum")
def _einsum(args: OpArgs) -> np.ndarray:
    vals = [f32(np.asarray(v)) for v in args["values"]]
    return np.einsum(str(args.scalar("equation")), *vals)


@register("scaled_dot_product_attention")
def _sdpa(args: OpArgs) -> np.ndarray:
    q, k, v = f32(args.arr("query")), f32(args.arr("key")), f32(args.arr("value"))
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if "attn_mask" in args:
        m = args.arr("attn_mask")
        s = np.where(m, s, -np.inf) if m.dtype == np.bool_ else s + f32(m)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


# -- resampling ---------------------------------------------------------------------------------


def _grid(xin: int, xout: int, mode: str) -> np.ndarray:
    """Sample positions in input coordinates, as the MIL resize_bilinear docstring defines them."""
    i = np.arange(xout, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if xout == 1:
            g = np.full(1, (xin - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (xin - 1) / (xout - 1)
    elif mode == "DEFAULT":
        g = i * (xin / xout)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, xin - 1) / xout
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        g = (i + 0.5) * (xin / xout) - 0.5
    else:
        raise ValueError(f"unknown sampling_mode {mode!r}")
    return np.clip(g, 0, xin - 1)


def _interp_axis(x: np.ndarray, axis: int, g: np.ndarray) -> np.ndarray:
    lo = np.floor(g).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (g - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _bilinear(x: np.ndarray, hout: int, wout: int, mode: str) -> np.ndarray:
    x = f32(x)
    y = _interp_axis(x, x.ndim - 2, _grid(x.shape[-2], hout, mode))
    return _interp_axis(y, x.ndim - 1, _grid(x.shape[-1], wout, mode))


def _nearest(x: np.ndarray, hout: int, wout: int) -> np.ndarray:
    hi = np.minimum(np.floor(np.arange(hout) * x.shape[-2] / hout).astype(np.int64), x.shape[-2] - 1)
    wi = np.minimum(np.floor(np.arange(wout) * x.shape[-1] / wout).astype(np.int64), x.shape[-1] - 1)
    return np.take(np.take(x, hi, axis=-2), wi, axis=-1)


@register("upsample_bilinear")
def _upsample_bilinear(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    sh, sw = float(args.scalar("scale_factor_height", 1)), float(args.scalar("scale_factor_width", 1))
    hout, wout = int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw))
    align = bool(args.scalar("align_corners", True))
    # iOS16 adds half_pixel_centers (default: not align_corners); spacing is recomputed from sizes.
    half = bool(args.scalar("half_pixel_centers", not align))
    if align:
        mode = "STRICT_ALIGN_CORNERS"
    else:
        mode = "UNALIGN_CORNERS" if half else "DEFAULT"
    return _bilinear(x, hout, wout, mode)


@register("resize_bilinear")
def _resize_bilinear(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    return _bilinear(
        x,
        int(args.scalar("target_size_height", 1)),
        int(args.scalar("target_size_width", 1)),
        str(args.scalar("sampling_mode", "DEFAULT")),
    )


@register("upsample_nearest_neighbor")
def _upsample_nearest(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    sh, sw = float(args.scalar("scale_factor_height", 1)), float(args.scalar("scale_factor_width", 1))
    return _nearest(x, int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw)))


@register("resize_nearest_neighbor")
def _resize_nearest(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    return _nearest(x, int(args.scalar("target_size_height")), int(args.scalar("target_size_width")))


@register("resize")
def _resize(args: OpArgs) -> np.ndarray:
    # iOS17 resize: the last `resized_dims` dims take their size from `shape` (0 keeps x's size).
    x = args.arr("x")
    shape = args.ints("shape")
    k = int(args.scalar("resized_dims"))
    if k != 2 or x.ndim < 2:
        raise ValueError("resize: only resized_dims=2 is supported")
    hout = shape[-2] or x.shape[-2]
    wout = shape[-1] or x.shape[-1]
    if str(args.scalar("interpolation_mode", "LINEAR")) == "NEAREST_NEIGHBOR":
        return _nearest(x, hout, wout)
    return _bilinear(x, hout, wout, str(args.scalar("sampling_mode", "DEFAULT")))


# -- classifier head ----------------------------------------------------------------------------


@register("classify")
def _classify(args: OpArgs) -> tuple[np.ndarray, dict]:
    classes = list(args["classes"])
    rows = np.asarray(args["probabilities"]).reshape(args.batch, -1)
    labels = [classes[int(np.argmax(r))] for r in rows]
    dicts = [{c: float(p) for c, p in zip(classes, r, strict=False)} for r in rows]
    if args.batch == 1:
        return np.array(labels[0]), dicts[0]
    return np.array(labels), dicts  # one label and one dict per image
