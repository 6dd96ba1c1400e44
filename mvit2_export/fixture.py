"""Small trained MobileViTV2s, so accuracy gates (int8 agreement) measure something real.

Classifier: which of the bundled real photos does a random crop come from (10 classes). Segmenter
(DeepLabV3): mosaics of 2x2 such crops, each pixel labelled with the photo its tile comes from. Training
crops come from the left 70% of each photo, held-out crops from the right 30% (`data/crops.py`), so
held-out numbers measure unseen pixels, not memorised ones; the int8 gate's built-in held-out set is
drawn from the same right 30%, and the default calibration set from the left 70%.
Classifier: width 0.5 at 128 px, 400 steps, 58% held-out accuracy (chance 10%); it took 16 min on
this 2-core host while other work ran (about 7 min quiet). Segmenter: see `SEGMENTATION`.

The checkpoint is saved in Hugging Face format (config.json with id2label + model.safetensors) and
cached under ~/.cache/mvit2-export/ keyed by the recipe, so tests and benchmarks train it once.
    python -m mvit2_export.fixture [--steps N]   # prints held-out accuracy and the folder
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.crops import HELDOUT_BAND, band_crops, load_photos, mosaics, random_crops
from .model import MobileViTV2Config, build_model
from .model.config import TASK_ARCHITECTURES
from .model.preprocess import images_to_pixel_values


@dataclass(frozen=True)
class Recipe:
    width: float = 0.5
    image_size: int = 128
    steps: int = 400
    batch: int = 32
    lr: float = 2e-3
    train_fraction: float = 0.7
    seed: int = 0
    version: int = 3  # bump when the training code changes meaning (3: 128 px, crops from data/crops.py)
    task: str = "classification"  # or "segmentation"

    def key(self) -> str:
        fields = asdict(self)
        if self.task == "classification":  # the key of classifier recipes from before `task` existed
            del fields["task"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


# The trained segmentation fixture: DeepLabV3 at width 0.5, 128 px, on 2x2 mosaics.
SEGMENTATION = Recipe(task="segmentation", steps=300)


def cache_root() -> Path:
    return Path(os.environ.get("MVIT2_EXPORT_CACHE", Path.home() / ".cache" / "mvit2-export"))


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (classifier) or pixel accuracy at the logits' resolution (segmenter)."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            out = model(torch.from_numpy(images_to_pixel_values(images[i : i + 64])))
            outs.append(out[0] if isinstance(out, tuple) else out)
    logits = torch.cat(outs)
    if labels.ndim == 3:
        return float((logits.argmax(1).numpy() == labels_at(labels, logits.shape[-1])).mean())
    return float((logits.argmax(-1).numpy() == labels).mean())


def train(recipe: Recipe, log: bool = False) -> tuple[nn.Module, float, list[str]]:
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    photos, names = load_photos()
    config = MobileViTV2Config(
        width_multiplier=recipe.width,
        image_size=recipe.image_size,
        id2label=dict(enumerate(names)),
        architectures=[TASK_ARCHITECTURES[recipe.task]],
        classifier_dropout_prob=0.0,
    )
    model = build_model(config, recipe.task)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    t0 = time.time()
    for step in range(recipe.steps):
        model.train()
        images, labels = training_batch(recipe, photos, rng)
        logits = model(torch.from_numpy(images_to_pixel_values(images)))
        if recipe.task == "segmentation":  # labels at the logits' resolution (output stride)
            logits = logits[0] if isinstance(logits, tuple) else logits
            labels = labels_at(labels, logits.shape[-1])
        loss = loss_fn(logits, torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    test_images, test_labels = heldout_set(recipe)
    return model.eval(), accuracy(model, test_images, test_labels), names


def training_batch(
    recipe: Recipe, photos: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    band = (0.0, recipe.train_fraction)
    if recipe.task == "segmentation":
        return mosaics(recipe.image_size, recipe.batch, band, int(rng.integers(1 << 30)))
    return random_crops(photos, recipe.batch, recipe.image_size, band, rng)


def labels_at(labels: np.ndarray, side: int) -> np.ndarray:
    """Per-pixel labels [N,H,W] sampled (nearest, pixel centres) at side x side."""
    h = labels.shape[1]
    idx = ((np.arange(side) + 0.5) * h / side).astype(int)
    return np.ascontiguousarray(labels[:, idx][:, :, idx])


def heldout_set(recipe: Recipe, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Crops (mosaics for segmentation) from the right part of each photo, never seen in training."""
    if recipe.task == "segmentation":
        return mosaics(recipe.image_size, n, HELDOUT_BAND, 10_000 + recipe.seed)
    return band_crops(recipe.image_size, n, (recipe.train_fraction, 1.0), 10_000 + recipe.seed)


def trained_fixture(recipe: Recipe | None = None, log: bool = False) -> Path:
    """The folder of the trained checkpoint, training it on first use (cached by recipe)."""
    recipe = recipe or Recipe()
    kind = "" if recipe.task == "classification" else f"{recipe.task}-"
    folder = cache_root() / f"trained-{kind}w{recipe.width:g}-{recipe.image_size}-{recipe.key()}"
    with _exclusive(folder.with_name(folder.name + ".lock")):  # one trainer per recipe (parallel tests)
        if not ((folder / "model.safetensors").is_file() and (folder / "fixture.json").is_file()):
            _train_and_save(recipe, folder, log)
    return folder


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An exclusive lock on `lock` while the body runs, where the OS has flock (elsewhere, none: a second
    process then trains too, and the atomic rename below keeps whichever finished first)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train_and_save(recipe: Recipe, folder: Path, log: bool) -> None:
    from safetensors.torch import save_file

    model, acc, _ = train(recipe, log=log)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(
        json.dumps({**model.config.to_dict(), "model_type": "mobilevitv2"}, indent=2)
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    (tmp / "fixture.json").write_text(
        json.dumps({"recipe": asdict(recipe), "heldout_accuracy": acc}, indent=2)
    )
    if folder.exists():  # another process finished first: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("classification", "segmentation"), default="classification")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args()
    base = SEGMENTATION if args.task == "segmentation" else Recipe()
    recipe = base if args.steps is None else replace(base, steps=args.steps)
    folder = trained_fixture(recipe, log=True)
    info = json.loads((folder / "fixture.json").read_text())
    print(f"held-out accuracy {info['heldout_accuracy']:.3f} (10 classes, chance 0.10): {folder}")


if __name__ == "__main__":
    main()
