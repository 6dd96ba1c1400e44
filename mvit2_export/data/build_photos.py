"""Rebuild the bundled photo set from scikit-image's sample data (run once; the JPEGs are committed).

`python -m mvit2_export.data.build_photos` needs scikit-image. The photos are scikit-image's public-domain
or CC0 samples (see its data/README), resized so the short side is 320 px and saved as JPEG quality 90,
so the tool has real photos for parity checks and int8 calibration without any download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
    "camera",
    "coins",
)
SHORT_SIDE = 320


def main() -> None:
    from skimage import data

    out = Path(__file__).parent / "photos"
    out.mkdir(exist_ok=True)
    for name in NAMES:
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img
        img = np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]
        im = Image.fromarray(img.astype(np.uint8))
        scale = SHORT_SIDE / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
        im.save(out / f"{name}.jpg", quality=90)


if __name__ == "__main__":
    main()
