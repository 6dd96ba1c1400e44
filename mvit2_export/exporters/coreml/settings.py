"""Core ML export settings: `ExportOptions` (precision + `options.backend`) parsed and validated up front.

Everything is checked before any conversion work so a bad combination fails in one line, with nothing
written. Precisions:

- fp32, fp16: the compute precision of the mlprogram.
- int8: int8 linear weight quantization (W8A16) on top of the compute precision (fp16 by default).
- palettized: n-bit k-means weight palettization (`palettize_bits`, default 6) on top of it.
- w8a8: int8 activations (calibrated) and int8 weights; needs iOS17 / macOS14.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import UsageError
from ..base import ExportOptions

PRECISIONS = ("fp32", "fp16", "int8", "palettized", "w8a8")
COMPRESSED = ("int8", "palettized", "w8a8")

DEFAULT_TARGET = "iOS16"
_TARGET_PREFIXES = ("iOS", "macOS", "tvOS", "watchOS", "visionOS")
_MIN_TARGET = "iOS16"  # fp16 mlprogram + constexpr weight ops (palettization, int8) need iOS16 / macOS13
_W8A8_TARGET = "iOS17"  # activation quantize/dequantize ops are iOS17 / macOS14 opset

PALETTIZE_BITS = (1, 2, 3, 4, 6, 8)
PALETTIZE_MODES = ("kmeans", "uniform")
QUANTIZE_MODES = ("linear_symmetric", "linear")
INPUT_TYPES = ("image", "tensor")
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")

KNOWN_KEYS = {
    "deployment_target",
    "input_type",
    "argmax_mask",
    "compute_precision",
    "palettize_bits",
    "palettize_mode",
    "quantize_mode",
    "calibration_samples",
    "compute_units",
}


@dataclass(frozen=True)
class CoreMLSettings:
    precision: str
    compute_precision: str  # fp16 | fp32
    deployment_target: str  # canonical coremltools name, e.g. "iOS16"
    input_type: str  # image | tensor
    argmax_mask: bool
    palettize_bits: int
    palettize_mode: str
    quantize_mode: str
    calibration_samples: int
    compute_units: str  # for the macOS runner (Core ML predictions); ignored by the MIL interpreter

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ct_target(self) -> Any:
        import coremltools as ct

        return getattr(ct.target, self.deployment_target)


def _target_members() -> dict[str, Any]:
    import coremltools as ct

    return {
        name: member
        for name, member in ct.target.__members__.items()  # includes aliases (macOS13 == iOS16)
        if name.startswith(_TARGET_PREFIXES)
    }


def resolve_target(name: str, minimum: str = _MIN_TARGET) -> str:
    members = _target_members()
    by_lower = {k.lower(): k for k in members}
    canonical = by_lower.get(str(name).strip().lower())
    floor = members[minimum]
    ok = [k for k, m in members.items() if m.value >= floor.value]
    if canonical is None or members[canonical].value < floor.value:
        raise UsageError(
            f"unsupported Core ML deployment target {name!r} (supported: {', '.join(sorted(ok, key=str.lower))})"
        )
    return canonical


def _choice(backend: dict[str, Any], key: str, default: Any, allowed: tuple[Any, ...]) -> Any:
    value = backend.get(key, default)
    if value not in allowed:
        raise UsageError(f"coreml option {key}={value!r} is not one of {', '.join(map(str, allowed))}")
    return value


def _palettize_mode(backend: dict[str, Any]) -> str:
    # k-means (coremltools' default, better accuracy) needs scikit-learn, which the coreml extra does not
    # install: default to it when present, else to uniform palettization (recorded in the artifact).
    has_sklearn = importlib.util.find_spec("sklearn") is not None
    mode = _choice(backend, "palettize_mode", "kmeans" if has_sklearn else "uniform", PALETTIZE_MODES)
    if mode == "kmeans" and not has_sklearn:
        raise UsageError(
            "coreml palettize_mode=kmeans needs scikit-learn (pip install scikit-learn); or use palettize_mode=uniform"
        )
    return mode


def parse_settings(options: ExportOptions) -> CoreMLSettings:
    backend = dict(options.backend or {})
    unknown = sorted(set(backend) - KNOWN_KEYS)
    if unknown:
        raise UsageError(
            f"unknown coreml option(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_KEYS))})"
        )
    precision = options.precision
    if precision not in PRECISIONS:
        raise UsageError(
            f"coreml does not support precision {precision!r} (supported: {', '.join(PRECISIONS)})"
        )
    if options.embed_preprocessing:
        # The ImageType input already is the embedded preprocessing (scale 1/255, BGR) Core ML applies.
        raise UsageError(
            "coreml embeds preprocessing through its image input; use input_type=image, not --embed-preprocessing"
        )

    default_compute = "fp32" if precision == "fp32" else "fp16"
    compute = _choice(backend, "compute_precision", default_compute, ("fp16", "fp32"))
    if precision in ("fp32", "fp16") and compute != precision:
        raise UsageError(f"coreml precision {precision} cannot run with compute_precision={compute}")
    if precision == "w8a8" and compute != "fp16":
        # Activation quantize/dequantize pairs are fp16 ops in the iOS17 opset.
        raise UsageError("coreml w8a8 needs compute_precision=fp16")

    minimum = _W8A8_TARGET if precision == "w8a8" else _MIN_TARGET
    requested = backend.get("deployment_target")
    if requested is None:
        target = resolve_target(minimum)
    else:
        target = resolve_target(requested)
        if precision == "w8a8" and _target_members()[target].value < _target_members()[minimum].value:
            raise UsageError(f"coreml w8a8 needs deployment target iOS17/macOS14 or later, got {requested!r}")

    if precision != "palettized" and "palettize_bits" in backend:
        raise UsageError(f"coreml option palettize_bits needs precision palettized, not {precision}")
    samples = backend.get("calibration_samples", 8)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise UsageError(f"coreml option calibration_samples={samples!r} must be a positive integer")
    return CoreMLSettings(
        precision=precision,
        compute_precision=compute,
        deployment_target=target,
        input_type=_choice(backend, "input_type", "image", INPUT_TYPES),
        argmax_mask=bool(_choice(backend, "argmax_mask", False, (True, False))),
        palettize_bits=_choice(backend, "palettize_bits", 6, PALETTIZE_BITS),
        palettize_mode=_palettize_mode(backend),
        quantize_mode=_choice(backend, "quantize_mode", "linear_symmetric", QUANTIZE_MODES),
        calibration_samples=samples,
        compute_units=_choice(backend, "compute_units", "ALL", COMPUTE_UNITS),
    )
