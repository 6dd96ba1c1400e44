"""`mvit2-export bench OUT --device mac`: `MLModel.predict` latency of every .mlpackage, per compute-units
setting (CPU_ONLY, CPU_AND_GPU, CPU_AND_NE, ALL), stored in `entry.device_latency["mac"]`.

Each setting loads the package anew (`ct.models.MLModel(path, compute_units=..)`, its load time is
recorded: Core ML compiles for the chosen units there), then times `predict` on one bundled photo with
`measure_latency` (warm-up, then N runs; median and p90). The input is fed as the package declares it:
a PIL image for an image input (Core ML does the 1/255 scaling and BGR order), the reference
`pixel_values` array for a tensor input, the same feeds `CoreMLRunner` uses for parity.

Core ML predictions need macOS: elsewhere this raises DeviceError. The macOS path cannot run on the
Linux machines this project is built and tested on; only the non-macOS error is tested here.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BackendMissingError, DeviceError, UsageError
from ..exporters import targets_for_device
from ..exporters.coreml import CoreMLExporter
from ..manifest import ArtifactEntry, Manifest, read_manifest, verify_artifact, write_manifest
from ..report import write_report
from .latency import measure_latency

RUNTIME = "coreml-MLModel.predict"
COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


def require_macos() -> None:
    if sys.platform != "darwin":
        raise DeviceError(
            f"--device mac needs macOS: Core ML predictions run only there (this host is {platform.system()})"
        )
    from ..exporters.coreml.runner import can_predict

    if not can_predict():
        raise BackendMissingError(
            CoreMLExporter.target, CoreMLExporter.extra, "coremltools without its macOS extension"
        )


def _time_predict(
    path: Path, entry: ArtifactEntry, image: Any, units: str, warmup: int, runs: int
) -> dict[str, Any]:
    from PIL import Image

    from ..exporters.coreml.convert import INPUT_NAME
    from ..exporters.coreml.runner import CoreMLRunner
    from ..model.preprocess import images_to_pixel_values

    names = list((entry.options or {}).get("reference_outputs") or [])
    t0 = time.perf_counter()
    runner = CoreMLRunner(path, names, units)
    load_s = time.perf_counter() - t0
    x = Image.fromarray(image) if runner.image_input else images_to_pixel_values(image[None])
    feed = {INPUT_NAME: x}
    # threads 0: Core ML schedules its own work; there is no thread count to set.
    lat = measure_latency(lambda: runner.model.predict(feed), f"coreml-{units}", 0, warmup, runs)
    return {**lat.to_dict(), "load_s": load_s}


def bench_mac(
    out: str | Path, warmup: int = 5, runs: int = 20, say: Callable[[str], None] = lambda _msg: None
) -> tuple[Manifest, list[str]]:
    """Time every .mlpackage of OUT per compute-units setting; returns the manifest and skipped artifacts."""
    require_macos()
    from ..data.images import parity_images

    out = Path(out)
    manifest = read_manifest(out)
    runs_here = targets_for_device("mac")
    entries = [a for a in manifest.artifacts if a.target in runs_here]
    skipped = [a.path for a in manifest.artifacts if a.target not in runs_here]
    if not entries:
        raise UsageError(f"{out}: no .mlpackage artifact to time (export with --target coreml)")
    image = parity_images(int(manifest.model["image_size"]), n_photos=1, n_random=0)[0]
    device = f"{platform.machine()} macOS {platform.mac_ver()[0]}"
    for entry in entries:
        path = verify_artifact(out, entry)
        per_units = {}
        for units in COMPUTE_UNITS:
            say(f"{path.name}: MLModel.predict with {units}")
            per_units[units] = _time_predict(path, entry, image, units, warmup, runs)
        entry.device_latency = entry.device_latency or {}
        entry.device_latency["mac"] = {
            "runtime": RUNTIME,
            "device": device,
            "warmup": warmup,
            "runs": runs,
            "compute_units": per_units,
        }
        write_manifest(out, manifest)
    write_report(out, manifest)
    return manifest, skipped
