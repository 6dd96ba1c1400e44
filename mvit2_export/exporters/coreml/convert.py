"""Reference model -> rewritten torch.export program -> Core ML mlprogram (uncompressed).

Path: `export_program` + `apply_pipeline(ep, "coreml")` (unfold/fold -> pixel_(un)shuffle, Conv+BN folded,
GroupNorm decomposed, dropout removed), then `ct.convert(ep.run_decompositions({}))`, the torch.export
frontend coremltools 9 wants (ATen dialect). `torch.jit.trace` of the same rewritten module is only a
fallback if that frontend fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from ... import __version__
from ...errors import ExportError
from ...model.preprocess import Preprocessor
from ...progress import step
from ...rewrites import Prepared, prepare
from .settings import CoreMLSettings

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
PROBS_NAME = "probabilities"  # the classifier's label -> probability dict
SOFTMAX_NAME = "softmax_probabilities"  # softmax(logits): the tensor the classify op turns into that dict
LABEL_NAME = "classLabel"
MASK_NAME = "mask"
META_PREFIX = "mvit2_export."


class CoreMLHead(nn.Module):
    """The reference model plus the outputs an app wants next to the raw ones.

    Classification adds softmax probabilities: coremltools' classify op only relabels the tensor it is
    given (no softmax) and removes it from the outputs, so we hand it probabilities and keep `logits`
    as a separate output for parity. Segmentation may add the argmax mask.
    """

    def __init__(self, model: nn.Module, argmax_mask: bool) -> None:
        super().__init__()
        self.model = model
        self.task = model.task
        self.argmax_mask = argmax_mask

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(pixel_values)
        outs = out if isinstance(out, tuple) else (out,)
        if self.task == "classification":
            return (outs[0], torch.softmax(outs[0], dim=-1))
        if self.task == "segmentation" and self.argmax_mask:
            return (outs[0], torch.argmax(outs[0], dim=1).to(torch.int32))
        return outs


def output_names(model: nn.Module, settings: CoreMLSettings) -> list[str]:
    names = list(model.output_names)
    if model.task == "classification":
        names.append(SOFTMAX_NAME)
    elif model.task == "segmentation" and settings.argmax_mask:
        names.append(MASK_NAME)
    return names


def prepare_program(model: nn.Module, image_size: int, argmax_mask: bool) -> Prepared:
    """The `coreml`-rewritten program of the model inside its Core ML head (softmax / argmax outputs),
    re-exported: coremltools converts ExportedPrograms. Shared by every precision of one model."""
    example = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    return prepare(
        model,
        "coreml",
        example,
        wrap=lambda m: CoreMLHead(m, argmax_mask),
        wrap_key=("coreml-head", argmax_mask),
        reexport=True,
    )


# coremltools binds tqdm at import in these modules (tqdm reads its TQDM_* overrides at import too, so an
# environment variable set later has no effect): patch the names to a disabled bar.
_TQDM_SITES = (
    "coremltools.converters.mil.frontend.torch.ops._tqdm",
    "coremltools.converters.mil.mil.passes.pass_pipeline.tqdm",
    "coremltools.optimize.coreml._post_training_quantization.tqdm",
    "coremltools.optimize.coreml._quantization_passes.tqdm",
    "coremltools.optimize.coreml.experimental._post_training_quantization.tqdm",
    "coremltools.optimize.coreml.experimental._model_debugger.tqdm",
)


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[None]:
    """Silence coremltools' progress bars and INFO logs during conversion and compression."""
    import importlib

    from tqdm import tqdm

    names = ("coremltools", "torch.export", "torch._export")
    levels = {n: logging.getLogger(n).level for n in names}
    with contextlib.ExitStack() as stack:
        for site in _TQDM_SITES:
            module, attr = site.rsplit(".", 1)
            try:
                importlib.import_module(module)
            except ImportError:
                continue
            stack.enter_context(mock.patch(site, functools.partial(tqdm, disable=True)))
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for n, lvl in levels.items():
                logging.getLogger(n).setLevel(lvl)


def pass_pipeline() -> Any:
    import coremltools as ct

    pipeline = ct.PassPipeline.DEFAULT
    # This pass turns the decomposed GroupNorm's per-channel affine (mul + add) back into a batch_norm op;
    # keep the element-wise form (same arithmetic, and the program stays free of batch_norm as the
    # rewrites intended: Conv+BN is folded into the convs).
    pipeline.remove_passes(["common::fuse_elementwise_to_batchnorm"])
    return pipeline


def _input_type(settings: CoreMLSettings, image_size: int) -> Any:
    import coremltools as ct

    shape = (1, 3, image_size, image_size)
    if settings.input_type == "tensor":
        return ct.TensorType(name=INPUT_NAME, shape=shape)
    # The checkpoint's preprocessing (rescale 1/255, RGB->BGR) as Core ML image preprocessing: an app
    # passes a CVPixelBuffer straight in.
    return ct.ImageType(name=INPUT_NAME, shape=shape, scale=1.0 / 255.0, color_layout=ct.colorlayout.BGR)


def convert_model(model: nn.Module, settings: CoreMLSettings, image_size: int) -> tuple[Any, dict[str, Any]]:
    """Uncompressed MLModel (not yet saved) and facts about its conversion."""
    import coremltools as ct

    start, cpu_start = time.perf_counter(), time.process_time()
    prepared = prepare_program(model, image_size, settings.argmax_mask)
    rewrite_s, rewrite_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    names = output_names(model, settings)
    kwargs: dict[str, Any] = {
        "inputs": [_input_type(settings, image_size)],
        "convert_to": "mlprogram",
        "minimum_deployment_target": settings.ct_target,
        "compute_precision": ct.precision.FLOAT16
        if settings.compute_precision == "fp16"
        else ct.precision.FLOAT32,
        "pass_pipeline": pass_pipeline(),
        "skip_model_load": True,  # Linux cannot load it; the runner loads from disk where it can
    }
    if model.task == "classification":
        labels = [str(model.config.id2label[i]) for i in sorted(model.config.id2label)]
        kwargs["classifier_config"] = ct.ClassifierConfig(
            labels, predicted_feature_name=LABEL_NAME, predicted_probabilities_output=SOFTMAX_NAME
        )
    kwargs["outputs"] = [ct.TensorType(name=n) for n in names]
    step("coremltools ct.convert")
    with quiet_coremltools(), _classify_output_types_fix():
        try:
            mlmodel = ct.convert(prepared.program.run_decompositions({}), **kwargs)
            path = "torch.export"
        except Exception as exc:  # the torch.export frontend is newer; fall back to TorchScript
            log.warning(
                "coremltools torch.export frontend failed (%s: %s); falling back to jit.trace",
                type(exc).__name__,
                exc,
            )
            example = torch.rand(1, 3, image_size, image_size)
            try:
                with torch.no_grad():
                    traced = torch.jit.trace(prepared.program.module(), example)
                mlmodel = ct.convert(traced, **kwargs)
            except Exception as exc2:
                raise ExportError(
                    f"coremltools could not convert the model: {type(exc2).__name__}: {exc2}"
                ) from exc2
            path = "torch.jit.trace"
    return mlmodel, {
        "conversion_path": path,
        "rewrites": prepared.rewrites,
        "rewrite_seconds": round(rewrite_s, 2),  # 0 when the rewritten program came from the cache
        "convert_seconds": round(time.perf_counter() - start - rewrite_s, 2),
        # CPU time (all threads) says more than wall time on a shared machine.
        "rewrite_cpu_seconds": round(rewrite_cpu, 2),
        "convert_cpu_seconds": round(time.process_time() - cpu_start - rewrite_cpu, 2),
    }


@contextlib.contextmanager
def _classify_output_types_fix() -> Iterator[None]:
    """Work around coremltools 9 adding the classify op without updating the function's output types.

    `_add_classify_op` swaps the probability output for the classify op's two outputs but leaves
    `func.output_types` (set from `outputs=`, or by the fp16 pass) one entry short, so the backend indexes
    past it (IndexError) whenever a classifier has another output (our raw `logits`). We rebuild the list
    per output var, and give the dict output its final name.
    """
    import coremltools as ct
    from coremltools.converters.mil.backend.mil import load as mil_load

    original = mil_load._add_classify_op

    def add_classify_op(prog: Any, classifier_config: Any) -> tuple[str, str]:
        func = prog.functions["main"]
        before = dict(zip((id(v) for v in func.outputs), func.output_types or [], strict=False))
        label_name, _ = original(prog, classifier_config)
        probs = next(v for v in func.outputs if v.name == f"{LABEL_NAME}_probs")
        probs.name = PROBS_NAME
        if func.output_types is not None:
            func.output_types = [before.get(id(v)) or ct.TensorType(name=v.name) for v in func.outputs]
        return label_name, PROBS_NAME

    with mock.patch.object(mil_load, "_add_classify_op", add_classify_op):
        yield


def _preprocessing(model: nn.Module, image_size: int, settings: CoreMLSettings) -> dict[str, Any]:
    source = getattr(getattr(model, "checkpoint", None), "source", None)
    pre = (
        Preprocessor.from_pretrained(source, image_size)
        if source and Path(str(source)).is_dir()
        else Preprocessor.for_image_size(image_size)
    )
    d = pre.to_dict()
    d["coreml_input"] = (
        {"type": "image", "color_layout": "BGR", "scale": 1 / 255, "bias": [0.0, 0.0, 0.0]}
        if settings.input_type == "image"
        else {"type": "tensor", "layout": "NCHW", "channel_order": "BGR", "range": [0.0, 1.0]}
    )
    return d


def set_metadata(
    mlmodel: Any, model: nn.Module, settings: CoreMLSettings, image_size: int, rewrites: list[dict[str, Any]]
) -> dict[str, str]:
    """Human metadata plus machine-readable user-defined entries (all strings, as Core ML requires)."""
    ckpt = model.checkpoint
    cfg = model.config
    mlmodel.short_description = (
        f"MobileViTV2 {model.task} (width {cfg.width_multiplier}, {image_size}x{image_size}, "
        f"{settings.precision}){' - UNTRAINED random weights' if ckpt.untrained else ''}"
    )
    mlmodel.author = "Apple (MobileViTV2 architecture); converted by mvit2-export"
    mlmodel.license = "Apple sample code license (ml-cvnets); check the checkpoint's own license"
    mlmodel.version = __version__
    mlmodel.input_description[INPUT_NAME] = (
        "RGB image, resized and center-cropped; scaled by 1/255 and reordered to BGR inside the model"
        if settings.input_type == "image"
        else "float32 BGR [1,3,H,W] in [0,1]"
    )
    user = {
        "source_checkpoint_sha256": ckpt.sha256 or "",
        "source_checkpoint": str(ckpt.source),
        "untrained": json.dumps(bool(ckpt.untrained)),
        "task": model.task,
        "precision": settings.precision,
        "tool_version": f"mvit2-export {__version__}",
        "preprocessing": json.dumps(_preprocessing(model, image_size, settings), sort_keys=True),
        "rewrites_applied": json.dumps([r["id"] for r in rewrites if r.get("fired")]),
        "settings": json.dumps(settings.to_dict(), sort_keys=True),
    }
    user = {META_PREFIX + k: v for k, v in user.items()}
    mlmodel.user_defined_metadata.update(user)
    return user
