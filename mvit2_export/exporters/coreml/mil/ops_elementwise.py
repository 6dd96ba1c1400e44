"""Elementwise unary/binary ops, activations and casts.

Binary arithmetic runs in the operands' dtype (fp16 stays fp16, numpy rounds each op correctly).
Transcendentals are evaluated in float32 and rounded once by the interpreter's output cast.
"""

from __future__ import annotations

import math

import numpy as np

from ._registry import OpArgs, f32, register

_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _binary(args: OpArgs) -> np.ndarray:
    x, y = np.asarray(args["x"]), np.asarray(args["y"])
    return _BINARY[args.op_type](x, y)


for _name in _BINARY:
    register(_name)(_binary)


@register("floor_div")
def _floor_div(args: OpArgs) -> np.ndarray:
    return np.floor_divide(args.arr("x"), args.arr("y"))


@register("mod")
def _mod(args: OpArgs) -> np.ndarray:
    # MIL mod follows floor division (sign of the divisor), like numpy.
    return np.mod(args.arr("x"), args.arr("y"))


# Unary ops evaluated in float32 (or the exact dtype for sign/abs-like ops).
_UNARY_F32 = {
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "cos": np.cos,
    "cosh": np.cosh,
    "sin": np.sin,
    "sinh": np.sinh,
    "tan": np.tan,
    "tanh": np.tanh,
    "exp": np.exp,
    "exp2": np.exp2,
    "sqrt": np.sqrt,
    "erf": np.vectorize(math.erf, otypes=[np.float32]),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
}
_UNARY_EXACT = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "round": np.round,  # MIL round is half-to-even like numpy
    "sign": np.sign,
    "square": np.square,
    "relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "logical_not": np.logical_not,
    "identity": lambda x: x.copy(),
}


def _unary_f32(args: OpArgs) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _UNARY_F32[args.op_type](f32(args.arr("x")))


def _unary_exact(args: OpArgs) -> np.ndarray:
    return _UNARY_EXACT[args.op_type](args.arr("x"))


for _name in _UNARY_F32:
    register(_name)(_unary_f32)
for _name in _UNARY_EXACT:
    register(_name)(_unary_exact)


# Ops with an epsilon input: MIL adds epsilon *before* the function (defaults from iOS15 defs).
@register("rsqrt")
def _rsqrt(args: OpArgs) -> np.ndarray:
    return 1.0 / np.sqrt(f32(args.arr("x")) + args.scalar("epsilon", 1e-12))


@register("inverse")
def _inverse(args: OpArgs) -> np.ndarray:
    return 1.0 / (f32(args.arr("x")) + args.scalar("epsilon", 1e-4))


@register("log")
def _log(args: OpArgs) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(f32(args.arr("x")) + args.scalar("epsilon", 1e-45))


@register("clip")
def _clip(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    return np.minimum(np.maximum(x, np.asarray(args["alpha"], x.dtype)), np.asarray(args["beta"], x.dtype))


@register("threshold")
def _threshold(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    return np.maximum(x, np.asarray(args["alpha"], x.dtype))


@register("relu6")
def _relu6(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    return np.clip(x, 0, 6).astype(x.dtype)


@register("leaky_relu")
def _leaky_relu(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    return np.where(x >= 0, x, x * args.scalar("alpha", 0.01))


@register("elu")
def _elu(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    return np.where(x > 0, x, args.scalar("alpha", 1.0) * np.expm1(np.minimum(x, 0)))


@register("gelu")
def _gelu(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    mode = args.scalar("mode", "EXACT")
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + _UNARY_F32["erf"](x / math.sqrt(2)))


@register("prelu")
def _prelu(args: OpArgs) -> np.ndarray:
    # alpha is per channel, channel axis = -3 (MIL prelu: x is [B, C, *D]).
    x = f32(args.arr("x"))
    alpha = f32(args.arr("alpha")).reshape((-1,) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, x * alpha)


@register("sigmoid_hard")
def _hard_sigmoid(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    return np.clip(args.scalar("alpha", 0.2) * x + args.scalar("beta", 0.5), 0.0, 1.0)


@register("clamped_relu")
def _clamped_relu(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    return np.minimum(np.where(x >= 0, x, x * args.scalar("alpha")), args.scalar("beta"))


@register("scaled_tanh")
def _scaled_tanh(args: OpArgs) -> np.ndarray:
    return args.scalar("alpha", 1.0) * np.tanh(args.scalar("beta", 1.0) * f32(args.arr("x")))


@register("linear_activation")
def _linear_activation(args: OpArgs) -> np.ndarray:
    return args.scalar("alpha") * f32(args.arr("x")) + args.scalar("beta", 0.0)


@register("thresholded_relu")
def _thresholded_relu(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    return np.where(x > args.scalar("alpha", 1.0), x, np.zeros((), x.dtype))


@register("softmax")
def _softmax(args: OpArgs) -> np.ndarray:
    x = f32(args.arr("x"))
    axis = int(args.scalar("axis", -1))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


_CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


@register("cast")
def _cast(args: OpArgs) -> np.ndarray:
    x = args.arr("x")
    dt = np.dtype(_CAST_DTYPES[str(args.scalar("dtype"))])
    if dt.kind in "iu" and x.dtype.kind == "f":
        x = np.trunc(x)  # float -> int casts truncate toward zero
    return x.astype(dt)
