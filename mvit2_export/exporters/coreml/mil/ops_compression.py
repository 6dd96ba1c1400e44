"""Weight-compression ops (coremltools.optimize): dequantisation, palettisation, sparsity.

Semantics follow the iOS16 constexpr_ops.py, iOS17 quantization_ops.py and iOS18 compression.py
op definitions. These are all constant-only except quantize/dequantize; the interpreter caches
constexpr_* results after the first run.
"""

from __future__ import annotations

import numpy as np

from ._registry import OpArgs, cast, norm_axis, register


def _along_axis(v: np.ndarray, rank: int, axis: int | None) -> np.ndarray:
    """Broadcast a scalar or per-axis vector (scale / zero point) against a tensor of `rank`."""
    v = np.asarray(v)
    if v.ndim == 0 or v.ndim == rank or axis is None:
        return v
    shape = [1] * rank
    shape[norm_axis(axis, rank)] = v.size
    return v.reshape(shape)


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unpack LSB-first packed n-bit unsigned values (coremltools' pack_elements_into_bits order)."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8).reshape(-1), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.uint32)
    return (bits << np.arange(nbits, dtype=np.uint32)).sum(axis=1)


@register("constexpr_affine_dequantize")
def _affine_dequantize(args: OpArgs) -> np.ndarray:
    q = args.arr("quantized_data")
    axis = int(args.scalar("axis", 0))
    scale = np.asarray(args["scale"])
    zp = _along_axis(args.arr("zero_point").astype(np.float32), q.ndim, axis)
    return ((q.astype(np.float32) - zp) * _along_axis(scale.astype(np.float32), q.ndim, axis)).astype(
        scale.dtype
    )


@register("dequantize")
def _dequantize(args: OpArgs) -> np.ndarray:
    x = args.arr("input")
    axis = args.scalar("axis")
    axis = None if axis is None else int(axis)
    scale = np.asarray(args["scale"])
    y = x.astype(np.float32)
    if "zero_point" in args:
        y = y - _along_axis(args.arr("zero_point").astype(np.float32), x.ndim, axis)
    return cast(y * _along_axis(scale.astype(np.float32), x.ndim, axis), scale.dtype)


_QUANT_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}


@register("quantize")
def _quantize(args: OpArgs) -> np.ndarray:
    x = cast(args.arr("input"), np.float32)
    axis = args.scalar("axis")
    axis = None if axis is None else int(axis)
    dt = np.dtype(_QUANT_DTYPES[str(args.scalar("output_dtype"))])
    y = np.round(x / _along_axis(args.arr("scale").astype(np.float32), x.ndim, axis))
    if "zero_point" in args:
        y = y + _along_axis(args.arr("zero_point").astype(np.float32), x.ndim, axis)
    info = np.iinfo(dt)
    return np.clip(y, info.min, info.max).astype(dt)


@register("constexpr_cast")
def _constexpr_cast(args: OpArgs) -> np.ndarray:
    return args.arr("source_val").astype(np.float32)


def _lut_iOS18(indices: np.ndarray, lut: np.ndarray, vector_axis: int | None) -> np.ndarray:
    # lut: [*block_counts, 2^n, vector_size]; each block of `indices` has its own palette.
    idx = indices.astype(np.int64)
    rank = idx.ndim
    vec = lut.shape[-1]
    block = [d // b for d, b in zip(idx.shape, lut.shape[:rank], strict=False)]
    # Palette for each element: repeat lut's block dims up to the indices' shape.
    pal = lut
    for ax, b in enumerate(block):
        if b > 1:
            pal = np.repeat(pal, b, axis=ax)
    # pal: [*idx.shape, 2^n, vec] -> pick entry idx at every position.
    out = np.take_along_axis(pal, idx[..., None, None], axis=rank)[..., 0, :]  # [*idx.shape, vec]
    if vec == 1:
        return out[..., 0]
    # Vector palettisation: each index expands to `vec` consecutive elements along vector_axis.
    ax = norm_axis(int(vector_axis or 0), rank)
    out = np.moveaxis(out, -1, ax + 1)  # [..., idx_ax, vec, ...]
    shape = list(idx.shape)
    shape[ax] *= vec
    return out.reshape(shape)


@register("constexpr_lut_to_dense")
def _lut_to_dense(args: OpArgs) -> np.ndarray:
    lut = args.arr("lut")
    if "shape" in args:  # iOS16: flat LUT of 2^n entries, indices bit-packed into uint8
        shape = args.ints("shape")
        nbits = int(np.log2(lut.size))
        idx = _unpack_bits(args["indices"], nbits, int(np.prod(shape)))
        return lut[idx].reshape(shape)
    axis = args.scalar("vector_axis")
    return _lut_iOS18(args.arr("indices"), lut, None if axis is None else int(axis))


def _blockwise(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """iOS18 blockwise shift/scale: scale (and offset) repeat over blocks of data."""
    out = data.astype(np.float32)
    reps = [d // s for d, s in zip(data.shape, scale.shape, strict=False)]
    s = scale.astype(np.float32)
    o = None if offset is None else offset.astype(np.float32)
    for ax, r in enumerate(reps):
        if r > 1:
            s = np.repeat(s, r, axis=ax)
            o = None if o is None else np.repeat(o, r, axis=ax)
    if o is not None:
        out = out - o
    return (out * s).astype(scale.dtype)


@register("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(args: OpArgs) -> np.ndarray:
    offset = args.get("offset")
    return _blockwise(args.arr("data"), args.arr("scale"), None if offset is None else np.asarray(offset))


@register("constexpr_sparse_to_dense")
def _sparse_to_dense(args: OpArgs) -> np.ndarray:
    data = args.arr("nonzero_data")
    if "shape" in args:  # iOS16: bitmask packed into uint8, LSB first
        shape = args.ints("shape")
        mask = np.unpackbits(args.arr("mask").astype(np.uint8), bitorder="little")[: int(np.prod(shape))]
        out = np.zeros(int(np.prod(shape)), data.dtype)
        out[mask != 0] = data
        return out.reshape(shape)
    mask = args.arr("mask")
    out = np.zeros(mask.shape, data.dtype)
    out[mask != 0] = data
    return out


@register("constexpr_lut_to_sparse")
def _lut_to_sparse(args: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    mask = args.arr("indices_mask")
    idx = np.zeros(mask.shape, np.int64)
    idx[mask != 0] = args.arr("indices_nonzero_data")
    axis = args.scalar("vector_axis")
    dense = _lut_iOS18(idx, args.arr("lut"), None if axis is None else int(axis))
    if axis is not None and args.arr("lut").shape[-1] > 1:
        mask = np.repeat(mask, args.arr("lut").shape[-1], axis=int(axis))
    return mask, dense[mask != 0].reshape(-1)


@register("constexpr_sparse_blockwise_shift_scale")
def _sparse_blockwise(args: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    mask = args.arr("data_mask")
    data = np.zeros(mask.shape, args.arr("nonzero_data").dtype)
    data[mask != 0] = args.arr("nonzero_data")
    offset = args.get("offset")
    deq = _blockwise(data, args.arr("scale"), None if offset is None else np.asarray(offset))
    return mask, deq[mask != 0].reshape(-1)
