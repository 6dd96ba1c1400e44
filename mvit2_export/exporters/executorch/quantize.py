"""int8 for the XNNPACK delegate with its own PT2E quantizer (XNNPACKQuantizer: per-channel symmetric
int8 weights, per-tensor affine int8 activations). `convert(float_nodes)`, `quantizable_nodes()` and
`SimulatedRunner` are what exporters/int8_search.py needs to search mixed precision (exporter._int8).

Calibration runs once, with every node annotated: PT2E's observers pass values through unchanged, so
the tensor a partial configuration observes holds the same values as in the all-int8 one, and each of its
observers is a copy of the all-int8 observer of the same tensor (`_transplant`; where all-int8 shares
one range between tensors, a max-pool and its input, the copy keeps that range: each configuration
quantizes its int8 tensors exactly as all-int8 does). Values whose all-int8 range does not apply (a
float mean's output, a value only the configuration observes) are calibrated afresh, once for every
configuration that observes the same values (`_observer_keys`). Each observer's qparams are computed
once (`_FixedQParams`), and XNNPACK's conv + batch-norm patterns, which cannot match our graphs, are
not traced. A configuration then costs ~1.3 s at width 0.5 @ 128 (a prepare and a convert; measured
2026-12-07, bit-identical outputs) where it cost 8-13 s, ~9 s of it a calibration over 64 images.

Why PT2E and not a quantizer of our own: it is the quantizer the XNNPACK delegate is built for; its
quantized patterns (conv + activation, add, mul, pooling) are what the partitioner turns into XNNPACK's
int8 kernels. The int8 ISA does not change anything here: XNNPACK's int8 kernels accumulate in int32
on every ISA (no 7-bit weights needed), so `--int8-isa` is only recorded.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import ExportedProgram

from ...errors import ExportError, first_line
from ...model.preprocess import images_to_pixel_values
from .lower import export

CALIBRATION_BATCH = 16


def export_batched(module: nn.Module, example: torch.Tensor) -> ExportedProgram:
    """`module` traced with a dynamic batch dimension (the lowered program is batch 1: `export`)."""
    from ...rewrites.export import dynamic_batch_example

    args, shapes = dynamic_batch_example(example)
    try:
        return torch.export.export(module, args, dynamic_shapes=shapes, strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export of the rewritten program failed: {first_line(exc)}") from exc


def model_inputs(images: np.ndarray, embedded: bool) -> list[torch.Tensor]:
    """uint8 RGB [B,H,W,3] -> one batch-1 input per image, as the program takes it."""
    if embedded:
        return [torch.from_numpy(np.ascontiguousarray(im[None], dtype=np.uint8)) for im in images]
    x = images_to_pixel_values(np.asarray(images, dtype=np.uint8))
    return [torch.from_numpy(x[i : i + 1]) for i in range(len(x))]


ANNOTATION = "quantization_annotation"


def _floats_with_sharers(model: torch.fx.GraphModule, float_nodes: set[str]) -> set[str]:
    """`float_nodes`, and every node whose quantization depends on one of them: one that shares its range
    with a value they no longer quantize (a max-pool or reshape sharing its input's: PT2E's prepare cannot
    resolve a shared spec whose root lost its annotation, KeyError), and the head of a pattern whose
    tail is float."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    removed = set(float_nodes)

    def quantized(ref: Any) -> bool:
        if isinstance(ref, tuple):  # an edge (producer, consumer): the consumer's input annotation
            src, dst = ref
            ann = dst.meta.get(ANNOTATION)
            return dst.name not in removed and ann is not None and src in ann.input_qspec_map
        ann = ref.meta.get(ANNOTATION)
        return ref.name not in removed and ann is not None and ann.output_qspec is not None

    changed = True
    while changed:
        changed = False
        for node in model.graph.nodes:
            ann = node.meta.get(ANNOTATION)
            if ann is None or node.name in removed:
                continue
            specs = [ann.output_qspec, *ann.input_qspec_map.values()]
            shared = [s.edge_or_node for s in specs if isinstance(s, SharedQuantizationSpec)]
            # The head of a fused pattern (conv of conv+relu) leaves its output range to the pattern's
            # tail: without the tail it would be an int8 conv with a float output, which XNNPACK cannot
            # run, and the program is cut into pieces around it (measured: 10 delegates).
            headless = ann.output_qspec is None and any(u.name in removed for u in node.users)
            if headless or any(not quantized(ref) for ref in shared):
                removed.add(node.name)
                changed = True
    return removed


def _quantizer(float_nodes: set[str]) -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    class PartialQuantizer(XNNPACKQuantizer):
        """XNNPACK's annotations, minus those of the nodes the search keeps in float."""

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if not any("batch_norm" in str(n.target) for n in model.graph.nodes):
                # Its conv + batch-norm patterns cannot match a graph without batch norm (our rewrites
                # fold it into the convolutions), and each is traced with torch.export on every call:
                # ~3 s of every prepare at width 0.5 @ 128 (measured), twice per configuration.
                self.SUPPORTED_PATTERNS = [p for p in self.SUPPORTED_PATTERNS if "_bn" not in p.name]
            model = super().annotate(model)
            floats = _floats_with_sharers(model, float_nodes)
            for node in model.graph.nodes:
                if node.name in floats:
                    node.meta.pop(ANNOTATION, None)
            return model

    q = PartialQuantizer()
    q.set_global(get_symmetric_quantization_config(is_per_channel=True))
    return q


def _observers(gm: torch.fx.GraphModule) -> dict[str, list[str]]:
    """observer module name -> the names of the values it observes (through chains of observers)."""
    from torchao.quantization.pt2e.observer import _is_activation_post_process

    def is_observer(node: Any) -> bool:
        return node.op == "call_module" and _is_activation_post_process(gm.get_submodule(str(node.target)))

    out: dict[str, list[str]] = {}
    for node in gm.graph.nodes:
        if is_observer(node):
            value = node.args[0]
            while is_observer(value):
                value = value.args[0]
            out.setdefault(str(node.target), []).append(value.name)
    return out


def _transplant(source: torch.fx.GraphModule, target: torch.fx.GraphModule) -> list[str]:
    """Give every observer of `target` a copy of the `source` observer of the same values; returns the
    names of those left to calibrate:
    - a value only the partial configuration observes;
    - the output of a float mean. XNNPACK's quantizer gives an int8 mean its input's range (one observer
      instance for both); float, the mean's output is observed alone, as the next int8 op's input, and
      the copy would give it the input's range. Measured on the trained fixture, a variance mean got the
      range of the squares, scale 0.2316 against 0.0324 calibrated, and a conv-only configuration agreed
      0.825 with fp32 instead of 0.964. (A float max-pool's output keeps its copy: the shared range is
      what all-int8 quantizes it with, and a fresh one made the delegate fail to load, measured.)"""
    observed, targets = _observers(source), _observers(target)
    by_value = {v: name for name, values in observed.items() for v in values}
    source_sees, target_sees = _seen_by_instance(source, observed), _seen_by_instance(target, targets)
    means = {n.name for n in target.graph.nodes if n.target == torch.ops.aten.mean.dim}
    left = []
    for name, values in targets.items():
        owners = {by_value.get(v) for v in values}
        owner = owners.pop() if len(owners) == 1 else None
        # a float mean's output: all-int8's observer of it also saw values this one does not
        borrowed = owner is not None and bool(means & set(values))
        if borrowed and source_sees[id(getattr(source, owner))] <= target_sees[id(getattr(target, name))]:
            borrowed = False  # an int8 mean here too, sharing its input's range as in all-int8
        if owner is None or borrowed:
            left.append(name)
            continue
        setattr(target, name, copy.deepcopy(getattr(source, owner)))
    return left


class _FixedQParams:
    """An observer's calculate_qparams, computed once. HistogramObserver searches its histogram on every
    call (~10 ms each, ~400 per convert: ~3 s at width 0.5 @ 128, measured), and every configuration
    converts copies of the same calibrated observers."""

    def __init__(self, qparams: tuple[torch.Tensor, ...]) -> None:
        self.qparams = qparams

    def __call__(self) -> tuple[torch.Tensor, ...]:
        return tuple(t.clone() for t in self.qparams)


def _fix_qparams(gm: torch.fx.GraphModule) -> None:
    """Every calibrated observer of `gm` returns the qparams it computes now, from now on (copies too)."""
    for name in _observers(gm):
        observer = getattr(gm, name)
        if not isinstance(observer.__dict__.get("calculate_qparams"), _FixedQParams):
            observer.calculate_qparams = _FixedQParams(observer.calculate_qparams())


def _observer_keys(gm: torch.fx.GraphModule) -> dict[str, tuple[Any, ...]]:
    """observer name -> what its calibrated state depends on: its kind and the values its instance
    observes (observers pass values through, so a value holds the same numbers in every configuration)."""
    observers = _observers(gm)
    seen = _seen_by_instance(gm, observers)
    keys = {}
    for name in observers:
        observer = getattr(gm, name)
        kind = [
            str(getattr(observer, a, None)) for a in ("dtype", "qscheme", "ch_axis", "quant_min", "quant_max")
        ]
        keys[name] = (type(observer).__name__, *kind, frozenset(seen[id(observer)]))
    return keys


def _seen_by_instance(gm: torch.fx.GraphModule, observers: dict[str, list[str]]) -> dict[int, set[str]]:
    """observer instance -> every value it observes: PT2E registers a shared observer under several names."""
    out: dict[int, set[str]] = {}
    for name, values in observers.items():
        out.setdefault(id(getattr(gm, name)), set()).update(values)
    return out


def _dequantize_per_user(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """One dequantize node per consumer. XNNPACK's partitioner marks a dequantize "implicit" (fused into
    an int8 kernel) when one int8 consumer claims it, and a float consumer of the same node (a float
    layer next to an int8 one) then reads int8 too: the delegate fails to load ("Failed to create
    XNNAdd node ... xnn_status_invalid_parameter", measured). Its own pass that splits them runs after
    partitioning, too late."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or "dequantize" not in str(node.target) or len(node.users) < 2:
            continue
        for user in list(node.users)[1:]:
            with gm.graph.inserting_before(user):
                copy_ = gm.graph.node_copy(node)
            user.replace_input_with(node, copy_)
    gm.graph.lint()
    gm.recompile()
    return gm


class SimulatedRunner:
    """PT2E's converted module in torch: the quantize/dequantize arithmetic the XNNPACK delegate runs,
    simulated in float, in batches (width 0.5 @ 128 on 2 cores: 16 ms per image quiet, ~60 ms loaded;
    lowering one configuration takes ~90 s). The search's judge; the chosen configuration is then lowered and gated in
    the ExecuTorch runtime."""

    runtime = "pt2e-simulated-int8"

    def __init__(self, module: nn.Module, embedded: bool) -> None:
        self.module, self.embedded = module, embedded

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = self.module(torch.cat(model_inputs(images, self.embedded)))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [np.asarray(o.numpy(), dtype=np.float32) for o in out]


class PT2EInt8:
    """Calibrate once, convert for any set of float nodes, from one captured graph."""

    def __init__(self, module: nn.Module, example: torch.Tensor, images: np.ndarray, embedded: bool) -> None:
        self.module = module
        self.example = example
        self.embedded = embedded
        self.images = images  # uint8 RGB calibration images (the search ranks on them too)
        self.inputs = model_inputs(images, embedded)
        # Captured with a dynamic batch so calibration runs in batches: PT2E's observed graph runs
        # node by node in Python (~1.4 s per 128 px image at batch 1 on 2 cores, measured).
        self.captured = export_batched(module, example).module()
        # Observers calibrated afresh for values whose all-int8 range does not apply (`_observed`), by
        # `_observer_keys`: calibrated once for all configurations (~5-9 s each time, measured).
        self._fresh: dict[tuple[Any, ...], nn.Module] = {}
        self.settings: dict[str, Any] = {
            "quantizer": "XNNPACKQuantizer (PT2E, torchao)",
            "weights": "int8 symmetric per channel",
            "activations": "int8 affine per tensor",
            "calibration_images": len(images),
        }

    @functools.cached_property
    def _annotated(self) -> torch.fx.GraphModule:
        """A copy of the captured graph with XNNPACK's annotations (read, never changed, by the three
        methods below)."""
        gm = copy.deepcopy(self.captured)
        _quantizer(set()).annotate(gm)
        return gm

    def quantizable_nodes(self) -> list[str]:
        """The nodes XNNPACK's quantizer annotates, in execution order."""
        gm = self._annotated
        return [
            n.name for n in gm.graph.nodes if "quantization_annotation" in n.meta and n.op == "call_function"
        ]

    def convolutions(self) -> list[str]:
        """The quantizable convolutions (and linears), in execution order: what CONVS_ONLY keeps int8."""
        gm = self._annotated
        products = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
        return [
            n.name
            for n in gm.graph.nodes
            if n.op == "call_function" and n.target in products and ANNOTATION in n.meta
        ]

    def floated(self, float_nodes: list[str]) -> list[str]:
        """The nodes a configuration leaves in float, in execution order: `float_nodes` plus those that
        must follow them (shared ranges, heads of patterns: `_floats_with_sharers`). The manifest records
        these, not only the search's request."""
        if not float_nodes:
            return []
        gm = self._annotated
        floats = _floats_with_sharers(gm, set(float_nodes))
        return [n.name for n in gm.graph.nodes if n.name in floats and n.op == "call_function"]

    def _observed(self, float_nodes: list[str]) -> torch.fx.GraphModule:
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        def prepared() -> torch.fx.GraphModule:
            return prepare_pt2e(copy.deepcopy(self.captured), _quantizer(set(float_nodes)))

        observed = prepared()
        if not float_nodes:
            self._calibrate(observed)
            _fix_qparams(observed)
            return observed
        left = _transplant(self.calibrated, observed)
        if not left:
            return observed
        keys = _observer_keys(observed)
        wanted = {name: keys[name] for name in left}
        if not set(wanted.values()) <= self._fresh.keys():  # calibrated afresh
            fresh = prepared()
            self._calibrate(fresh)
            _fix_qparams(fresh)
            for name, key in _observer_keys(fresh).items():
                self._fresh.setdefault(key, getattr(fresh, name))
        for name, key in wanted.items():
            setattr(observed, name, copy.deepcopy(self._fresh[key]))
        return observed

    def _calibrate(self, observed: torch.fx.GraphModule) -> None:
        with torch.no_grad():
            for i in range(0, len(self.inputs), CALIBRATION_BATCH):
                observed(torch.cat(self.inputs[i : i + CALIBRATION_BATCH]))

    @functools.cached_property
    def calibrated(self) -> torch.fx.GraphModule:
        """Every node int8, calibrated: the observers every configuration copies."""
        return self._observed([])

    def convert(self, float_nodes: list[str]) -> torch.fx.GraphModule:
        """PT2E's converted module (quantize/dequantize pairs in a float graph, dynamic batch)."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        try:
            observed = copy.deepcopy(self.calibrated) if not float_nodes else self._observed(float_nodes)
            return _dequantize_per_user(convert_pt2e(observed))
        except Exception as exc:
            raise ExportError(f"XNNPACK PT2E quantization failed: {first_line(exc)}") from exc

    def quantize(self, float_nodes: list[str]) -> ExportedProgram:
        """The program to lower: the converted module traced at batch 1."""
        return export(self.convert(float_nodes), self.example)
