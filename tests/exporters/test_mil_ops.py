"""Op-level tests of the MIL interpreter: tiny MIL programs, saved and read back from disk, compared
with PyTorch / NumPy references."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from mvit2_export.errors import UnsupportedOpError  # noqa: E402
from mvit2_export.exporters.coreml.mil import SUPPORTED_OPS, MilInterpreter, run_mlpackage  # noqa: E402
from mvit2_export.exporters.coreml.mil._registry import OPS  # noqa: E402

RNG = np.random.default_rng(0)


def _rand(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def _save(prog, tmp_path: Path, target=None, name: str = "m") -> Path:
    """Convert a MIL program as written (no optimisation passes, fp32) and save it."""
    ml = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=target or ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,
        pass_pipeline=ct.PassPipeline.EMPTY,
    )
    path = tmp_path / f"{name}.mlpackage"
    ml.save(str(path))
    return path


def _run(
    build: Callable, feeds: dict[str, np.ndarray], tmp_path: Path, target=None, dtypes=None
) -> tuple[dict[str, np.ndarray], MilInterpreter]:
    """Build a program from `build(*inputs)`, save, reload through the interpreter and run it."""
    opset = target or ct.target.iOS16
    specs = [mb.TensorSpec(shape=v.shape, dtype=(dtypes or {}).get(k, types.fp32)) for k, v in feeds.items()]
    prog = mb.program(input_specs=specs, opset_version=opset)(build)
    # mb.program names inputs after the function's parameters; feed them positionally.
    path = _save(prog, tmp_path, target=opset)
    interp = MilInterpreter.from_mlpackage(path)
    named = dict(zip(interp.input_names, feeds.values(), strict=False))
    return interp.run(named), interp


def _close(a: np.ndarray, b, tol: float = 1e-5) -> None:
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol)


T = torch.from_numpy

# -- convolution ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "groups,dil,stride,pad_type,pad",
    [
        (1, 1, 1, "valid", None),
        (1, 1, 2, "custom", [1, 1, 1, 1]),
        (1, 2, 1, "custom", [2, 0, 1, 3]),
        (4, 1, 1, "same", None),
        (8, 1, 2, "same", None),
        (2, 1, 2, "same_lower", None),
        (1, 3, 2, "same", None),
    ],
)
def test_conv2d(tmp_path, groups, dil, stride, pad_type, pad):
    x, w, b = _rand(2, 8, 9, 10), _rand(8, 8 // groups, 3, 3), _rand(8)
    kw = {"pad": pad} if pad else {}

    def build(x):
        return mb.conv(
            x=x,
            weight=w,
            bias=b,
            strides=[stride] * 2,
            pad_type=pad_type,
            dilations=[dil] * 2,
            groups=groups,
            name="y",
            **kw,
        )

    outs, interp = _run(build, {"x": x}, tmp_path)
    assert interp.op_histogram()["conv"] == 1
    if pad_type == "valid":
        p = [0, 0, 0, 0]
    elif pad_type == "custom":
        p = [pad[2], pad[3], pad[0], pad[1]]  # torch F.pad order: W then H
    else:  # TF SAME: output ceil(in/stride), the odd pixel of padding at the end (start for same_lower)
        p = []
        for size in (10, 9):
            keff = 2 * dil + 1
            total = max(0, (-(-size // stride) - 1) * stride + keff - size)
            lo, hi = total // 2, total - total // 2
            p += [lo, hi] if pad_type == "same" else [hi, lo]
    ref = F.conv2d(F.pad(T(x), p), T(w), T(b), stride=stride, dilation=dil, groups=groups)
    _close(outs["y"], ref, 1e-4)


def test_conv1d_and_conv_transpose(tmp_path):
    x1, w1 = _rand(1, 4, 11), _rand(6, 2, 3)
    x2, wt = _rand(1, 4, 5, 6), _rand(4, 3, 3, 3)

    def build(x1, x2):
        a = mb.conv(x=x1, weight=w1, strides=[2], pad_type="custom", pad=[1, 2], groups=2, name="a")
        b = mb.conv_transpose(x=x2, weight=wt, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], name="b")
        return a, b

    outs, _ = _run(build, {"x1": x1, "x2": x2}, tmp_path)
    _close(outs["a"], F.conv1d(F.pad(T(x1), [1, 2]), T(w1), stride=2, groups=2), 1e-4)
    _close(outs["b"], F.conv_transpose2d(T(x2), T(wt), stride=2, padding=1), 1e-4)


# -- pooling -------------------------------------------------------------------------------------


def test_pools(tmp_path):
    x = _rand(1, 3, 9, 8)

    def build(x):
        return (
            mb.avg_pool(
                x=x,
                kernel_sizes=[3, 3],
                strides=[2, 2],
                pad_type="custom",
                pad=[1, 1, 1, 1],
                exclude_padding_from_average=False,
                name="a",
            ),
            mb.avg_pool(
                x=x,
                kernel_sizes=[3, 3],
                strides=[2, 2],
                pad_type="custom",
                pad=[1, 1, 1, 1],
                exclude_padding_from_average=True,
                name="b",
            ),
            mb.max_pool(x=x, kernel_sizes=[2, 3], strides=[2, 2], pad_type="valid", name="c"),
            mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", ceil_mode=True, name="d"),
            mb.avg_pool(x=x, kernel_sizes=[9, 8], strides=[1, 1], pad_type="valid", name="e"),
        )

    outs, _ = _run(build, {"x": x}, tmp_path)
    t = T(x)
    _close(outs["a"], F.avg_pool2d(t, 3, 2, 1, count_include_pad=True))
    _close(outs["b"], F.avg_pool2d(t, 3, 2, 1, count_include_pad=False))
    _close(outs["c"], F.max_pool2d(t, (2, 3), 2))
    _close(outs["d"], F.max_pool2d(t, 2, 2, ceil_mode=True))
    _close(outs["e"], t.mean((2, 3), keepdim=True))


# -- normalisation / linear algebra ----------------------------------------------------------------


def test_norms(tmp_path):
    x = _rand(2, 4, 5, 6)
    mean, var, g, b = _rand(4), np.abs(_rand(4)) + 0.5, _rand(4), _rand(4)
    lg, lb = _rand(5, 6), _rand(5, 6)

    def build(x):
        return (
            mb.batch_norm(x=x, mean=mean, variance=var, gamma=g, beta=b, epsilon=1e-3, name="bn"),
            mb.instance_norm(x=x, gamma=g, beta=b, epsilon=1e-5, name="inorm"),
            mb.layer_norm(x=x, axes=[-2, -1], gamma=lg, beta=lb, epsilon=1e-5, name="ln"),
            mb.l2_norm(x=x, epsilon=1e-6, name="l2"),
        )

    outs, _ = _run(build, {"x": x}, tmp_path)
    t = T(x)
    _close(outs["bn"], F.batch_norm(t, T(mean), T(var), T(g), T(b), eps=1e-3), 1e-4)
    _close(outs["inorm"], F.instance_norm(t, weight=T(g), bias=T(b), eps=1e-5), 1e-4)
    _close(outs["ln"], F.layer_norm(t, (5, 6), T(lg), T(lb), eps=1e-5), 1e-4)
    _close(outs["l2"], x / np.sqrt((x**2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6), 1e-5)


def test_linear_matmul(tmp_path):
    x, w, b = _rand(2, 3, 5), _rand(4, 5), _rand(4)
    y = _rand(2, 4, 5)

    def build(x, y):
        return (
            mb.linear(x=x, weight=w, bias=b, name="lin"),
            mb.matmul(x=x, y=y, transpose_y=True, name="mm"),
            mb.matmul(x=y, y=y, transpose_x=True, name="mmt"),
        )

    outs, _ = _run(build, {"x": x, "y": y}, tmp_path)
    _close(outs["lin"], x @ w.T + b, 1e-5)
    _close(outs["mm"], x @ y.transpose(0, 2, 1), 1e-5)
    _close(outs["mmt"], y.transpose(0, 2, 1) @ y, 1e-5)


# -- elementwise -----------------------------------------------------------------------------------


def test_binary_ops(tmp_path):
    x, y = _rand(2, 3, 4), np.abs(_rand(1, 3, 1)) + 0.5

    def build(x, y):
        return (
            mb.add(x=x, y=y, name="add"),
            mb.sub(x=x, y=y, name="sub"),
            mb.mul(x=x, y=y, name="mul"),
            mb.real_div(x=x, y=y, name="div"),
            mb.pow(x=y, y=x, name="pow"),
            mb.maximum(x=x, y=y, name="max"),
            mb.minimum(x=x, y=y, name="min"),
            mb.select(cond=mb.greater(x=x, y=0.0), a=x, b=y, name="sel"),
        )

    outs, _ = _run(build, {"x": x, "y": y}, tmp_path)
    _close(outs["add"], x + y)
    _close(outs["sub"], x - y)
    _close(outs["mul"], x * y)
    _close(outs["div"], x / y)
    _close(outs["pow"], np.power(y, x), 1e-5)
    _close(outs["max"], np.maximum(x, y))
    _close(outs["min"], np.minimum(x, y))
    _close(outs["sel"], np.where(x > 0, x, np.broadcast_to(y, x.shape)))


def test_unary_and_activation_ops(tmp_path):
    x = _rand(2, 3, 4, 5)
    p = np.abs(x) + 0.1
    alpha = _rand(3)

    def build(x, p):
        return (
            mb.sqrt(x=p, name="sqrt"),
            mb.rsqrt(x=p, epsilon=1e-3, name="rsqrt"),
            mb.inverse(x=p, epsilon=1e-2, name="inverse"),
            mb.exp(x=x, name="exp"),
            mb.log(x=p, name="log"),
            mb.square(x=x, name="square"),
            mb.abs(x=x, name="abs"),
            mb.silu(x=x, name="silu"),
            mb.relu(x=x, name="relu"),
            mb.relu6(x=mb.mul(x=x, y=5.0), name="relu6"),
            mb.sigmoid(x=x, name="sigmoid"),
            mb.tanh(x=x, name="tanh"),
            mb.erf(x=x, name="erf"),
            mb.gelu(x=x, mode="EXACT", name="gelu"),
            mb.gelu(x=x, mode="TANH_APPROXIMATION", name="gelu_tanh"),
            mb.leaky_relu(x=x, alpha=0.2, name="leaky"),
            mb.elu(x=x, alpha=0.7, name="elu"),
            mb.prelu(x=x, alpha=alpha, name="prelu"),
            mb.softplus(x=x, name="softplus"),
            mb.softmax(x=x, axis=1, name="softmax"),
            mb.clip(x=x, alpha=-0.5, beta=0.7, name="clip"),
            mb.identity(x=x, name="ident"),
        )

    outs, _ = _run(build, {"x": x, "p": p}, tmp_path)
    t = T(x)
    _close(outs["sqrt"], np.sqrt(p))
    _close(outs["rsqrt"], 1 / np.sqrt(p + 1e-3))
    _close(outs["inverse"], 1 / (p + 1e-2))
    _close(outs["exp"], np.exp(x))
    _close(outs["log"], np.log(p))
    _close(outs["square"], x * x)
    _close(outs["abs"], np.abs(x))
    _close(outs["silu"], F.silu(t))
    _close(outs["relu"], F.relu(t))
    _close(outs["relu6"], F.relu6(t * 5))
    _close(outs["sigmoid"], torch.sigmoid(t))
    _close(outs["tanh"], torch.tanh(t))
    _close(outs["erf"], torch.erf(t))
    _close(outs["gelu"], F.gelu(t))
    _close(outs["gelu_tanh"], F.gelu(t, approximate="tanh"))
    _close(outs["leaky"], F.leaky_relu(t, 0.2))
    _close(outs["elu"], F.elu(t, 0.7))
    _close(outs["prelu"], F.prelu(t, T(alpha)))
    _close(outs["softplus"], F.softplus(t))
    _close(outs["softmax"], torch.softmax(t, 1))
    _close(outs["clip"], t.clamp(-0.5, 0.7))
    _close(outs["ident"], x)


def test_reductions(tmp_path):
    x = _rand(2, 3, 4, 5)

    def build(x):
        return (
            mb.reduce_mean(x=x, axes=[-2, -1], keep_dims=True, name="mean"),
            mb.reduce_sum(x=x, axes=[1], keep_dims=False, name="sum"),
            mb.reduce_max(x=x, axes=[0, 2], keep_dims=False, name="max"),
            mb.reduce_min(x=x, keep_dims=False, name="min_all"),
            mb.reduce_argmax(x=x, axis=1, keep_dims=False, name="argmax"),
            mb.reduce_argmax(x=x, axis=-1, keep_dims=True, name="argmax_kd"),
            mb.reduce_l2_norm(x=x, axes=[3], name="l2"),
        )

    outs, _ = _run(build, {"x": x}, tmp_path)
    _close(outs["mean"], x.mean(axis=(2, 3), keepdims=True))
    _close(outs["sum"], x.sum(axis=1))
    _close(outs["max"], x.max(axis=(0, 2)))
    _close(outs["min_all"], np.asarray(x.min()))
    assert outs["argmax"].dtype == np.int32
    np.testing.assert_array_equal(outs["argmax"], x.argmax(axis=1))
    np.testing.assert_array_equal(outs["argmax_kd"], x.argmax(axis=-1)[..., None])
    _close(outs["l2"], np.sqrt((x**2).sum(axis=3)))


# -- tensor / layout -------------------------------------------------------------------------------


def test_shape_ops(tmp_path):
    x = _rand(2, 6, 4, 4)
    y = _rand(2, 6, 4, 4)

    def build(x, y):
        parts = mb.split(x=x, split_sizes=[1, 2, 3], axis=1, name="sp")
        halves = mb.split(x=x, num_splits=2, axis=-1, name="h")
        return (
            mb.reshape(x=x, shape=[2, -1, 8], name="reshape"),
            mb.transpose(x=x, perm=[0, 2, 3, 1], name="transpose"),
            mb.concat(values=[x, y], axis=1, name="concat"),
            mb.concat(values=[x, y], axis=1, interleave=True, name="interleave"),
            mb.identity(x=parts[2], name="split2"),
            mb.identity(x=halves[1], name="half1"),
            mb.squeeze(x=mb.expand_dims(x=x, axes=[0]), axes=[0], name="sq"),
            mb.expand_dims(x=x, axes=[-1], name="ed"),
            mb.slice_by_index(x=x, begin=[0, 1, 0, 0], end=[2, 5, 4, 4], stride=[1, 2, 1, 1], name="sbi"),
            mb.slice_by_index(
                x=x,
                begin=[1, 0, 3, 0],
                end=[0, 0, 0, 4],
                stride=[1, 1, -1, 2],
                begin_mask=[False, True, False, True],
                end_mask=[False, True, True, False],
                squeeze_mask=[True, False, False, False],
                name="sbi_mask",
            ),
            mb.slice_by_size(x=x, begin=[0, 2, 1, 0], size=[-1, 3, 2, -1], name="sbs"),
            mb.tile(x=x, reps=[1, 2, 1, 3], name="tile"),
            mb.pad(x=x, pad=[1, 2, 0, 1], mode="constant", constant_val=0.5, name="padc"),
            mb.pad(x=x, pad=[1, 1, 2, 1], mode="reflect", name="padr"),
            mb.pad(x=x, pad=[1, 1, 2, 1], mode="replicate", name="pade"),
        )

    outs, _ = _run(build, {"x": x, "y": y}, tmp_path)
    t, u = T(x), T(y)
    _close(outs["reshape"], x.reshape(2, -1, 8))
    _close(outs["transpose"], x.transpose(0, 2, 3, 1))
    _close(outs["concat"], torch.cat([t, u], 1))
    _close(outs["interleave"], torch.stack([t, u], 2).reshape(2, 12, 4, 4))
    _close(outs["split2"], x[:, 3:])
    _close(outs["half1"], x[..., 2:])
    _close(outs["sq"], x)
    _close(outs["ed"], x[..., None])
    _close(outs["sbi"], x[0:2, 1:5:2])
    _close(outs["sbi_mask"], x[1, :, 3::-1, ::2])
    _close(outs["sbs"], x[:, 2:5, 1:3, :])
    _close(outs["tile"], np.tile(x, (1, 2, 1, 3)))
    _close(outs["padc"], F.pad(t, (0, 1, 1, 2), value=0.5))
    _close(outs["padr"], F.pad(t, (2, 1, 1, 1), mode="reflect"))
    _close(outs["pade"], F.pad(t, (2, 1, 1, 1), mode="replicate"))


def test_depth_space_ops(tmp_path):
    x = _rand(1, 8, 4, 6)

    def build(x):
        return (
            mb.pixel_shuffle(x=x, upscale_factor=2, name="ps"),
            mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2), name="pu"),
            mb.space_to_depth(x=x, block_size=2, name="s2d"),
            mb.depth_to_space(x=x, block_size=2, name="d2s"),
        )

    outs, _ = _run(build, {"x": x}, tmp_path)
    _close(outs["ps"], F.pixel_shuffle(T(x), 2))
    _close(outs["pu"], F.pixel_unshuffle(T(x), 2))
    # TensorFlow semantics in NCHW: go through NHWC and TF's block-major channel order.
    nhwc = x.transpose(0, 2, 3, 1)
    s2d = nhwc.reshape(1, 2, 2, 3, 2, 8).transpose(0, 1, 3, 2, 4, 5).reshape(1, 2, 3, 32)
    _close(outs["s2d"], s2d.transpose(0, 3, 1, 2))
    d2s = nhwc.reshape(1, 4, 6, 2, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(1, 8, 12, 2)
    _close(outs["d2s"], d2s.transpose(0, 3, 1, 2))


def test_gather(tmp_path):
    x = _rand(3, 5, 4)
    idx = np.array([[4, 0], [-1, 2]], dtype=np.int32)
    bidx = np.array([[1, 0, 3], [2, 2, 4], [0, 1, 1]], dtype=np.int32)

    def build(x):
        return (
            mb.gather(x=x, indices=idx, axis=1, name="g"),
            mb.gather(x=x, indices=bidx, axis=1, batch_dims=1, name="gb"),
            mb.gather_along_axis(x=x, indices=np.zeros((3, 2, 4), np.int32) + 1, axis=1, name="ga"),
        )

    outs, _ = _run(build, {"x": x}, tmp_path)
    _close(outs["g"], np.take(x, idx % 5, axis=1))
    _close(outs["gb"], np.stack([x[i][bidx[i]] for i in range(3)]))
    _close(outs["ga"], np.take_along_axis(x, np.ones((3, 2, 4), np.int64), axis=1))


# -- resampling ------------------------------------------------------------------------------------


def _legacy_tf_resize(x: np.ndarray, hout: int, wout: int) -> np.ndarray:
    """tf.image.resize(align_corners=False, half_pixel_centers=False): src = i * in / out."""
    out = np.zeros(x.shape[:-2] + (hout, wout), np.float64)
    h, w = x.shape[-2:]
    for i in range(hout):
        for j in range(wout):
            sy, sx = i * h / hout, j * w / wout
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            top = x[..., y0, x0] * (1 - fx) + x[..., y0, x1] * fx
            bot = x[..., y1, x0] * (1 - fx) + x[..., y1, x1] * fx
            out[..., i, j] = top * (1 - fy) + bot * fy
    return out


def test_resize_ops(tmp_path):
    x = _rand(1, 2, 3, 5)

    def build(x):
        return (
            mb.upsample_bilinear(
                x=x, scale_factor_height=2, scale_factor_width=3, align_corners=True, name="ub_ac"
            ),
            mb.upsample_bilinear(
                x=x, scale_factor_height=2, scale_factor_width=3, align_corners=False, name="ub_hp"
            ),
            mb.upsample_bilinear(
                x=x,
                scale_factor_height=2,
                scale_factor_width=2,
                align_corners=False,
                half_pixel_centers=False,
                name="ub_legacy",
            ),
            mb.resize_bilinear(
                x=x,
                target_size_height=7,
                target_size_width=4,
                sampling_mode="STRICT_ALIGN_CORNERS",
                name="rb_ac",
            ),
            mb.resize_bilinear(
                x=x, target_size_height=7, target_size_width=4, sampling_mode="UNALIGN_CORNERS", name="rb_un"
            ),
            mb.resize_bilinear(
                x=x, target_size_height=6, target_size_width=9, sampling_mode="DEFAULT", name="rb_def"
            ),
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3, name="un"),
            mb.resize_nearest_neighbor(x=x, target_size_height=6, target_size_width=10, name="rn"),
        )

    outs, _ = _run(build, {"x": x}, tmp_path)
    t = T(x)
    _close(outs["ub_ac"], F.interpolate(t, size=(6, 15), mode="bilinear", align_corners=True))
    _close(outs["ub_hp"], F.interpolate(t, size=(6, 15), mode="bilinear", align_corners=False))
    _close(outs["ub_legacy"], _legacy_tf_resize(x, 6, 10))
    _close(outs["rb_ac"], F.interpolate(t, size=(7, 4), mode="bilinear", align_corners=True))
    _close(outs["rb_un"], F.interpolate(t, size=(7, 4), mode="bilinear", align_corners=False))
    _close(outs["rb_def"], _legacy_tf_resize(x, 6, 9))
    _close(outs["un"], F.interpolate(t, scale_factor=(2, 3), mode="nearest"))
    _close(outs["rn"], F.interpolate(t, size=(6, 10), mode="nearest"))


# -- fp16 and casts --------------------------------------------------------------------------------


def test_fp16_program_stays_fp16(tmp_path):
    x = _rand(1, 4, 6, 6)
    w = _rand(4, 4, 3, 3).astype(np.float16)

    def build(x):
        h = mb.cast(x=x, dtype="fp16", name="h")
        c = mb.conv(x=h, weight=w, pad_type="same", name="c")
        s = mb.softmax(x=mb.silu(x=c), axis=1, name="s")
        return mb.cast(x=mb.reduce_sum(x=s, axes=[1], keep_dims=True), dtype="fp32", name="out"), c

    outs, interp = _run(build, {"x": x}, tmp_path)
    assert interp.is_fp16
    assert outs["c"].dtype == np.float16 and outs["out"].dtype == np.float32
    ref = F.conv2d(T(x), T(w.astype(np.float32)), padding=1)
    _close(outs["c"], ref, 2e-2)
    _close(outs["out"], np.ones((1, 1, 6, 6)), 2e-3)
    # fp16 rounding is applied between ops: every traced fp16 tensor is exactly representable.
    _, trace = interp.run({interp.input_names[0]: x}, trace=True)
    assert list(trace)[:2] == ["h", "c"]
    assert trace["c"].dtype == np.float16


def test_fp16_inputs_are_cast(tmp_path):
    x = _rand(2, 3)

    def build(x):
        return mb.add(x=x, y=np.float16(1.0), name="y")

    outs, interp = _run(build, {"x": x}, tmp_path, dtypes={"x": types.fp16})
    assert outs["y"].dtype == np.float16
    _close(outs["y"], x.astype(np.float16) + np.float16(1), 1e-3)


def test_cast_int(tmp_path):
    x = np.array([[-1.7, 2.5, 3.9]], np.float32)

    def build(x):
        return mb.cast(x=x, dtype="int32", name="i"), mb.round(x=x, name="r")

    outs, _ = _run(build, {"x": x}, tmp_path)
    np.testing.assert_array_equal(outs["i"], np.array([[-1, 2, 3]]))
    np.testing.assert_array_equal(outs["r"], np.round(x))


# -- compression -----------------------------------------------------------------------------------


def test_constexpr_ops_iOS16(tmp_path):
    q = RNG.integers(-128, 127, size=(4, 3), dtype=np.int8)
    scale = np.array([0.5, 0.25, 2.0, 1.0], np.float32)
    zp = np.array([1, -2, 0, 3], np.int8)
    lut = np.array([-1.5, 0.0, 0.25, 4.0], np.float32)  # 2-bit palette
    idx = RNG.integers(0, 4, size=(3, 5))
    packed = np.packbits(
        ((idx.reshape(-1, 1) >> np.arange(2)) & 1).astype(np.uint8).reshape(-1), bitorder="little"
    )

    def build(x):
        wq = mb.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale, axis=0, name="wq")
        wl = mb.constexpr_lut_to_dense(lut=lut, indices=packed, shape=np.array([3, 5], np.uint32), name="wl")
        return mb.linear(x=x, weight=wq, name="a"), mb.matmul(x=x, y=wl, name="b")

    x = _rand(2, 3)
    outs, interp = _run(build, {"x": x}, tmp_path)
    assert {"constexpr_affine_dequantize", "constexpr_lut_to_dense"} <= set(interp.op_histogram())
    wq = (q.astype(np.float32) - zp[:, None]) * scale[:, None]
    _close(outs["a"], x @ wq.T, 1e-5)
    _close(outs["b"], x @ lut[idx], 1e-5)


def test_constexpr_ops_iOS18(tmp_path):
    data = RNG.integers(-8, 7, size=(4, 6), dtype=np.int8)
    scale = RNG.uniform(0.1, 1.0, size=(4, 2)).astype(np.float32)  # blocks of 3 along axis 1
    offset = RNG.integers(-2, 2, size=(4, 2), dtype=np.int8)
    idx = (
        RNG.integers(0, 4, size=(6, 4)).astype(types.np_uint2_dtype)
        if hasattr(types, "np_uint2_dtype")
        else None
    )
    if idx is None:
        pytest.skip("coremltools without sub-byte dtypes")
    lut = _rand(2, 1, 4, 1)  # one 2-bit palette per half of axis 0

    def build(x):
        w1 = mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset, name="w1")
        w2 = mb.constexpr_lut_to_dense(indices=idx, lut=lut, name="w2")
        return mb.linear(x=x, weight=w1, name="a"), mb.matmul(x=x, y=w2, name="b")

    x = _rand(2, 6)
    outs, interp = _run(build, {"x": x}, tmp_path, target=ct.target.iOS18)
    assert {"constexpr_blockwise_shift_scale", "constexpr_lut_to_dense"} <= set(interp.op_histogram())
    w1 = (data.astype(np.float32) - np.repeat(offset, 3, axis=1)) * np.repeat(scale, 3, axis=1)
    _close(outs["a"], x @ w1.T, 1e-5)
    iv = np.asarray(idx).astype(np.int64)
    w2 = np.stack([lut[r // 3, 0, iv[r], 0] for r in range(6)])
    _close(outs["b"], x @ w2, 1e-5)


def test_quantize_dequantize_iOS17(tmp_path):
    x = _rand(2, 4)
    scale = np.array([0.05, 0.1, 0.2, 0.02], np.float32)

    def build(x):
        q = mb.quantize(
            input=x, scale=scale, zero_point=np.zeros(4, np.int8) + 3, axis=1, output_dtype="int8", name="q"
        )
        return mb.dequantize(input=q, scale=scale, zero_point=np.zeros(4, np.int8) + 3, axis=1, name="dq")

    outs, _ = _run(build, {"x": x}, tmp_path, target=ct.target.iOS17)
    ref = (np.clip(np.round(x / scale) + 3, -128, 127) - 3) * scale
    _close(outs["dq"], ref, 1e-6)


# -- errors and API ---------------------------------------------------------------------------------


def test_unknown_op_raises(tmp_path, monkeypatch):
    x = _rand(1, 2, 4, 4)

    def build(x):
        return mb.relu(x=mb.sigmoid(x=x), name="y")

    prog = mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS16)(build)
    path = _save(prog, tmp_path)
    interp = MilInterpreter.from_mlpackage(path)
    interp.check_supported()
    monkeypatch.delitem(OPS, "relu")
    with pytest.raises(UnsupportedOpError, match=r"relu.*'y'") as err:
        interp.check_supported()
    assert err.value.exit_code == 4
    with pytest.raises(UnsupportedOpError, match=r"op type 'relu' \(op 'y'\)"):
        interp.run({interp.input_names[0]: x})


def test_real_unsupported_op_is_lazy(tmp_path):
    x = _rand(1, 1, 4, 4)

    def build(x):
        return mb.random_uniform(shape=np.array([2, 2], np.int32), name="r"), mb.relu(x=x, name="y")

    prog = mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS16)(build)
    interp = MilInterpreter.from_mlpackage(_save(prog, tmp_path))  # loading never raises
    assert "random_uniform" not in SUPPORTED_OPS
    with pytest.raises(UnsupportedOpError, match="random_uniform"):
        interp.run({interp.input_names[0]: x})


def test_api_trace_histogram_and_helper(tmp_path):
    x = _rand(1, 3, 4, 4)

    def build(x):
        a = mb.add(x=x, y=1.0, name="a")
        return mb.mul(x=a, y=2.0, name="b")

    prog = mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS16)(build)
    path = _save(prog, tmp_path)
    interp = MilInterpreter.from_mlpackage(path)
    assert interp.output_names == ["b"] and not interp.is_fp16
    assert interp.op_histogram()["add"] == 1
    outs, trace = interp.run({interp.input_names[0]: x}, trace=True)
    assert list(trace) == ["a", "b"]
    _close(trace["a"], x + 1)
    _close(run_mlpackage(path, {interp.input_names[0]: x})["b"], (x + 1) * 2)
    with pytest.raises(Exception, match="shape"):
        interp.run({interp.input_names[0]: x[:, :2]})


@pytest.mark.parametrize(
    ("batch_axis_op", "why"),
    [
        (lambda x: mb.softmax(x=x, axis=0), "works along the batch axis"),
        (lambda x: mb.reduce_sum(x=x, axes=[-4, 1], keep_dims=True), "works along the batch axis"),
        (lambda x: mb.transpose(x=x, perm=[1, 0, 2, 3]), "moves the batch axis"),
        (lambda x: mb.reshape(x=x, shape=[16]), "without the leading batch axis"),
    ],
)
def test_a_program_that_mixes_images_is_not_batched(tmp_path, batch_axis_op, why):
    """Stacking images on the batch axis would be silently wrong for these ops (a softmax over one
    image becomes one over all of them): run_batch must see it in the program and run image by image."""

    def build(x):
        return mb.mul(x=batch_axis_op(mb.add(x=x, y=1.0)), y=2.0, name="out")

    shape = (1, 1, 4, 4)  # one channel: the transpose's result still leads with a 1
    prog = mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS16)(build)
    interp = MilInterpreter.from_mlpackage(_save(prog, tmp_path))
    assert why in interp.batch_blocker
    name = interp.input_names[0]
    feeds = [{name: _rand(*shape)} for _ in range(3)]
    for got, feed in zip(interp.run_batch(feeds), feeds, strict=True):
        np.testing.assert_array_equal(got["out"], interp.run(feed)["out"])


def test_less_common_ops(tmp_path):
    x = _rand(2, 3, 4, 4)
    v = _rand(2, 5)
    idx = np.array([[0, 2], [1, 0]], np.int32)

    def build(x, v):
        top = mb.topk(x=v, k=2, axis=-1, name="topk")
        return (
            mb.identity(x=top[0], name="topv"),
            mb.identity(x=top[1], name="topi"),
            mb.cumsum(x=v, axis=1, exclusive=True, name="cumsum"),
            mb.cumsum(x=v, axis=1, reverse=True, name="rcumsum"),
            mb.band_part(x=x, lower=1, upper=0, name="band"),
            mb.einsum(
                values=(x, mb.transpose(x=x, perm=[0, 3, 2, 1])), equation="nchw,nwhu->nchu", name="einsum"
            ),
            mb.sigmoid_hard(x=x, alpha=0.3, beta=0.4, name="hsig"),
            mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", name="l2pool"),
            mb.local_response_norm(x=x, size=3, alpha=1e-2, beta=0.75, k=1.0, name="lrn"),
            mb.batch_to_space(
                x=mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 0], [0, 0]]),
                block_shape=[2, 2],
                crops=[[0, 0], [0, 0]],
                name="b2s",
            ),
            mb.gather_nd(x=x, indices=idx, name="gnd"),
            mb.stack(values=(v, v), axis=1, name="stack"),
            mb.flatten2d(x=x, axis=2, name="flat"),
            mb.reverse(x=x, axes=[1, 3], name="rev"),
            mb.floor_div(x=v, y=0.3, name="fdiv"),
            mb.mod(x=v, y=0.3, name="mod"),
            mb.reduce_prod(x=v, axes=[1], name="prod"),
            mb.reduce_log_sum_exp(x=v, axes=[1], name="lse"),
            mb.softsign(x=v, name="softsign"),
            mb.thresholded_relu(x=v, alpha=0.5, name="trelu"),
            mb.argsort(x=v, axis=-1, ascending=True, name="argsort"),
            mb.one_hot(
                indices=mb.cast(x=mb.reduce_argmax(x=v, axis=1), dtype="int32"),
                one_hot_vector_size=5,
                name="onehot",
            ),
        )

    outs, _ = _run(build, {"x": x, "v": v}, tmp_path)
    t = T(x)
    tv, ti = torch.topk(T(v), 2, dim=-1)
    _close(outs["topv"], tv)
    np.testing.assert_array_equal(outs["topi"], ti.numpy())
    _close(outs["cumsum"], np.cumsum(v, axis=1) - v)
    _close(outs["rcumsum"], np.flip(np.cumsum(np.flip(v, 1), axis=1), 1))
    _close(outs["band"], torch.tril(t) - torch.tril(t, -2))
    _close(outs["einsum"], np.einsum("nchw,nwhu->nchu", x, x.transpose(0, 3, 2, 1)), 1e-5)
    _close(outs["hsig"], np.clip(0.3 * x + 0.4, 0, 1))
    _close(outs["l2pool"], torch.sqrt(F.avg_pool2d(t * t, 2) * 4))
    _close(outs["lrn"], F.local_response_norm(t, 3, alpha=1e-2, beta=0.75, k=1.0), 1e-5)
    _close(outs["b2s"], x)
    _close(outs["gnd"], x[[0, 1], [2, 0]])
    _close(outs["stack"], np.stack([v, v], 1))
    _close(outs["flat"], x.reshape(6, 16))
    _close(outs["rev"], x[:, ::-1, :, ::-1])
    _close(outs["fdiv"], np.floor_divide(v, np.float32(0.3)))
    _close(outs["mod"], np.mod(v, np.float32(0.3)), 1e-5)
    _close(outs["prod"], v.prod(axis=1), 1e-5)
    _close(outs["lse"], torch.logsumexp(T(v), 1))
    _close(outs["softsign"], F.softsign(T(v)))
    _close(outs["trelu"], np.where(v > 0.5, v, 0))
    np.testing.assert_array_equal(outs["argsort"], np.argsort(v, axis=-1))
    np.testing.assert_array_equal(outs["onehot"], np.eye(5)[v.argmax(1)])


def test_sdpa_iOS18(tmp_path):
    q, k, v = _rand(1, 2, 3, 4), _rand(1, 2, 5, 4), _rand(1, 2, 5, 4)

    def build(q, k, v):
        return mb.scaled_dot_product_attention(query=q, key=k, value=v, name="y")

    outs, _ = _run(build, {"q": q, "k": k, "v": v}, tmp_path, target=ct.target.iOS18)
    _close(outs["y"], F.scaled_dot_product_attention(T(q), T(k), T(v)), 1e-5)


def test_half_casts_round_as_numpy_does():
    """The interpreter's fp16 <-> fp32 casts (torch's conversion for large tensors, numpy's otherwise) are
    bit-identical to numpy's astype: every fp16 value up, and fp32 values down, halfway points between
    adjacent halves (ties to even), their neighbours, overflow, subnormals and random bit patterns;
    strided, negative-stride and read-only inputs included."""
    from mvit2_export.exporters.coreml.mil._registry import cast

    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    up, nan = cast(halves, np.float32), np.isnan(halves)  # NaN payloads may differ (quieted): not compared
    assert up.dtype == np.float32 and np.array_equal(np.isnan(up), nan)
    assert np.array_equal(up[~nan].view(np.uint32), halves[~nan].astype(np.float32).view(np.uint32))
    finite = np.unique(halves[np.isfinite(halves)].astype(np.float64))
    mid = ((finite[:-1] + finite[1:]) / 2).astype(np.float32)
    bits = np.random.default_rng(1).integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    edges = np.float32([65504, 65519.99, 65520, 1e9, 6e-8, 3e-8, 2.9e-8, -0.0, np.inf, -np.inf])
    for x in (mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf)), edges,
              bits.view(np.float32), mid.reshape(2, -1)[:, ::3], mid[::-1]):  # fmt: skip
        with np.errstate(all="ignore"):
            want = x.astype(np.float16)
        got = cast(x, np.float16)
        nan = np.isnan(want)
        assert got.shape == x.shape and np.array_equal(nan, np.isnan(got))
        assert np.array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16))
    frozen = mid.copy()
    frozen.flags.writeable = False
    assert np.array_equal(cast(frozen, np.float16).view(np.uint16), mid.astype(np.float16).view(np.uint16))
