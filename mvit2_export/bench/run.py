"""`mvit2-export bench`: latency of every artifact in an OUT directory next to the PyTorch reference."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ..api import Progress, load_reference_for_manifest
from ..data.images import parity_images
from ..exporters import get_exporter
from ..manifest import ArtifactEntry, Manifest, read_manifest, verify_artifact, write_manifest
from ..model.preprocess import images_to_pixel_values
from ..progress import ProgressEvent, as_listener
from ..report import write_report
from .machine import machine_facts
from .threading import best_threading, thread_candidates


def bench(
    out: str | Path,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 20,
    checkpoint: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Every runtime at its best threading (`threads` None: searched, see bench/threading.py; an int pins
    it). `progress` as in `export`: a "bench" event for PyTorch and one per artifact, then "done"."""
    listener, started = as_listener(progress), time.time()

    def say(text: str, done: int, total: int, entry: ArtifactEntry | None = None) -> None:
        target, precision = (entry.target, entry.precision) if entry else (None, None)
        listener(ProgressEvent("bench", text, done, total, target, precision).since(started))

    out = Path(out)
    manifest = read_manifest(out)
    steps = 1 + len(manifest.artifacts)
    size = int(manifest.model["image_size"])
    image = parity_images(size, n_photos=1, n_random=0)
    model = load_reference_for_manifest(manifest, checkpoint)
    x = torch.from_numpy(images_to_pixel_values(image))
    candidates = thread_candidates(threads)
    say("timing pytorch eager", 0, steps)

    def eager(n: int, _setting: dict[str, Any]) -> Any:
        torch.set_num_threads(n)
        return lambda: model(x)

    before = torch.get_num_threads()
    with torch.no_grad():
        ref = best_threading(eager, "pytorch-eager", candidates, [{}], warmup, runs)
    torch.set_num_threads(before)
    manifest.reference_latency = {**ref.to_dict(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    manifest.host = machine_facts()
    for n, entry in enumerate(manifest.artifacts, 1):
        say(f"timing {entry.path}", n, steps, entry)
        path = verify_artifact(out, entry)
        exporter = get_exporter(entry.target)
        counts = exporter.bench_threads(candidates)
        runner = exporter.load_runner(path, entry, counts[0])
        note = getattr(runner, "not_timed", None)
        if note:
            entry.latency = {"runtime": runner.runtime, "median_ms": None, "note": note}
            continue

        def make(k: int, setting: dict[str, Any], path=path, entry=entry, exporter=exporter) -> Any:
            r = exporter.load_runner(path, entry, k, **setting)
            return lambda: r.run(image)

        entry.latency = best_threading(
            make, runner.runtime, counts, exporter.bench_settings(), warmup, runs
        ).to_dict()
    write_manifest(out, manifest)
    write_report(out, manifest)
    listener(ProgressEvent("done", "done", steps, steps).since(started))
    return manifest
