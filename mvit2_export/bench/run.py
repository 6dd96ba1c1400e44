"""`mvit2-export bench`: latency of every artifact in an OUT directory next to the PyTorch reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..api import Progress, load_reference_for_manifest
from ..exporters import get_exporter
from ..exporters.base import images_to_pixel_values
from ..manifest import read_manifest, verify_artifact, write_manifest
from ..parity.inputs import parity_images
from ..report import write_report
from .latency import measure_latency

# Runtimes whose timings say nothing about a device: the NumPy MIL interpreter is a correctness oracle.
NOT_TIMED = {"mil-reference": "Core ML latency needs macOS (MLModel.predict)"}


def bench(
    out: str | Path,
    threads: int = 2,
    warmup: int = 5,
    runs: int = 20,
    checkpoint: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """`progress(step, done, total)` as in `export`: one step for PyTorch, one per artifact."""
    say = progress or (lambda _step, _done, _total: None)
    out = Path(out)
    manifest = read_manifest(out)
    steps = 1 + len(manifest["artifacts"])
    size = int(manifest["model"]["image_size"])
    image = parity_images(size, n_photos=1, n_random=0)
    model = load_reference_for_manifest(manifest, checkpoint)
    torch.set_num_threads(threads)
    x = torch.from_numpy(images_to_pixel_values(image))
    say("timing pytorch eager", 0, steps)
    with torch.no_grad():
        manifest["reference_latency"] = measure_latency(
            lambda: model(x), "pytorch-eager", threads, warmup, runs
        ).to_dict()
    for n, entry in enumerate(manifest["artifacts"], 1):
        say(f"timing {entry['path']}", n, steps)
        path = verify_artifact(out, entry)
        runner = get_exporter(entry["target"]).load_runner(path, entry, threads)
        if runner.runtime in NOT_TIMED:
            entry["latency"] = {
                "runtime": runner.runtime,
                "median_ms": None,
                "note": NOT_TIMED[runner.runtime],
            }
            continue
        entry["latency"] = measure_latency(
            lambda r=runner: r.run(image), runner.runtime, threads, warmup, runs
        ).to_dict()
    write_manifest(out, manifest)
    write_report(out, manifest)
    return manifest
