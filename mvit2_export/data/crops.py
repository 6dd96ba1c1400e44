"""Random square crops of the bundled photos, from a horizontal band of each photo.

The band split keeps image sets disjoint in pixels: int8 calibration and the trained fixture's training
crops come from the left 70% of every photo, held-out validation crops from the right 30%.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import bundled_photos

TRAIN_BAND = (0.0, 0.7)
HELDOUT_BAND = (0.7, 1.0)


def load_photos() -> tuple[list[np.ndarray], list[str]]:
    paths = bundled_photos()
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths], [p.stem for p in paths]


def random_crops(
    photos: list[np.ndarray], n: int, size: int, region: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n crops (uint8 RGB [n,size,size,3]) from the horizontal `region` of random photos, with labels
    (the photo's index); random side 35-90% of the band, random horizontal flip."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(photos), size=n)
    for i, label in enumerate(labels):
        photo = photos[label]
        h, w = photo.shape[:2]
        x0, x1 = int(region[0] * w), int(region[1] * w)
        side = int(rng.uniform(0.35, 0.9) * min(h, x1 - x0))
        top = rng.integers(0, h - side + 1)
        left = rng.integers(x0, x1 - side + 1)
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        arr = np.asarray(crop)
        images[i] = arr[:, ::-1] if rng.random() < 0.5 else arr
    return images, labels


def band_crops(size: int, n: int, band: tuple[float, float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    photos, _ = load_photos()
    return random_crops(photos, n, size, band, np.random.default_rng(seed))


def mosaics(
    size: int, n: int, band: tuple[float, float], seed: int, grid: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """n images of grid x grid tiles, each a crop of a random photo; labels [n,size,size] give, per pixel,
    the index of the photo the tile comes from (the trained segmentation fixture's task)."""
    photos, _ = load_photos()
    rng = np.random.default_rng(seed)
    tile = size // grid
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        crops, which = random_crops(photos, grid * grid, size, band, rng)
        for k in range(grid * grid):
            r, c = divmod(k, grid)
            ys = slice(r * tile, size if r == grid - 1 else (r + 1) * tile)
            xs = slice(c * tile, size if c == grid - 1 else (c + 1) * tile)
            images[i, ys, xs] = crops[k][ys, xs]
            labels[i, ys, xs] = which[k]
    return images, labels
