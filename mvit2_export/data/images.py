"""The parity input set: real photos (bundled) plus random images, as uint8 RGB [N,H,W,3].

Images rather than tensors so that artifacts with embedded preprocessing get exactly what a camera gives,
and the reference gets the same pixels after the same rescale and RGB->BGR flip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..model.preprocess import IMAGE_SUFFIXES, center_crop, load_image
from . import bundled_photos


def resize_and_crop(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to 1.125x size (bilinear) and center-crop: uint8 RGB [size,size,3]."""
    short = int(size * 1.125)
    scale = short / min(image.size)
    resized = image.convert("RGB").resize(
        (max(short, round(image.width * scale)), max(short, round(image.height * scale))),
        Image.Resampling.BILINEAR,
    )
    chw = center_crop(np.asarray(resized).transpose(2, 0, 1), size, size)
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


def load_images(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([resize_and_crop(load_image(p), size) for p in paths])


def parity_images(size: int, n_photos: int | None = None, n_random: int = 2, seed: int = 0) -> np.ndarray:
    """Bundled real photos then `n_random` uniform-noise images, uint8 RGB [N,size,size,3]."""
    photos = bundled_photos()[:n_photos] if n_photos is not None else bundled_photos()
    parts = [load_images(photos, size)] if photos else []
    if n_random:
        rng = np.random.default_rng(seed)
        parts.append(rng.integers(0, 256, size=(n_random, size, size, 3), dtype=np.uint8))
    return np.concatenate(parts)


def read_or_skip(path: Path, size: int) -> np.ndarray | None:
    """One file of a user's image folder, resized and cropped; None for a file that is not an image or
    does not decode (the callers skip and count it)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    try:
        return resize_and_crop(load_image(path), size)
    except UsageError:
        return None


def read_calibration(folder: Path, size: int, limit: int = 64) -> tuple[np.ndarray, int]:
    """The first `limit` readable images of a plain folder, and how many of the files looked at were
    skipped (not an image, or an image that does not decode). None readable: a usage error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: calibration images must be a directory")
    images, skipped = [], 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if len(images) == limit:
            break
        image = read_or_skip(path, size)
        if image is None:
            skipped += 1  # an unreadable file among readable ones is skipped; none readable is an error
        else:
            images.append(image)
    if not images:
        raise UsageError(
            f"{folder}: no readable images for calibration (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return np.stack(images), skipped


def calibration_images(folder: Path | None, size: int, limit: int = 64) -> np.ndarray:
    """Images for int8 calibration: a user folder, or crops of the left 70% of the bundled photos (the
    held-out gate's built-in images come from the right 30%). Errors when a folder has none."""
    if folder is None:
        from .validation import default_calibration

        return default_calibration(size)
    return read_calibration(folder, size, limit)[0]


def describe_calibration(folder: Path | None, size: int, limit: int = 64) -> dict[str, object]:
    """For the manifest and report: where the calibration images come from, how many are used, how many
    files were skipped. Reads a user folder once up front, so a folder with no readable image fails
    before anything is written."""
    if folder is None:
        from .validation import CALIBRATION_IMAGES

        return {
            "source": "augmented crops of the left 70% of the bundled photos",
            "images": CALIBRATION_IMAGES,
        }
    images, skipped = read_calibration(folder, size, limit)
    return {"source": str(folder), "images": len(images), "skipped_files": skipped}
