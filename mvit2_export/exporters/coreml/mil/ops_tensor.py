"""Shape, layout, indexing and reduction ops."""

from __future__ import annotations

import numpy as np

from ._registry import OpArgs, f32, norm_axis, register

# -- reductions ---------------------------------------------------------------------------------


def _axes(args: OpArgs, rank: int) -> tuple[int, ...]:
    axes = args.get("axes")
    if axes is None:
        return tuple(range(rank))  # MIL: axes=None reduces over all dimensions
    return tuple(norm_axis(int(a), rank) for a in np.asarray(axes).reshape(-1))


_REDUCE = {
    "reduce_mean": lambda x, ax, kd: np.mean(x, axis=ax, keepdims=kd),
    "reduce_sum": lambda x, ax, kd: np.sum(x, axis=ax, keepdims=kd),
    "reduce_prod": lambda x, ax, kd: np.prod(x, axis=ax, keepdims=kd),
    "reduce_max": lambda x, ax, kd: np.max(x, axis=ax, keepdims=kd),
    "reduce_min": lambda x, ax, kd: np.min(x, axis=ax, keepdims=kd),
    "reduce_l1_norm": lambda x, ax, kd: np.sum(np.abs(x), axis=ax, keepdims=kd),
    "reduce_l2_norm": lambda x, ax, kd: np.sqrt(np.sum(x * x, axis=ax, keepdims=kd)),
    "reduce_sum_square": lambda x, ax, kd: np.sum(x * x, axis=ax, keepdims=kd),
    "reduce_log_sum": lambda x, ax, kd: np.log(np.sum(x, axis=ax, keepdims=kd)),
    "reduce_log_sum_exp": lambda x, ax, kd: np.log(np.sum(np.exp(x), axis=ax, keepdims=kd)),
}


def _reduce(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    if x.dtype.kind == "f":
        x = f32(x)  # accumulate fp16 reductions in fp32, rounded once on output
    keep = bool(args.scalar("keep_dims", False))
    return _REDUCE[args.op_type](x, _axes(args, x.ndim), keep)


for _name in _REDUCE:
    register(_name)(_reduce)


@register("reduce_argmax", "reduce_argmin")
def _reduce_arg(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    axis = norm_axis(int(args.scalar("axis", -1)), x.ndim)
    fn = np.argmax if args.op_type == "reduce_argmax" else np.argmin
    out = fn(x, axis=axis)  # first occurrence on ties, as MIL documents
    return np.expand_dims(out, axis) if bool(args.scalar("keep_dims", False)) else out


# -- shape / layout -----------------------------------------------------------------------------


@register("reshape")
def _reshape(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    shape = args.ints("shape")
    if args.batch > 1 and shape and shape[0] == 1:
        shape[0] = args.batch  # the program's batch of 1 is the batch of images (run_batch)
    if 0 in shape:
        # 0 copies an input dim; iOS15 aligns left, iOS17 right. For equal ranks both agree.
        if len(shape) == x.ndim:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        else:
            rev = [x.shape[::-1][i] if i < x.ndim else 1 for i in range(len(shape))]
            shape = [rev[len(shape) - 1 - i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@register("transpose")
def _transpose(args: OpArgs) -> np.ndarray:
    return np.transpose(args.arr("x"), args.ints("perm"))


@register("squeeze")
def _squeeze(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    if "axes" not in args:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(norm_axis(a, x.ndim) for a in args.ints("axes")))


@register("expand_dims")
def _expand_dims(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    axes = args.ints("axes")
    out_rank = x.ndim + len(axes)
    shape = list(x.shape)
    for a in sorted(norm_axis(a, out_rank) for a in axes):
        shape.insert(a, 1)
    return x.reshape(shape)


@register("flatten2d")
def _flatten2d(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    axis = norm_axis(int(args.scalar("axis", 1)), x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@register("concat")
def _concat(args: OpArgs) -> np.ndarray:
    vals = [np.asarray(v) for v in args["values"]]
    axis = norm_axis(int(args.scalar("axis")), vals[0].ndim)
    if bool(args.scalar("interleave", False)):
        # Interleave: take one slice of each input along axis in turn (all inputs same shape).
        stacked = np.stack(vals, axis=axis + 1)
        shape = list(vals[0].shape)
        shape[axis] *= len(vals)
        return stacked.reshape(shape)
    return np.concatenate(vals, axis=axis)


@register("stack")
def _stack(args: OpArgs) -> np.ndarray:
    vals = [np.asarray(v) for v in args["values"]]
    return np.stack(vals, axis=int(args.scalar("axis")))


@register("split")
def _split(args: OpArgs) -> tuple[np.ndarray, ...]:
    x = args.arr("x")
    axis = norm_axis(int(args.scalar("axis")), x.ndim)
    if "split_sizes" in args:
        sizes = args.ints("split_sizes")
    else:
        n = int(args.scalar("num_splits"))
        # MIL: the last chunk may be smaller when the axis does not divide evenly (ceil chunks).
        step = -(-x.shape[axis] // n)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(n)]
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@register("slice_by_index")
def _slice_by_index(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    r = x.ndim
    begin, end = args.ints("begin"), args.ints("end")
    stride = args.ints("stride", [1] * r)
    bmask = [bool(b) for b in np.asarray(args.get("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(b) for b in np.asarray(args.get("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(b) for b in np.asarray(args.get("squeeze_mask", [False] * r)).reshape(-1)]
    slices = []
    for i in range(r):
        if smask[i]:
            b = begin[i] + x.shape[i] if begin[i] < 0 else begin[i]
            slices.append(slice(b, b + 1))
            continue
        slices.append(slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i]))
    out = x[tuple(slices)]
    squeeze = tuple(i for i in range(r) if smask[i])
    return np.squeeze(out, axis=squeeze) if squeeze else out


@register("slice_by_size")
def _slice_by_size(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    slices = []
    for i, (b, s) in enumerate(zip(args.ints("begin"), args.ints("size"), strict=False)):
        b = b + x.shape[i] if b < 0 else b
        slices.append(slice(b, None if s == -1 else b + s))
    return x[tuple(slices)]


@register("pixel_shuffle")
def _pixel_shuffle(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    f = int(args.scalar("upscale_factor"))
    n, c, h, w = x.shape
    x = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // (f * f), h * f, w * f)


@register("pixel_unshuffle")
def _pixel_unshuffle(args: OpArgs) -> np.ndarray:
    # Channel index c*f*f + i*f + j: channel-major, then position inside the f x f block (PyTorch).
    x = args.arr("x")
    f = int(args.scalar("downscale_factor"))
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // f, f, w // f, f).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * f * f, h // f, w // f)


@register("space_to_depth")
def _space_to_depth(args: OpArgs) -> np.ndarray:
    # TensorFlow order (the TF frontend maps SpaceToDepth straight to it): channel (i*b + j)*C + c.
    x = args.arr("x")
    b = int(args.scalar("block_size"))
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return x.reshape(n, c * b * b, h // b, w // b)


@register("depth_to_space")
def _depth_to_space(args: OpArgs) -> np.ndarray:
    # TensorFlow DCR order, the inverse of space_to_depth above.
    x = args.arr("x")
    b = int(args.scalar("block_size"))
    n, c, h, w = x.shape
    x = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c // (b * b), h * b, w * b)


@register("space_to_batch")
def _space_to_batch(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    bh, bw = args.ints("block_shape")
    p = args.ints("paddings")
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[1]), (p[2], p[3])))
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return x.reshape(n * bh * bw, c, h // bh, w // bw)


@register("batch_to_space")
def _batch_to_space(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    bh, bw = args.ints("block_shape")
    cr = args.ints("crops")
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    x = x.reshape(bh, bw, n, c, h, w).transpose(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return x[:, :, cr[0] : h * bh - cr[1], cr[2] : w * bw - cr[3]]


@register("tile")
def _tile(args: OpArgs) -> np.ndarray:
    return np.tile(args.arr("x"), args.ints("reps"))


@register("reverse")
def _reverse(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    axes = args.ints("axes", list(range(x.ndim)))
    return np.flip(x, axis=tuple(axes))


@register("pad")
def _pad(args: OpArgs) -> np.ndarray:
    # pad lists (before, after) pairs for the *last* len(pad)/2 dimensions.
    x = args.arr("x")
    pad = args.ints("pad")
    k = len(pad) // 2
    width = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    mode = str(args.scalar("mode", "constant"))
    if mode == "constant":
        return np.pad(x, width, constant_values=args.scalar("constant_val", 0.0))
    return np.pad(x, width, mode={"reflect": "reflect", "replicate": "edge"}[mode])


# -- indexing / selection -----------------------------------------------------------------------


@register("gather")
def _gather(args: OpArgs) -> np.ndarray:
    x, idx = args.arr("x"), args.arr("indices").astype(np.int64)
    axis = norm_axis(int(args.scalar("axis", 0)), x.ndim)
    batch_dims = int(args.scalar("batch_dims", 0))
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    # iOS16 batch_dims: leading dims of x and indices are shared batch dims.
    bshape = x.shape[:batch_dims]
    xb = x.reshape((-1,) + x.shape[batch_dims:])
    ib = idx.reshape((-1,) + idx.shape[batch_dims:])
    outs = [np.take(xb[i], ib[i], axis=axis - batch_dims) for i in range(xb.shape[0])]
    return np.stack(outs).reshape(bshape + outs[0].shape)


@register("gather_along_axis")
def _gather_along_axis(args: OpArgs) -> np.ndarray:
    x, idx = args.arr("x"), args.arr("indices").astype(np.int64)
    axis = norm_axis(int(args.scalar("axis", 0)), x.ndim)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take_along_axis(x, idx, axis=axis)


@register("gather_nd")
def _gather_nd(args: OpArgs) -> np.ndarray:
    x, idx = args.arr("x"), args.arr("indices").astype(np.int64)
    batch_dims = int(args.scalar("batch_dims", 0))
    if batch_dims:
        bshape = x.shape[:batch_dims]
        xb = x.reshape((-1,) + x.shape[batch_dims:])
        ib = idx.reshape((-1,) + idx.shape[batch_dims:])
        outs = [xb[i][tuple(np.moveaxis(ib[i], -1, 0))] for i in range(xb.shape[0])]
        return np.stack(outs).reshape(bshape + outs[0].shape)
    return x[tuple(np.moveaxis(idx, -1, 0))]


@register("select")
def _select(args: OpArgs) -> np.ndarray:
    return np.where(args.arr("cond").astype(bool), args.arr("a"), args.arr("b"))


@register("one_hot")
def _one_hot(args: OpArgs) -> np.ndarray:
    idx = args.arr("indices").astype(np.int64)
    depth = int(args.scalar("one_hot_vector_size"))
    axis = norm_axis(int(args.scalar("axis", -1)), idx.ndim + 1)
    on, off = args.scalar("on_value", 1), args.scalar("off_value", 0)
    hot = np.moveaxis(np.eye(depth, dtype=bool)[idx], -1, axis)
    return np.where(hot, on, off)


@register("topk")
def _topk(args: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    x = args.arr("x")
    k = int(args.scalar("k", 1))
    axis = norm_axis(int(args.scalar("axis", -1)), x.ndim)
    ascending = bool(args.scalar("ascending", False))
    order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)


@register("argsort")
def _argsort(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    axis = int(args.scalar("axis", -1))
    return np.argsort(x if bool(args.scalar("ascending", False)) else -x, axis=axis, kind="stable")


@register("cumsum")
def _cumsum(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    axis = norm_axis(int(args.scalar("axis", 0)), x.ndim)
    x = np.flip(x, axis) if bool(args.scalar("reverse", False)) else x
    out = np.cumsum(f32(x) if x.dtype.kind == "f" else x, axis=axis)
    if bool(args.scalar("exclusive", False)):
        out = out - (f32(x) if x.dtype.kind == "f" else x)
    return np.flip(out, axis) if bool(args.scalar("reverse", False)) else out


@register("shape")
def _shape(args: OpArgs) -> np.ndarray:
    return np.array(args.arr("x").shape, dtype=np.int32)


@register("fill")
def _fill(args: OpArgs) -> np.ndarray:
    return np.full(args.ints("shape"), args.scalar("value", 0.0))


@register("fill_like")
def _fill_like(args: OpArgs) -> np.ndarray:
    return np.full(args.arr("ref_tensor").shape, args.scalar("value", 0.0))


@register("range_1d")
def _range_1d(args: OpArgs) -> np.ndarray:
    return np.arange(args.scalar("start"), args.scalar("end"), args.scalar("step"))


@register("band_part")
def _band_part(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    lower, upper = int(args.scalar("lower", -1)), int(args.scalar("upper", -1))
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, np.zeros((), x.dtype))
