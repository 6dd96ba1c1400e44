"""Shared fixtures: transformers' MobileViTV2 (the oracle) saved with save_pretrained, and real photos."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import threadpoolctl
import torch

# The cores are shared between pytest-xdist's workers: each worker's torch and numpy get its share. Two
# workers with two torch threads each on 2 cores ran the reference model 1.9x slower than with one thread
# each (314 vs 165 ms per image, w1.0 @ 256): idle OpenMP threads spin on the cores the other worker needs.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(_THREADS)
threadpoolctl.threadpool_limits(_THREADS, user_api="blas")

ARCH = {
    "classification": "MobileViTV2ForImageClassification",
    "segmentation": "MobileViTV2ForSemanticSegmentation",
    "backbone": "MobileViTV2Model",
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def build_hf_model(task: str, seed: int = 0, **config_kwargs):
    """transformers' model with random, non-trivial weights (BatchNorm statistics and norm affines included)."""
    transformers = pytest.importorskip("transformers")
    from mvit2_export.model.random_init import randomize_weights

    kwargs = {"num_labels": 10, "image_size": 64, "width_multiplier": 0.5}
    kwargs.update(config_kwargs)
    config = transformers.MobileViTV2Config(**kwargs)
    config.architectures = [ARCH[task]]
    model = getattr(transformers, ARCH[task])(config).eval()
    return randomize_weights(model, seed)


def hf_forward(model, x: torch.Tensor):
    """The oracle's outputs in our output convention."""
    with torch.no_grad():
        out = model(pixel_values=x)
    if hasattr(out, "logits"):
        return out.logits
    return out.last_hidden_state, out.pooler_output


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """Factory: save transformers' model via save_pretrained; returns (folder, model). Cached per config."""
    cache: dict[tuple, tuple[Path, object]] = {}

    def make(task: str = "classification", seed: int = 0, **config_kwargs):
        key = (task, seed, tuple(sorted(config_kwargs.items())))
        if key not in cache:
            model = build_hf_model(task, seed, **config_kwargs)
            folder = tmp_path_factory.mktemp(f"hf-{task}")
            # transformers' "Writing model shards" bar would land in the captured stderr of whichever test
            # builds the checkpoint first (under `pytest -n`, a different one per worker).
            with contextlib.redirect_stderr(io.StringIO()):
                model.save_pretrained(folder)
            cache[key] = (folder, model)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos shipped with scikit-image, as uint8 RGB arrays."""
    data = pytest.importorskip("skimage.data")
    out = {}
    for name in PHOTOS:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out[name] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    return out


@pytest.fixture(scope="session", autouse=True)
def _own_tempdir():
    """This process's temporary files (and its subprocesses') in one folder, removed at the end: coremltools
    deletes a converted model's temporary package at exit (atexit), which a process that ends without
    running atexit skips; one suite run left 72 of them in /tmp, and 290 (1 GB) had piled up."""
    folder = tempfile.mkdtemp(prefix="mvit2-tests-")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = folder
    yield
    tempfile.tempdir = saved[0]
    if saved[1] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[1]
    shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The full-size tests first, then the long ones (a stable sort): with `-n 2`, a 10-minute test picked
    up last would run alone while the other worker sits idle."""

    def rank(item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("long") else 2

    items.sort(key=rank)
