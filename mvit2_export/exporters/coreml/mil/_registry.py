"""Op registry and the argument view each op implementation receives.

Every MIL op type maps to one small function `fn(args) -> array | tuple[array, ...]`. The
interpreter casts each result to the dtype the program declares for that output, so an
implementation may compute in float32 and rely on that final cast to round to fp16.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Value = Any  # np.ndarray for tensors; str / bool / tuple for parameters and non-tensor outputs
OpResult = Value | tuple[Value, ...]
OpFn = Callable[["OpArgs"], OpResult]

OPS: dict[str, OpFn] = {}


def register(*op_types: str) -> Callable[[OpFn], OpFn]:
    """Register one implementation under one or more MIL op type names."""

    def deco(fn: OpFn) -> OpFn:
        for t in op_types:
            if t in OPS:
                raise RuntimeError(f"MIL op {t!r} registered twice")
            OPS[t] = fn
        return fn

    return deco


@dataclass
class OpArgs:
    """Resolved inputs of one op: `args["x"]` is a value, `args.get(name, default)` for optional ones."""

    op_type: str
    name: str
    values: dict[str, Value]
    out_dtypes: Sequence[np.dtype | None] = field(default_factory=tuple)
    batch: int = 1  # images stacked on axis 0 (MilInterpreter.run_batch); the program declares 1

    def __getitem__(self, key: str) -> Value:
        if key not in self.values:
            raise KeyError(f"MIL op {self.op_type} ({self.name}) has no input {key!r}")
        return self.values[key]

    def __contains__(self, key: str) -> bool:
        return self.values.get(key) is not None

    def get(self, key: str, default: Value = None) -> Value:
        v = self.values.get(key)
        return default if v is None else v

    def arr(self, key: str) -> np.ndarray:
        return np.asarray(self[key])

    def ints(self, key: str, default: Sequence[int] | None = None) -> list[int]:
        v = self.get(key)
        if v is None:
            if default is None:
                raise KeyError(f"MIL op {self.op_type} ({self.name}) needs input {key!r}")
            return list(default)
        return [int(i) for i in np.asarray(v).reshape(-1)]

    def scalar(self, key: str, default: Any = None) -> Any:
        v = self.get(key)
        if v is None:
            return default
        a = np.asarray(v)
        return a.item() if a.size == 1 else a

    def out_dtype(self, i: int = 0) -> np.dtype | None:
        return self.out_dtypes[i] if i < len(self.out_dtypes) else None


_HALF_PAIRS = {(np.dtype(np.float16), np.dtype(np.float32)), (np.dtype(np.float32), np.dtype(np.float16))}
_TORCH_CAST_MIN = 4096  # below this, torch's per-call overhead outweighs its faster conversion
# torch parallelises a copy of more elements than its grain size (32768) over its OpenMP threads, whose
# spinning then slows numpy's OpenBLAS threads down (measured: 98 -> 253 ms per image); chunks below the
# grain size keep every conversion on the calling thread.
_TORCH_CHUNK = 32768


def cast(x: np.ndarray, dtype: Any) -> np.ndarray:
    """`x.astype(dtype)`. fp16 <-> fp32 of large tensors goes through torch: numpy 2.4 converts halves one
    element at a time (~4.5 ns each on an AVX2 host), torch with F16C (~1.5 ns single-threaded), and the
    conversions were a third of the interpreter's time. Both round to nearest even: every fp16 value and
    random fp32 bit patterns convert bit-identically (tests/exporters/test_mil_ops.py checks)."""
    dt = np.dtype(dtype)
    if x.dtype == dt:
        return x
    if (x.dtype, dt) not in _HALF_PAIRS or x.size < _TORCH_CAST_MIN:
        return x.astype(dt)
    import torch  # here: most programs the interpreter runs never cast a large half tensor

    flat = np.ascontiguousarray(x).reshape(-1)
    if flat.flags.writeable:
        src = torch.from_numpy(flat)
    else:  # a constant: torch warns that it cannot protect a read-only array, and it is only read here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            src = torch.from_numpy(flat)
    out = torch.empty(src.numel(), dtype=torch.float16 if dt == np.float16 else torch.float32)
    for i in range(0, src.numel(), _TORCH_CHUNK):
        out[i : i + _TORCH_CHUNK].copy_(src[i : i + _TORCH_CHUNK])
    return out.numpy().reshape(x.shape)


def f32(x: np.ndarray) -> np.ndarray:
    """Upcast fp16 (and ints) to float32 for ops we accumulate in fp32; the output cast rounds back."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else cast(x, np.float32)


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
