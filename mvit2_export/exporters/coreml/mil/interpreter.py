"""NumPy reference interpreter for the `main` function of a saved Core ML mlprogram.

Precision policy (what "fp16 as the device would" means here): every op result is cast to the
dtype the program declares for it, so fp16 tensors stay numpy float16 between ops. Elementwise
arithmetic on fp16 runs in numpy float16 (correctly rounded per op). Ops that accumulate
(conv, linear, matmul, reductions, softmax, normalisations) and transcendental activations upcast to
float32 and round the result to fp16 once, matching the fp32 accumulators of the GPU/ANE kernels
more closely than a pure fp16 accumulation would.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from ....errors import UnsupportedOpError, UsageError
from . import ops_compression, ops_elementwise, ops_nn, ops_tensor  # noqa: F401  (register ops)
from ._registry import OPS, OpArgs, Value, cast, norm_axis
from .loader import ImageInput, LoadedProgram, MilOp, load_mlpackage

# Ops whose result only depends on constants: computed once and cached, and left out of traces.
_CONST_PREFIX = "constexpr_"


class MilInterpreter:
    """Execute a saved mlprogram with NumPy. Build with `MilInterpreter.from_mlpackage(path)`."""

    def __init__(self, program: LoadedProgram) -> None:
        self.program = program
        self._const_cache: dict[str, Value] = {}
        self._batching: bool | None = None  # run_batch: None until its first batch is verified

    @classmethod
    def from_mlpackage(cls, path: str | Path) -> MilInterpreter:
        return cls(load_mlpackage(path))

    @property
    def input_names(self) -> list[str]:
        return list(self.program.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self.program.output_names)

    @property
    def class_labels(self) -> list[str] | None:
        return self.program.class_labels

    @property
    def is_fp16(self) -> bool:
        """True if any non-constant op computes an fp16 tensor."""
        fp16 = np.dtype(np.float16)
        return any(d == fp16 for op in self.program.ops if op.type != "const" for d in op.out_dtypes) or any(
            d == fp16 for d in self.program.input_dtypes.values()
        )

    def op_histogram(self) -> collections.Counter[str]:
        return collections.Counter(op.type for op in self.program.ops)

    def unsupported_ops(self) -> list[MilOp]:
        return [op for op in self.program.ops if op.type != "const" and op.type not in OPS]

    def check_supported(self) -> None:
        """Raise UnsupportedOpError naming every op type the interpreter cannot execute."""
        missing = self.unsupported_ops()
        if missing:
            kinds = sorted({op.type for op in missing})
            raise UnsupportedOpError(
                f"MIL interpreter does not implement op type(s) {', '.join(kinds)} "
                f"(first: {missing[0].type} {missing[0].name!r})"
            )

    # -- inputs -------------------------------------------------------------------------------

    def _prepare_feed(self, name: str, value: Any) -> np.ndarray:
        image = self.program.image_inputs.get(name)
        arr = _image_to_tensor(value, image) if image is not None else np.asarray(value)
        want = self.program.input_shapes.get(name)
        if want is not None and tuple(arr.shape) != want:
            raise UsageError(f"input {name!r} has shape {tuple(arr.shape)}, the program expects {want}")
        return arr.astype(self.program.input_dtypes[name], copy=False)

    # -- execution ----------------------------------------------------------------------------

    @overload
    def run(self, feeds: dict[str, Any], trace: Literal[False] = False) -> dict[str, np.ndarray]: ...

    @overload
    def run(
        self, feeds: dict[str, Any], trace: Literal[True]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]: ...

    def run(self, feeds: dict[str, Any], trace: bool = False) -> Any:
        """Run `main`. Returns outputs, or (outputs, {op output name: array}) with trace=True."""
        unknown = set(feeds) - set(self.program.input_names)
        missing = set(self.program.input_names) - set(feeds)
        if unknown or missing:
            raise UsageError(
                f"feeds must be exactly {self.program.input_names}; missing {sorted(missing)}, "
                f"unexpected {sorted(unknown)}"
            )
        env: dict[str, Value] = {n: self._prepare_feed(n, v) for n, v in feeds.items()}
        recorded: dict[str, np.ndarray] = {}
        with _single_threaded_blas():
            self._run_ops(env, recorded, trace)
        outs = self._collect_outputs(env)
        return (outs, recorded) if trace else outs

    def run_batch(self, feeds: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
        """`run` on each feed, bit for bit, computed as one batch where that is possible.

        The program declares a batch of 1; the images are stacked on that axis and every op runs once
        for all of them (~1.7x faster per image at width 0.5 @ 128 W8A8, 3x for fp32 @ 64: the per-op
        overhead is shared). Exactness: element-wise ops round per element whatever the batch, and the
        products call BLAS once per image (ops_nn._per_image_product). A program whose ops could mix or
        drop the batch axis (`batch_blocker`) runs image by image, and so does one whose first batched
        image differs in any bit from that image run alone (checked once per interpreter)."""
        feeds = list(feeds)
        if len(feeds) < 2 or self._batching is False or self.batch_blocker is not None:
            return [self.run(f) for f in feeds]
        try:
            outs = self._run_batched(feeds)
        except _NotBatchable:
            self._batching = False
            return [self.run(f) for f in feeds]
        if self._batching is None:
            alone = self.run(feeds[0])
            self._batching = alone.keys() == outs[0].keys() and all(
                np.array_equal(alone[k], outs[0][k]) for k in alone
            )
            if not self._batching:
                return [alone, *(self.run(f) for f in feeds[1:])]
        return outs

    @functools.cached_property
    def batch_blocker(self) -> str | None:
        """Why this program cannot run a batch of images on its batch axis, or None. Every op's declared
        result must lead with that axis (size 1), no op may take axis 0 as an `axis`/`axes` argument
        (a reduction, softmax or concat there would mix images) and no transpose may move it."""
        consts = {op.outputs[0]: op.const_value for op in self.program.ops if op.type == "const"}
        shapes = {n: s for op in self.program.ops for n, s in zip(op.outputs, op.out_shapes, strict=False)}
        shapes.update(self.program.input_shapes)
        if any(not s or s[0] != 1 for s in self.program.input_shapes.values()):
            return "an input without a leading batch of 1"
        for op in self.program.ops:
            if op.type == "const" or op.type.startswith(_CONST_PREFIX) or op.type == "classify":
                continue
            if any(s is not None and (not s or s[0] != 1) for s in op.out_shapes):
                return f"{op.type} {op.name!r} has a result without the leading batch axis"
            x = op.inputs.get("x")
            known = shapes.get(x) if isinstance(x, str) else op.out_shapes[0] if op.out_shapes else None
            rank = len(known or ())
            for key in ("axis", "axes", "perm"):
                ref = op.inputs.get(key)
                value = consts.get(ref) if isinstance(ref, str) else None
                if value is None:
                    continue
                axes = [int(a) for a in np.asarray(value).reshape(-1)]
                if key == "perm" and axes and norm_axis(axes[0], rank) != 0:
                    return f"{op.type} {op.name!r} moves the batch axis"
                if key != "perm" and rank and 0 in [norm_axis(a, rank) for a in axes]:
                    return f"{op.type} {op.name!r} works along the batch axis"
        return None

    @functools.cached_property
    def _classify(self) -> MilOp | None:
        return next((op for op in self.program.ops if op.type == "classify"), None)

    def _run_batched(self, feeds: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
        for f in feeds:
            if set(f) != set(self.program.input_names):
                return [self.run(f) for f in feeds]  # run raises the usage error
        batch = len(feeds)
        env: dict[str, Value] = {
            n: np.concatenate([self._prepare_feed(n, f[n]) for f in feeds]) for n in self.program.input_names
        }
        with _single_threaded_blas():
            self._run_ops(env, {}, False, batch)
        outs = self._collect_outputs(env)
        per_label = set(self._classify.outputs) if self._classify is not None else set()
        return [
            {k: (np.asarray(v[i]) if k in per_label else v[i : i + 1]) for k, v in outs.items()}
            for i in range(batch)
        ]

    def _run_ops(
        self, env: dict[str, Value], recorded: dict[str, np.ndarray], trace: bool, batch: int = 1
    ) -> None:
        for op in self.program.ops:
            if op.type == "const":
                env[op.outputs[0]] = op.const_value
                continue
            cached = op.type.startswith(_CONST_PREFIX) and op.name in self._const_cache
            # a constexpr op decompresses a constant: no image, no batch
            results = (
                self._const_cache[op.name]
                if cached
                else self._execute(op, env, 1 if op.type.startswith(_CONST_PREFIX) else batch)
            )
            if op.type.startswith(_CONST_PREFIX):
                self._const_cache[op.name] = results
            for out_name, val in zip(op.outputs, results, strict=False):
                env[out_name] = val
                if trace and not op.type.startswith(_CONST_PREFIX) and isinstance(val, np.ndarray):
                    recorded[out_name] = val

    def _execute(self, op: MilOp, env: dict[str, Value], batch: int = 1) -> tuple[Value, ...]:
        fn = OPS.get(op.type)
        if fn is None or op.has_blocks:
            raise UnsupportedOpError(
                f"MIL interpreter does not implement op type {op.type!r} (op {op.name!r})"
            )
        values = {
            k: tuple(env[n] for n in v) if isinstance(v, tuple) else env[v] for k, v in op.inputs.items()
        }
        res = fn(OpArgs(op.type, op.name, values, op.out_dtypes, batch))
        results = res if isinstance(res, tuple) else (res,)
        if len(results) != len(op.outputs):
            raise UnsupportedOpError(
                f"op {op.type} ({op.name}) produced {len(results)} outputs, the program declares {len(op.outputs)}"
            )
        return tuple(_conform(op, i, r, batch) for i, r in enumerate(results))

    def _collect_outputs(self, env: dict[str, Value]) -> dict[str, np.ndarray]:
        outs: dict[str, np.ndarray] = {}
        for name in self.program.output_names:
            val = env[name]
            if isinstance(val, dict):
                # Classifier probability dict: return the underlying vector in class order instead.
                val = np.array(list(val.values()))
            elif isinstance(val, list):  # one dict per image of a batch
                val = np.array([list(d.values()) for d in val])
            outs[name] = np.asarray(val)
        classify = self._classify
        if classify is not None:
            probs_name = classify.inputs["probabilities"]
            assert isinstance(probs_name, str)
            outs.setdefault(probs_name, np.asarray(env[probs_name]))
        return outs


@functools.cache
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _single_threaded_blas() -> Any:
    """The program's matmuls are small (one image): OpenBLAS's second thread gains nothing on a quiet
    2-core host (76 vs 79 ms per image, w0.5 @ 128 W8A8), and when another process shares the cores its
    spinning threads make every image 3.5x slower (285 vs 82 ms). ~20 us per run."""
    return _blas_controller().limit(limits=1, user_api="blas")


class _NotBatchable(Exception):
    """A batched result's shape is not the declared one with the batch on axis 0."""


def _conform(op: MilOp, i: int, val: Value, batch: int = 1) -> Value:
    """Cast a result to its declared dtype and check its static shape (catches semantic slips)."""
    if not isinstance(val, (np.ndarray, np.generic, int, float, bool)):
        return val
    dt = op.out_dtypes[i] if i < len(op.out_dtypes) else None
    arr = np.asarray(val)
    if dt is not None and arr.dtype != dt:
        arr = cast(arr, dt)
    want = op.out_shapes[i] if i < len(op.out_shapes) else None
    if want is not None and batch > 1:
        if (batch, *want[1:]) != tuple(arr.shape):
            raise _NotBatchable(op.name)
        return arr
    if want is not None and tuple(arr.shape) != want:
        raise UnsupportedOpError(
            f"op {op.type} ({op.name}) computed shape {tuple(arr.shape)} but the program declares {want}: "
            "this variant of the op is not supported by the interpreter"
        )
    return arr


def _image_to_tensor(value: Any, image: ImageInput) -> np.ndarray:
    """Turn an image feed into the [1, C, H, W] float tensor Core ML hands the program.

    Accepted: a PIL image, a uint8 HWC array (RGB, or HW / HW1 for grayscale), or a float/uint8
    NCHW / CHW array, also RGB for colour models. Channels are reordered to the spec's colour space
    (e.g. BGR); pixel values stay in 0..255 because the program itself applies scale and bias.
    Float values are not rounded to 8 bits, so PyTorch parity can be checked on arbitrary inputs.
    """
    arr = np.asarray(value)
    nch = len(image.channels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and (arr.dtype == np.uint8 or arr.shape[0] not in (1, 3)):
        if arr.shape[-1] == 4:
            arr = arr[:, :, :3]  # drop alpha, as Core ML does for RGBA/BGRA pixel buffers
        arr = arr.transpose(2, 0, 1)  # HWC -> CHW
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[:2] != (1, nch):
        raise UsageError(
            f"image input {image.name!r} needs an HWC uint8 image or a [1,{nch},H,W] array, got shape {arr.shape}"
        )
    if nch == 3:
        rgb_index = {"R": 0, "G": 1, "B": 2}
        arr = arr[:, [rgb_index[c] for c in image.channels]]
    return arr.astype(np.float32)


def run_mlpackage(path: str | Path, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """Load and run a saved .mlpackage once."""
    return MilInterpreter.from_mlpackage(path).run(feeds)
