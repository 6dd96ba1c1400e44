"""A small trained MobileViTV2, so accuracy gates (int8 top-1 agreement) measure something real.

Task: which of the bundled real photos does a random crop come from (10 classes). Training crops come
from the left 70% of each photo, held-out crops from the right 30%, so held-out accuracy measures
generalisation to unseen pixels, not memorised ones. Width 0.5 at 64 px, 400 steps: 151 CPU-seconds on one
thread (so at most ~2.5 min), 69% held-out accuracy (chance 10%); the earlier 128 px / 600-step recipe took
8 minutes on 2 cores for 70.5%.

The checkpoint is saved in Hugging Face format (config.json with id2label + model.safetensors) and
cached under ~/.cache/mvit2-export/ keyed by the recipe, so tests and benchmarks train it once.
    python -m mvit2_export.fixture [--steps N]   # prints held-out accuracy and the folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import bundled_photos
from .model import MobileViTV2Config, build_model
from .model.config import TASK_ARCHITECTURES
from .model.preprocess import images_to_pixel_values


@dataclass(frozen=True)
class Recipe:
    width: float = 0.5
    image_size: int = 64
    steps: int = 400
    batch: int = 32
    lr: float = 2e-3
    train_fraction: float = 0.7
    seed: int = 0
    version: int = 2  # bump when the training code changes meaning (2: 64 px, 400 steps)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("MVIT2_EXPORT_CACHE", Path.home() / ".cache" / "mvit2-export"))


def load_photos() -> tuple[list[np.ndarray], list[str]]:
    paths = bundled_photos()
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths], [p.stem for p in paths]


def random_crops(
    photos: list[np.ndarray], n: int, size: int, region: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n crops (uint8 RGB [n,size,size,3]) from the horizontal `region` of random photos, with labels."""
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


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                model(torch.from_numpy(images_to_pixel_values(images[i : i + 64])))
                for i in range(0, len(images), 64)
            ]
        )
    return float((logits.argmax(-1).numpy() == labels).mean())


def train(recipe: Recipe, log: bool = False) -> tuple[nn.Module, float, list[str]]:
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    photos, names = load_photos()
    config = MobileViTV2Config(
        width_multiplier=recipe.width,
        image_size=recipe.image_size,
        id2label=dict(enumerate(names)),
        architectures=[TASK_ARCHITECTURES["classification"]],
        classifier_dropout_prob=0.0,
    )
    model = build_model(config, "classification")
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    t0 = time.time()
    for step in range(recipe.steps):
        model.train()
        images, labels = random_crops(
            photos, recipe.batch, recipe.image_size, (0.0, recipe.train_fraction), rng
        )
        loss = loss_fn(model(torch.from_numpy(images_to_pixel_values(images))), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    test_images, test_labels = heldout_set(recipe)
    return model.eval(), accuracy(model, test_images, test_labels), names


def heldout_set(recipe: Recipe, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Crops from the right part of each photo, never seen in training; fixed seed."""
    photos, _ = load_photos()
    return random_crops(
        photos,
        n,
        recipe.image_size,
        (recipe.train_fraction, 1.0),
        np.random.default_rng(10_000 + recipe.seed),
    )


def trained_fixture(recipe: Recipe | None = None, log: bool = False) -> Path:
    """The folder of the trained checkpoint, training it on first use (cached by recipe)."""
    from safetensors.torch import save_file

    recipe = recipe or Recipe()
    folder = cache_root() / f"trained-w{recipe.width:g}-{recipe.image_size}-{recipe.key()}"
    if (folder / "model.safetensors").is_file() and (folder / "fixture.json").is_file():
        return folder
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
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=Recipe.steps)
    args = p.parse_args()
    folder = trained_fixture(Recipe(steps=args.steps), log=True)
    info = json.loads((folder / "fixture.json").read_text())
    print(f"held-out accuracy {info['heldout_accuracy']:.3f} (10 classes, chance 0.10): {folder}")


if __name__ == "__main__":
    main()
