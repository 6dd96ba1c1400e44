"""Preprocessing with the semantics of transformers' `MobileViTImageProcessor` (PIL backend), in NumPy/Pillow.

resize the shortest edge (Pillow, default bilinear) -> center crop (zero-pad when the image is smaller)
-> rescale by 1/255 -> flip RGB to BGR. No mean/std normalisation: pretrained checkpoints expect BGR in [0,1].
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import CheckpointError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


@dataclass
class Preprocessor:
    crop_height: int = 256
    crop_width: int = 256
    shortest_edge: int = 288
    resample: int = int(Image.Resampling.BILINEAR)
    rescale_factor: float = 1 / 255
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_flip_channel_order: bool = True

    @classmethod
    def for_image_size(cls, image_size: int) -> Preprocessor:
        """The published checkpoints' recipe: resize the short side to 1.125x the crop, then crop."""
        return cls(crop_height=image_size, crop_width=image_size, shortest_edge=int(image_size * 1.125))

    @classmethod
    def from_dict(cls, data: dict[str, Any], image_size: int = 256) -> Preprocessor:
        pre = cls.for_image_size(image_size)
        size = data.get("size") or {}
        if isinstance(size, dict) and "shortest_edge" in size:
            pre.shortest_edge = int(size["shortest_edge"])
        elif isinstance(size, int):
            pre.shortest_edge = size
        crop = data.get("crop_size") or {}
        if isinstance(crop, dict) and "height" in crop:
            pre.crop_height, pre.crop_width = int(crop["height"]), int(crop["width"])
        for key in (
            "resample",
            "rescale_factor",
            "do_resize",
            "do_center_crop",
            "do_rescale",
            "do_flip_channel_order",
        ):
            if data.get(key) is not None:
                setattr(pre, key, type(getattr(pre, key))(data[key]))
        return pre

    @classmethod
    def from_pretrained(cls, folder: str | Path, image_size: int = 256) -> Preprocessor:
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return cls.for_image_size(image_size)
        try:
            return cls.from_dict(json.loads(path.read_text()), image_size)
        except (ValueError, TypeError, OSError) as exc:
            raise CheckpointError(f"{path}: not a valid preprocessor config ({exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        """Fields in transformers' preprocessor_config.json vocabulary (plus our own names)."""
        d = asdict(self)
        d["size"] = {"shortest_edge": self.shortest_edge}
        d["crop_size"] = {"height": self.crop_height, "width": self.crop_width}
        d["channel_order"] = "BGR" if self.do_flip_channel_order else "RGB"
        d["layout"] = "NCHW"
        return d

    # -- the transform ------------------------------------------------------------------------------
    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One image (PIL, or uint8 HWC RGB array) -> float32 [3, H, W]."""
        arr = to_rgb_array(image)
        if self.do_resize:
            h, w = arr.shape[:2]
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
            arr = np.asarray(Image.fromarray(arr).resize((new_w, new_h), resample=self.resample))
        chw = arr.transpose(2, 0, 1)
        if self.do_center_crop:
            chw = center_crop(chw, self.crop_height, self.crop_width)
        out = chw.astype(np.float64) * self.rescale_factor if self.do_rescale else chw.astype(np.float64)
        out = out.astype(np.float32)
        if self.do_flip_channel_order:
            out = out[::-1]
        return np.ascontiguousarray(out)

    def batch(self, images: list[Image.Image | np.ndarray]) -> np.ndarray:
        return np.stack([self(im) for im in images])


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise UsageError(f"expected an HxWx3 RGB image, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise UsageError(f"expected a uint8 image, got {arr.dtype}")
    return np.ascontiguousarray(arr[..., :3])


def center_crop(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' center_crop: top/left = (orig - crop) // 2, zero padding when the image is smaller."""
    _, h, w = chw.shape
    if h >= height and w >= width:
        top, left = (h - height) // 2, (w - width) // 2
        return chw[:, top : top + height, left : left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((chw.shape[0], new_h, new_w), dtype=chw.dtype)
    top_pad, left_pad = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded[:, top_pad : top_pad + h, left_pad : left_pad + w] = chw
    top, left = (h - height) // 2 + top_pad, (w - width) // 2 + left_pad
    bottom, right = top + height, left + width
    return padded[:, max(0, top) : min(new_h, bottom), max(0, left) : min(new_w, right)]


def load_image(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable image ({exc})") from exc


def images_to_pixel_values(images: np.ndarray) -> np.ndarray:
    """uint8 RGB [B,H,W,3] -> the reference input: float32 BGR [B,3,H,W] in [0,1] (rescale, flip, layout)."""
    x = images[..., ::-1].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class EmbeddedPreprocessing(nn.Module):
    """uint8 RGB NHWC in -> reference model: the graph does the scaling, the RGB->BGR flip and the layout."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Any:
        x = images.to(torch.float32) * (1.0 / 255.0)
        x = x.flip(-1).permute(0, 3, 1, 2)
        return self.model(x)
