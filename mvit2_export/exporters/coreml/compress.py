"""Post-conversion compression through `coremltools.optimize.coreml`.

- int8: `linear_quantize_weights` (int8 weights, dequantized on load; activations stay fp16/fp32).
- palettized: `palettize_weights` (n-bit look-up tables).
- w8a8: `experimental.linear_quantize_activations` (calibrated quantize/dequantize pairs on activations)
  then the pass of `linear_quantize_weights`, in one re-compile. coremltools calibrates by running
  `MLModel.predict` on a copy with all intermediate tensors as outputs, which needs the Core ML runtime
  (macOS only). Elsewhere the NumPy MIL interpreter runs the same saved program. Either way the ranges
  are percentiles of every calibration sample's values (`TailRanges`), not coremltools' min/max.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from ...errors import ExportError
from ...model.preprocess import images_to_pixel_values
from .convert import INPUT_NAME, quiet_coremltools
from .recompile import fast_recompile
from .settings import CoreMLSettings
from .tail_ranges import TailRanges

# The op types whose activations coremltools' W8A8 quantizes (its insert_prefix_quantize_dequantize_pair
# pass: SUPPORTED_OP_TYPES in coremltools 9); the mixed-precision search keeps some of them float.
ACTIVATION_OP_TYPES = ("conv", "avg_pool", "max_pool", "linear", "add")
CONV_OP_TYPES = ("conv", "linear")  # what the convolutions-only recipe keeps int8 (int8_search.CONVS_ONLY)
# The first recipe's name in the manifest: every op coremltools' W8A8 quantizes.
ALL_W8A8 = "every op of " + "/".join(ACTIVATION_OP_TYPES)


def _weight_config(settings: CoreMLSettings, float_ops: Sequence[str] = ()) -> Any:
    import coremltools.optimize as cto

    if settings.precision == "palettized":
        op = cto.coreml.OpPalettizerConfig(nbits=settings.palettize_bits, mode=settings.palettize_mode)
    else:
        op = cto.coreml.OpLinearQuantizerConfig(mode=settings.quantize_mode, dtype="int8")
    return cto.coreml.OptimizationConfig(global_config=op, op_name_configs=dict.fromkeys(float_ops))


def quantizable_ops(mlmodel: Any, kinds: Sequence[str] = ACTIVATION_OP_TYPES) -> list[str]:
    """The ops of `kinds` W8A8 quantizes the inputs of, in program order (outputs' producers stay float
    anyway)."""
    func = mlmodel._mil_program.functions["main"]
    outputs = set(_output_producers(mlmodel))
    return [op.name for op in func.operations if op.op_type in kinds and op.name not in outputs]


def _with_weights(mlmodel: Any, ops: Sequence[str]) -> list[str]:
    """`ops` and the const ops that feed them (weight compression is configured per const op)."""
    wanted = set(ops)
    func = mlmodel._mil_program.functions["main"]
    consts = [
        v.op.name
        for op in func.operations
        if op.name in wanted
        for v in op.inputs.values()
        if getattr(v, "op", None) is not None and v.op.op_type == "const"
    ]
    return [*ops, *consts]


def calibration_feeds(images: np.ndarray, settings: CoreMLSettings) -> list[dict[str, Any]]:
    """uint8 RGB [N,H,W,3] -> one feed per image, in the form the model's input takes."""
    if settings.input_type == "tensor":
        return [{INPUT_NAME: images_to_pixel_values(img[None])} for img in images]
    from PIL import Image

    return [{INPUT_NAME: Image.fromarray(img)} for img in images]


# Activation ranges clip the outermost TAIL of each tensor's calibration values on either side (its 0.01st
# and 99.99th percentiles) instead of taking min and max. Measured on the trained fixture (all-W8A8, 500
# held-out crops, MIL interpreter): min/max 0.950; percentiles 99.9 0.970, 99.95 0.970, 99.98 0.976,
# 99.99 0.976, 99.995 0.980, 99.999 0.970 (8 calibration images; with 32: 99.99 0.976, 99.999 0.982); a
# per-tensor MSE-optimal clip 0.975 on 200 crops, where 99.99 gave 0.990. The heavy tails of a few
# activations set min/max, and symmetric int8 then spends its 255 steps on values almost never seen.
# (coremltools 9.0's own collector would also keep only the LAST sample's range: `_update_tensor_range` and
# `ModelDebugger.record_intermediate_output` overwrite rmin/rmax before comparing, apple/coremltools#2704,
# fixed by #2724 after 9.0, unreleased. Every path below sees every sample.)
TAIL = 1e-4


def _share_concat_ranges(fpmodel: Any, stats: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """As coremltools does after collecting: a concat's inputs and output share one range."""
    from coremltools.optimize.coreml.experimental._model_debugger import ModelDebugger
    from coremltools.optimize.coreml.experimental._post_training_quantization import (
        _adjust_concat_surrounding_activation_stats,
    )

    _adjust_concat_surrounding_activation_stats(ModelDebugger(fpmodel)._get_concat_op_info(), stats)
    return stats


def calibration_tensors(fpmodel: Any, sample_data: list[dict[str, Any]]) -> Iterator[dict[str, np.ndarray]]:
    """Per sample, the inputs and every floating op output of the saved program (MIL interpreter)."""
    from .mil import MilInterpreter

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calibrate.mlpackage"
        fpmodel.save(str(path))
        interp = MilInterpreter.from_mlpackage(path)
        for feed in sample_data:
            tensors = {name: np.asarray(value, dtype=np.float32) for name, value in feed.items()}
            _, trace = interp.run(feed, trace=True)
            # Outputs too: an output can feed further ops (logits -> softmax) that get quantized.
            tensors.update((n, v) for n, v in trace.items() if np.issubdtype(v.dtype, np.floating))
            yield tensors


def _interpreter_stats(
    fpmodel: Any, sample_data: list[dict[str, Any]], *_: Any
) -> dict[str, dict[str, float]]:
    """Stand-in for coremltools' `_get_activation_calibration_stats` off macOS: the ranges of the inputs
    and every non-const op output over the samples, computed by the MIL interpreter on the saved program."""
    tails = TailRanges(len(sample_data), TAIL)
    for tensors in calibration_tensors(fpmodel, sample_data):
        for name, value in tensors.items():
            tails.add(name, value)
    return _share_concat_ranges(fpmodel, tails.ranges())


def _coremltools_stats() -> Callable[..., dict[str, dict[str, float]]]:
    """coremltools' own collector (Core ML predictions, macOS), its per-tensor record replaced by ours."""
    from coremltools.optimize.coreml.experimental import _post_training_quantization as ptq
    from coremltools.optimize.coreml.experimental._model_debugger import ModelDebugger

    def stats(fpmodel: Any, sample_data: list[dict[str, Any]], *rest: Any) -> dict[str, dict[str, float]]:
        tails = TailRanges(len(sample_data), TAIL)
        for feed in sample_data:
            for name, value in feed.items():
                tails.add(name, value)  # inputs (coremltools records them apart, without the debugger)

        def record(value: Any, name: str, _stats: Any) -> None:
            tails.add(name, value)

        with mock.patch.object(ModelDebugger, "record_intermediate_output", staticmethod(record)):
            ptq._get_activation_calibration_stats(fpmodel, sample_data, *rest)
        return _share_concat_ranges(fpmodel, tails.ranges())

    return stats


def _output_producers(mlmodel: Any) -> list[str]:
    """Ops whose result is a program output. coremltools' activation quantization would put a
    quantize/dequantize pair after them and then fails deleting the op ("cannot delete op ... that's
    block's output"); their outputs stay float (they are the model's float outputs anyway)."""
    func = mlmodel._mil_program.functions["main"]
    outputs = {id(v) for v in func.outputs}
    return [op.name for op in func.operations if any(id(v) in outputs for v in op.outputs)]


STATS = "coremltools.optimize.coreml._post_training_quantization._get_activation_calibration_stats"


def _calibration_patch(use_interpreter: bool, cache: dict[str, Any] | None) -> AbstractContextManager[Any]:
    """Statistics from the MIL interpreter off macOS; with `cache`, computed once per float model: they
    are min/max of the float program's tensors, the same whichever ops the search keeps float."""
    collect = _interpreter_stats if use_interpreter else _coremltools_stats()
    if cache is None:
        return mock.patch(STATS, collect)

    def cached(*args: Any) -> dict[str, dict[str, float]]:
        if "stats" not in cache:
            cache["stats"] = collect(*args)
        return cache["stats"]

    return mock.patch(STATS, cached)


def _weights_in_same_pass(config: Any) -> AbstractContextManager[Any]:
    """W8A8 = linear_quantize_activations then linear_quantize_weights; each re-compiles the whole program
    (~3 s at width 0.5, and the search compresses ~17 times). Run coremltools' own weight pass inside the
    activations' re-compile instead: the same two passes in the same order, one compile (outputs measured
    identical, 1.8x faster)."""
    import coremltools.models.utils as ct_utils
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    weight_pass = PASS_REGISTRY["compression::linear_quantize_weights"]
    weight_pass.set_options([PassOption("config", config), PassOption("joint_compression", False)])
    apply = ct_utils._apply_graph_pass

    def activations_then_weights(mlmodel: Any, passes: Any, **kwargs: Any) -> Any:
        # Only the activations' call passes a list; anything else applies as coremltools wrote it.
        return apply(mlmodel, [*passes, weight_pass] if isinstance(passes, list) else passes, **kwargs)

    return mock.patch.object(ct_utils, "_apply_graph_pass", activations_then_weights)


def compress(
    mlmodel: Any,
    settings: CoreMLSettings,
    calibration: Callable[[], np.ndarray],
    can_predict: bool,
    float_ops: Sequence[str] = (),
    stats_cache: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Apply the compression of `settings.precision` (a no-op for fp32/fp16); returns (model, facts).
    `float_ops` stay float (activations and weights: the mixed-precision search's choice);
    `stats_cache` keeps the W8A8 calibration statistics across calls on the same float model."""
    import coremltools.optimize as cto

    if settings.precision in ("fp32", "fp16"):
        return mlmodel, {}
    facts: dict[str, Any] = {
        "compression": settings.precision,
        "compute_precision": settings.compute_precision,
    }
    try:
        with quiet_coremltools(), fast_recompile():
            # the weight compression, with the consts of the search's float ops left out
            weights = _weight_config(settings, _with_weights(mlmodel, float_ops))
            if settings.precision == "w8a8":
                images = calibration()[: settings.calibration_samples]
                act_config = cto.coreml.OptimizationConfig(
                    global_config=cto.coreml.experimental.OpActivationLinearQuantizerConfig(
                        mode="linear_symmetric"
                    ),
                    op_name_configs=dict.fromkeys([*_output_producers(mlmodel), *float_ops]),
                )
                with _calibration_patch(not can_predict, stats_cache), _weights_in_same_pass(weights):
                    mlmodel = cto.coreml.experimental.linear_quantize_activations(
                        mlmodel, act_config, calibration_feeds(images, settings)
                    )
                facts["calibration_images"] = int(len(images))
                facts["calibration_runtime"] = "coreml" if can_predict else "mil-reference"
            elif settings.precision == "palettized":
                mlmodel = cto.coreml.palettize_weights(mlmodel, weights)
            else:
                mlmodel = cto.coreml.linear_quantize_weights(mlmodel, weights)
    except Exception as exc:
        raise ExportError(
            f"coremltools could not compress to {settings.precision}: {type(exc).__name__}: {exc}"
        ) from exc
    if settings.precision == "palettized":
        facts.update(palettize_bits=settings.palettize_bits, palettize_mode=settings.palettize_mode)
    else:
        facts["quantize_mode"] = settings.quantize_mode
    return mlmodel, facts
