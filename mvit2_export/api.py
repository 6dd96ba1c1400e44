"""The Python API, mirroring the command line.

    manifest = mvit2_export.export("./mobilevitv2-1.0-imagenet1k-256", "onnx", "out/", precision="fp32,fp16")

`model_or_path` is a checkpoint folder or hub id, None (the embedded default), one of our reference
models, or a transformers `MobileViTV2*` instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__
from .audit import audit_histogram
from .errors import CheckpointError, OutputExistsError, ParityError, UsageError
from .exporters import ExportOptions, get_exporter, parse_targets
from .exporters.base import PRECISIONS, default_threads
from .manifest import MANIFEST, SCHEMA, sha256_path, write_manifest
from .model import MobileViTV2Config, Preprocessor, build_model, load_model
from .model.checkpoint import CheckpointInfo, load_state_dict_strict, state_dict_sha256
from .model.config import ARCHITECTURE_TASKS

# progress(step, done, total): called as each long step starts, with how many of `total` are finished.
Progress = Callable[[str, int, int], None]


# fp32/fp16/int8 for every target; Core ML also has weight palettization and W8A8 (its exporter says which).
KNOWN_PRECISIONS = (*PRECISIONS, "palettized", "w8a8")


def parse_precisions(value: str | list[str]) -> list[str]:
    items = value if isinstance(value, list) else [p.strip().lower() for p in value.split(",") if p.strip()]
    if not items:
        raise UsageError("--precision needs a value: fp32, fp16 or int8 (comma list allowed)")
    for p in items:
        if p not in KNOWN_PRECISIONS:
            raise UsageError(
                f"unknown precision {p!r}; expected a comma list of {', '.join(KNOWN_PRECISIONS)}"
            )
    return list(dict.fromkeys(items))


def from_transformers(hf_model: nn.Module) -> nn.Module:
    """Our reference model with the weights of a transformers MobileViTV2 instance (strict key matching)."""
    arch = type(hf_model).__name__
    if arch not in ARCHITECTURE_TASKS:
        raise UsageError(
            f"{arch} is not a MobileViTV2 model (expected one of {', '.join(ARCHITECTURE_TASKS)})"
        )
    task = ARCHITECTURE_TASKS[arch]
    config = MobileViTV2Config.from_dict({**hf_model.config.to_dict(), "architectures": [arch]})
    model = build_model(config, task)
    load_state_dict_strict(model, hf_model.state_dict(), f"transformers {arch}")
    model.checkpoint = CheckpointInfo(f"transformers:{arch}", None, state_dict_sha256(model), untrained=False)
    return model.eval()


def resolve_model(model_or_path: Any, task: str | None = None, width: float | None = None) -> nn.Module:
    if isinstance(model_or_path, nn.Module):
        if hasattr(model_or_path, "checkpoint") and hasattr(model_or_path, "output_names"):
            return model_or_path.eval()
        return from_transformers(model_or_path)
    if width is not None:
        if model_or_path is not None:
            raise UsageError(
                "--width applies to the embedded default model only; a checkpoint sets its own width"
            )
        model = load_model(None, task)
        config = MobileViTV2Config.from_dict({**model.config.to_dict(), "width_multiplier": width})
        wide = build_model(config, model.task)
        from .model.random_init import randomize_weights

        randomize_weights(wide, 0)
        wide.checkpoint = CheckpointInfo("embedded-default", None, state_dict_sha256(wide), untrained=True)
        return wide
    return load_model(model_or_path, task)


def prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: --out is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputExistsError(f"{out_dir}: output directory is not empty (use --force to overwrite)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".mvit2-write-test-{id(out_dir)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputExistsError(f"{out_dir}: output directory is not writable ({exc.strerror})") from exc


def model_summary(model: nn.Module, image_size: int) -> dict[str, Any]:
    c = model.config
    return {
        "task": model.task,
        **{f"checkpoint_{k}": v for k, v in model.checkpoint.to_dict().items() if k != "untrained"},
        "untrained": model.checkpoint.untrained,
        "width_multiplier": c.width_multiplier,
        "image_size": image_size,
        "output_stride": c.output_stride,
        "num_labels": c.num_labels if model.task != "backbone" else None,
        "id2label": {str(k): v for k, v in c.id2label.items()} if model.task != "backbone" else None,
        "outputs": list(model.output_names),
        "preprocessing": Preprocessor.for_image_size(image_size).to_dict(),
    }


def artifact_name(model: nn.Module, target_suffix: str, precision: str, embed: bool) -> str:
    width = f"{model.config.width_multiplier:g}"
    tail = "-uint8in" if embed else ""
    return f"mobilevitv2-{width}-{model.task}-{precision}{tail}{target_suffix}"


def calibrates(target: str, options: ExportOptions) -> bool:
    """Whether this export runs int8 calibration (the slow part of an int8 export)."""
    if options.precision == "w8a8":
        return True
    return options.precision == "int8" and (
        target == "onnx" or (target == "tflite" and options.backend.get("int8_mode", "static") == "static")
    )


def export(
    model_or_path: Any,
    target: str,
    out_dir: str | Path,
    precision: str | list[str] = "fp32",
    *,
    task: str | None = None,
    width: float | None = None,
    image_size: int | None = None,
    check: bool = True,
    force: bool = False,
    embed_preprocessing: bool = False,
    calibration_images: str | Path | None = None,
    backend_options: dict[str, dict[str, Any]] | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Export to one or more targets and precisions; returns the manifest (also written to OUT/manifest.json).

    Raises ParityError after writing everything when an artifact fails its parity check.
    `progress(step, done, total)`, if given, is called as each export or parity step starts (`done` of
    `total` artifacts are finished). Targets are exported side by side in `workers` processes (default:
    one per target, up to the cores); `workers=1` exports them one after another in this process.
    """
    say = progress or (lambda _step, _done, _total: None)
    targets = parse_targets(target)
    precisions = parse_precisions(precision)
    model = resolve_model(model_or_path, task, width)
    size = int(model.config.image_size if image_size is None else image_size)
    model.config.check_image_size(size)
    exporters = {t: get_exporter(t) for t in targets}  # fail fast on a missing backend
    calib = Path(calibration_images) if calibration_images else None
    if calib is not None and not calib.is_dir():
        raise UsageError(f"{calib}: calibration images must be a directory")
    # Every (target, precision) is validated before anything is written: a bad combination costs nothing.
    jobs = []
    for t in targets:
        for p in precisions:
            options = ExportOptions(
                precision=p,
                image_size=size,
                embed_preprocessing=embed_preprocessing,
                calibration_images=calib,
                force=force,
                backend=dict((backend_options or {}).get(t, {})),
            )
            exporters[t].check_options(options)
            jobs.append((t, options))
    from .lanes import plan_lanes, resolve_lanes, run_lanes

    lanes = resolve_lanes(workers, targets)
    out = Path(out_dir)
    prepare_out_dir(out, force)

    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "tool": {"name": "mvit2-export", "version": __version__},
        "model": model_summary(model, size),
        "artifacts": [],
    }
    write_manifest(out, manifest)
    plan = plan_lanes([t for t, _ in jobs], lanes)
    finished = [0]  # read by the progress callback as steps start, in any lane
    entries: dict[int, dict[str, Any]] = {}
    failures: dict[int, str] = {}
    state = _JobState(model, jobs, out, check, threads, len(plan))
    for i, (entry, failure) in run_lanes(
        plan, _run_job, state, lambda step: say(step, finished[0], len(jobs))
    ):
        finished[0] += 1
        entries[i] = entry
        if failure:
            failures[i] = failure
        manifest["artifacts"] = [entries[k] for k in sorted(entries)]
        write_manifest(out, manifest)  # after each artifact: never lists a file that is not there
    from .report import write_report

    write_report(out, manifest)
    if failures:
        failed = " | ".join(failures[k] for k in sorted(failures))
        raise ParityError(f"parity failed for {failed} (see {out / MANIFEST})")
    return manifest


@dataclass
class _JobState:
    """What every export job needs; sent once to each worker process of a parallel export."""

    model: nn.Module
    jobs: list[tuple[str, ExportOptions]]
    out: Path
    check: bool
    threads: int | None  # as asked for; None = the default, shared between the lanes
    lanes: int


def _run_job(state: _JobState, index: int, say: Callable[[str], None]) -> tuple[dict[str, Any], str | None]:
    """Export job `index`, audit it and check its parity; returns its manifest entry and failure, if any."""
    t, options = state.jobs[index]
    exporter, p, model = get_exporter(t), options.precision, state.model
    dest = state.out / artifact_name(model, exporter.suffix, p, options.embed_preprocessing)
    calibrating = " (calibrating)" if calibrates(t, options) else ""
    say(f"exporting {t} {p}{calibrating} -> {dest.name}")
    artifact = exporter.export(model, options, dest)
    entry = artifact.to_dict(state.out)
    entry["sha256"] = sha256_path(dest)
    histogram = exporter.op_histogram(dest)
    entry["op_histogram"] = dict(sorted(histogram.items()))
    entry["audit"] = audit_histogram(t, histogram)
    if not state.check:
        return entry, None
    say(f"checking parity of {dest.name} ({artifact.runtime})")
    from .parity.run import run_parity

    threads = state.threads or max(1, default_threads() // state.lanes)
    runner = exporter.load_runner(dest, entry, threads)
    report = run_parity(model, runner, p, options.image_size)
    entry["parity"] = report.to_dict()
    return entry, None if report.passed else f"{dest.name}: {'; '.join(report.failures())}"


def load_reference_for_manifest(manifest: dict[str, Any], checkpoint: str | None = None) -> nn.Module:
    """Rebuild the reference model a manifest was exported from, checking the checkpoint did not change."""
    m = manifest["model"]
    source = checkpoint or m.get("checkpoint_source")
    if source == "embedded-default":
        model = load_model(None, m["task"])
        if m.get("width_multiplier") != model.config.width_multiplier:
            model = resolve_model(None, m["task"], m["width_multiplier"])
    elif not source or str(source).startswith("transformers:"):
        raise UsageError("the manifest's model came from an in-memory model; pass --checkpoint to check it")
    else:
        model = load_model(source, m["task"])
    if m.get("checkpoint_sha256") and model.checkpoint.sha256 != m["checkpoint_sha256"]:
        raise CheckpointError(
            f"{source}: weights differ from the ones exported (sha256 differs from the manifest)"
        )
    return model
