"""MobileViTV2 configuration with the fields of transformers' `MobileViTV2Config`.

A `config.json` of a published checkpoint loads as is; fields we do not use are kept in `extra` so a
round trip does not lose them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputSizeError

TASKS = ("classification", "segmentation", "backbone")

# transformers' architecture class names -> our task names.
ARCHITECTURE_TASKS = {
    "MobileViTV2ForImageClassification": "classification",
    "MobileViTV2ForSemanticSegmentation": "segmentation",
    "MobileViTV2Model": "backbone",
}
TASK_ARCHITECTURES = {v: k for k, v in ARCHITECTURE_TASKS.items()}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor` (same rule as ml-cvnets and transformers)."""
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


@dataclass
class MobileViTV2Config:
    num_channels: int = 3
    image_size: int = 256
    patch_size: int = 2
    expand_ratio: float = 2.0
    hidden_act: str = "swish"
    conv_kernel_size: int = 3
    output_stride: int = 32
    classifier_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    aspp_out_channels: int = 512
    atrous_rates: list[int] = field(default_factory=lambda: [6, 12, 18])
    aspp_dropout_prob: float = 0.1
    semantic_loss_ignore_index: int = 255
    n_attn_blocks: list[int] = field(default_factory=lambda: [2, 4, 3])
    base_attn_unit_dims: list[int] = field(default_factory=lambda: [128, 192, 256])
    width_multiplier: float = 1.0
    ffn_multiplier: int = 2
    attn_dropout: float = 0.0
    ffn_dropout: float = 0.0
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    architectures: list[str] | None = None
    model_type: str = "mobilevitv2"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (list, tuple)):
            if len(set(self.image_size)) != 1:
                raise ConfigError(f"non-square image_size {self.image_size} is not supported")
            self.image_size = int(self.image_size[0])
        if isinstance(self.patch_size, (list, tuple)):
            self.patch_size = int(self.patch_size[0])
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        self.atrous_rates = [int(r) for r in self.atrous_rates]
        self.n_attn_blocks = [int(n) for n in self.n_attn_blocks]
        self.base_attn_unit_dims = [int(d) for d in self.base_attn_unit_dims]
        self.validate()

    # -- derived values --------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @property
    def channels(self) -> list[int]:
        """Output channels of the stem and of encoder layers 1..5."""
        w = self.width_multiplier
        return [
            make_divisible(max(16, min(64, 32 * w)), divisor=8, min_value=16),
            make_divisible(64 * w, divisor=16),
            make_divisible(128 * w, divisor=8),
            make_divisible(256 * w, divisor=8),
            make_divisible(384 * w, divisor=8),
            make_divisible(512 * w, divisor=8),
        ]

    @property
    def attn_unit_dims(self) -> list[int]:
        return [make_divisible(d * self.width_multiplier, divisor=8) for d in self.base_attn_unit_dims]

    @property
    def task(self) -> str | None:
        for arch in self.architectures or []:
            if arch in ARCHITECTURE_TASKS:
                return ARCHITECTURE_TASKS[arch]
        return None

    def layer_strides(self) -> list[tuple[int, int]]:
        """(stride, dilation) of encoder layers 3, 4 and 5, as transformers derives them from output_stride."""
        dilate4 = self.output_stride == 8
        dilate5 = self.output_stride in (8, 16)
        d4 = 2 if dilate4 else 1
        d5 = d4 * 2 if dilate5 else d4
        return [(2, 1), (2, d4), (2, d5)]

    # -- checks ----------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.model_type != "mobilevitv2":
            raise ConfigError(f"model_type is {self.model_type!r}, expected 'mobilevitv2'")
        if not 0.25 <= float(self.width_multiplier) <= 4.0:
            raise ConfigError(f"width_multiplier {self.width_multiplier} is outside 0.25..4.0")
        if self.output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride {self.output_stride} must be 8, 16 or 32")
        if len(self.n_attn_blocks) != 3 or len(self.base_attn_unit_dims) != 3:
            raise ConfigError("n_attn_blocks and base_attn_unit_dims need 3 entries each")
        if len(self.atrous_rates) != 3:
            raise ConfigError(f"atrous_rates needs 3 entries, got {self.atrous_rates}")
        if self.patch_size < 1 or self.num_channels < 1:
            raise ConfigError("patch_size and num_channels must be positive")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Spatial size entering each transformer stage (layers 3, 4, 5) for an input of height x width."""

        def down(n: int, stride: int) -> int:  # 3x3 conv, padding 1
            return (n - 1) // stride + 1

        h, w = down(height, 2), down(width, 2)  # stem
        h, w = down(h, 2), down(w, 2)  # layer 2 (layer 1 has stride 1)
        sizes = []
        for _stride, dilation in self.layer_strides():
            if dilation == 1:
                h, w = down(h, 2), down(w, 2)
            sizes.append((h, w))
        return sizes

    def check_image_size(self, height: int, width: int | None = None) -> None:
        """Raise InputSizeError unless patches of patch_size tile the feature map of every transformer stage."""
        width = height if width is None else width
        if height < 1 or width < 1:
            raise InputSizeError(f"image size {height}x{width} must be positive")
        p = self.patch_size
        for stage, (h, w) in zip((3, 4, 5), self.feature_sizes(height, width), strict=True):
            if h % p or w % p:
                raise InputSizeError(
                    f"image size {height}x{width} gives a {h}x{w} feature map at layer {stage}, "
                    f"which {p}x{p} patches cannot tile; use a multiple of {self.size_multiple()}"
                )

    def size_multiple(self) -> int:
        """An image-size step that always works: every stride-2 stage before the last transformer, times the patch."""
        undilated = sum(1 for _, d in self.layer_strides() if d == 1)
        return 2 ** (2 + undilated) * self.patch_size

    # -- (de)serialisation -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MobileViTV2Config:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {k: data.pop(k) for k in list(data) if k in known}
        if "id2label" not in kwargs and "num_labels" in data:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(data["num_labels"]))}
        data.pop("num_labels", None)
        data.pop("label2id", None)
        try:
            return cls(**kwargs, extra=data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid MobileViTV2 config: {exc}") from exc

    @classmethod
    def from_json_file(cls, path: str | Path) -> MobileViTV2Config:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config.json not found") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON file ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        if data.get("model_type") != "mobilevitv2":
            raise ConfigError(f"{path}: model_type is {data.get('model_type')!r}, expected 'mobilevitv2'")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = self.label2id
        out["num_labels"] = self.num_labels
        return {**self.extra, **out}


ACTIVATIONS = ("swish", "silu", "relu", "gelu", "relu6", "hardswish", "sigmoid", "tanh")
