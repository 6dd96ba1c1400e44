"""Held-out validation images for the int8 accuracy gate: never the calibration images.

Two sources:
- the user's folder (`--validation-images DIR`): one subfolder per label name of the checkpoint's
  id2label, images inside; labels make an accuracy comparison possible;
- built in: augmented crops (random scale, position, flip) from the right 30% of every bundled photo,
  while the default calibration set comes from the left 70% (`data/crops.py`), so the two never share a
  pixel. For the trained fixtures these are also pixels the model never saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..model.preprocess import IMAGE_SUFFIXES
from .crops import HELDOUT_BAND, TRAIN_BAND, band_crops, mosaics

HELDOUT_SEED = 20_000
CALIBRATION_SEED = 30_000
CALIBRATION_IMAGES = 64  # trained fixture, all-int8 ONNX: 32 and 64 crops 0.976, 128 crops 0.984


@dataclass
class HeldoutSet:
    images: np.ndarray  # uint8 RGB [N,H,W,3]
    labels: np.ndarray | None  # [N] label ids (a folder's subfolders), or None
    source: str  # what a report prints: "folder DIR" or "built-in: ..."
    skipped: int = 0  # files that were not readable images

    def __len__(self) -> int:
        return len(self.images)


def default_count(task: str) -> int:
    """Held-out images the gate runs when the user gives none: 1000 crops for a classifier or backbone,
    so each half the gate judges on its own (parity/gate.py) has 500; 96 mosaics for segmentation. Pixel
    votes within a mosaic are far from independent: on the trained segmenter, halves of 24 mosaics
    differed by 0.8 points (0.9896 / 0.9974)."""
    return 96 if task == "segmentation" else 1000


def builtin_heldout(task: str, size: int, n: int | None = None) -> HeldoutSet:
    n = default_count(task) if n is None else n
    if task == "segmentation":
        images, _ = mosaics(size, n, HELDOUT_BAND, HELDOUT_SEED)
        what = f"{n} mosaics of crops from the right 30% of the bundled photos"
    else:
        images, _ = band_crops(size, n, HELDOUT_BAND, HELDOUT_SEED)
        what = f"{n} augmented crops from the right 30% of the bundled photos"
    return HeldoutSet(images, None, f"built-in: {what} (calibration uses the left 70%)")


def default_calibration(size: int) -> np.ndarray:
    """The default int8 calibration set: augmented crops of the left 70% of the bundled photos."""
    images, _ = band_crops(size, CALIBRATION_IMAGES, TRAIN_BAND, CALIBRATION_SEED)
    return images


def folder_heldout(folder: Path, id2label: dict[int, str], size: int) -> HeldoutSet:
    """A labelled image folder: DIR/<label name>/<images>. Subfolders that are not labels of the
    checkpoint are a usage error; files that are not readable images are skipped and counted."""
    from .images import read_or_skip

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: validation images must be a directory of label subfolders")
    by_name = {str(v): int(k) for k, v in id2label.items()}
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subdirs:
        raise UsageError(
            f"{folder}: no label subfolders (expected one folder per label name, e.g. {folder}/"
            f"{next(iter(by_name), 'cat')}/)"
        )
    unknown = [p.name for p in subdirs if p.name not in by_name]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise UsageError(
            f"{folder}: subfolder(s) {shown} are not labels of the checkpoint "
            f"({len(by_name)} labels, e.g. {', '.join(repr(n) for n in list(by_name)[:3])})"
        )
    images, labels, skipped = [], [], 0
    for sub in subdirs:
        for path in sorted(p for p in sub.iterdir() if p.is_file()):
            image = read_or_skip(path, size)
            if image is None:
                skipped += 1
                continue
            images.append(image)
            labels.append(by_name[sub.name])
    if not images:
        raise UsageError(
            f"{folder}: no readable images in its label subfolders (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    note = f", {skipped} unreadable file(s) skipped" if skipped else ""
    return HeldoutSet(
        np.stack(images),
        np.asarray(labels),
        f"folder {folder} ({len(images)} labelled images{note})",
        skipped,
    )
