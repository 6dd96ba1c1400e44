"""The Python API, mirroring the command line.

    manifest = mvit2_export.export("./mobilevitv2-1.0-imagenet1k-256", "onnx", "out/", precision="fp32,fp16")

`model_or_path` is a checkpoint folder or hub id, None (the embedded default), one of our reference
models, or a transformers `MobileViTV2*` instance.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__
from .audit import audit_histogram
from .cpu import resolve_int8_isa
from .data.images import describe_calibration
from .errors import (
    CheckpointError,
    DegenerateReferenceError,
    ExportError,
    Mvit2ExportError,
    OutputExistsError,
    ParityError,
    UsageError,
)
from .exporters import Exporter, ExportOptions, get_exporter, known_precisions, parse_targets
from .exporters.base import default_threads
from .manifest import MANIFEST, ArtifactEntry, Manifest, sha256_path, size_path, write_manifest
from .model import MobileViTV2Config, Preprocessor, build_model, load_model
from .model.checkpoint import CheckpointInfo, load_state_dict_strict, state_dict_sha256
from .model.config import ARCHITECTURE_TASKS
from .model.finite import check_finite_forward
from .parity.gate import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MIN_AGREEMENT, GateSpec, build_gate
from .progress import ProgressEvent, as_listener, reporting, step

# The widths MobileViTV2 is published and tested at (ml-cvnets: 0.5 .. 2.0).
WIDTH_RANGE = (0.5, 2.0)

# progress(event): a ProgressEvent as each job and each step in it starts (progress.py); a callable
# taking (step, done, total) works too.
Progress = Callable[..., None]


def parse_precisions(value: str | list[str]) -> list[str]:
    """A comma list of precisions some registered target accepts (each exporter then checks its own)."""
    items = value if isinstance(value, list) else [p.strip().lower() for p in value.split(",") if p.strip()]
    known = known_precisions()
    if not items:
        raise UsageError(f"--precision needs a value: one of {', '.join(known)} (comma list allowed)")
    for p in items:
        if p not in known:
            raise UsageError(f"unknown precision {p!r}; expected a comma list of {', '.join(known)}")
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
        if not WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]:
            raise UsageError(f"--width {width:g} is outside {WIDTH_RANGE[0]:g}..{WIDTH_RANGE[1]:g}")
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
    if force and out_dir.is_dir():
        remove_earlier_export(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".mvit2-write-test-{id(out_dir)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputExistsError(f"{out_dir}: output directory is not writable ({exc.strerror})") from exc


def remove_earlier_export(out_dir: Path) -> None:
    """--force: delete what an earlier export wrote here (the artifacts its manifest lists, the manifest and
    the report), so the folder holds exactly what the new manifest lists. Files we did not write stay."""
    try:
        earlier = json.loads((out_dir / MANIFEST).read_text())
        listed = [a["path"] for a in earlier.get("artifacts", []) if isinstance(a, dict) and "path" in a]
    except (OSError, ValueError, AttributeError):
        listed = []
    for rel in [*listed, MANIFEST, "report.md", "report.png"]:
        path = (out_dir / rel).resolve()
        if path.parent != out_dir.resolve() or not (path.is_file() or path.is_dir()):
            continue  # only direct children of the output folder: a crafted manifest cannot reach further
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def model_summary(model: nn.Module, image_size: int) -> dict[str, Any]:
    c = model.config
    return {
        "task": model.task,
        **{f"checkpoint_{k}": v for k, v in model.checkpoint.to_dict().items() if k != "untrained"},
        "untrained": model.checkpoint.untrained,
        "width_multiplier": c.width_multiplier,
        "image_size": image_size,
        "output_stride": c.output_stride,
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_labels": c.num_labels if model.task != "backbone" else None,
        "id2label": {str(k): v for k, v in c.id2label.items()} if model.task != "backbone" else None,
        "outputs": list(model.output_names),
        "preprocessing": Preprocessor.for_image_size(image_size).to_dict(),
    }


def artifact_name(model: nn.Module, target_suffix: str, precision: str, embed: bool) -> str:
    width = f"{model.config.width_multiplier:g}"
    tail = "-uint8in" if embed else ""
    return f"mobilevitv2-{width}-{model.task}-{precision}{tail}{target_suffix}"


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
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    validation_images: str | Path | None = None,
    heldout_count: int | None = None,
    int8_isa: str = "auto",
) -> Manifest:
    """Export to one or more targets and precisions; returns the manifest (also written to OUT/manifest.json).

    Raises ParityError after writing everything when an artifact fails its parity check.
    `progress(event)`, if given, gets a `ProgressEvent` as each artifact's export, each step inside it
    and its parity check start, stamped with the target, precision, lane and elapsed time (`done` of
    `total` artifacts finished), then a "done" event. Targets are exported side by side in `workers` processes (default:
    one per target, up to the cores); `workers=1` exports them one after another in this process.

    int8 (and every precision an exporter holds to the int8 rules) is gated on held-out images, never the
    calibration images (parity/gate.py), on each half of them: agreement with the reference >=
    `min_agreement` (for a classifier on enough images, as its 95% lower confidence bound too), and
    with a labelled `validation_images` folder an accuracy drop <= `max_accuracy_drop`; without a
    folder, on `heldout_count` built-in crops. When all-int8 misses, the exporter keeps its most sensitive layers in
    float until the gate holds (exporters/int8_search.py). `int8_isa` is where the int8 model will run
    (cpu.py; "auto": this host).
    """
    from .lanes import plan_lanes, refuse_in_a_starting_worker, resolve_lanes, run_lanes

    refuse_in_a_starting_worker()
    listener, started = as_listener(progress), time.time()
    targets = parse_targets(target)
    precisions = parse_precisions(precision)
    model = resolve_model(model_or_path, task, width)
    size = int(model.config.image_size if image_size is None else image_size)
    model.config.check_image_size(size)
    check_finite_forward(model, size, model.checkpoint.source)  # before anything is written
    exporters = {t: get_exporter(t) for t in targets}  # fail fast on a missing backend
    calib = Path(calibration_images) if calibration_images else None
    isa = resolve_int8_isa(int8_isa)
    spec = GateSpec(
        min_agreement,
        max_accuracy_drop,
        Path(validation_images) if validation_images else None,
        heldout_count,
    )
    spec.check(model.task)
    gated = [p for t in targets for p in precisions if exporters[t].threshold_class(p) == "int8"]
    if spec.validation_images is not None and not gated:
        raise UsageError("--validation-images gates int8 artifacts, and no int8 precision was asked for")
    # Every (target, precision) is validated before anything is written: a bad combination costs nothing.
    gate = None
    if gated and check:  # held-out images and their reference outputs, once for every int8 job
        with reporting(listener, None, None):
            step("int8 gate: reference on held-out images")
            gate = build_gate(model, size, spec)
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
                int8_isa=isa,
                gate=gate if exporters[t].threshold_class(p) == "int8" else None,
            )
            exporters[t].check_options(options)
            jobs.append((t, options))
    # A calibration folder with no readable image fails here, before anything is written.
    calibrated = any(exporters[t].calibrates(o) for t, o in jobs)
    calibration = describe_calibration(calib, size) if calibrated or calib is not None else None
    lanes = resolve_lanes(workers, targets)
    out = Path(out_dir)
    prepare_out_dir(out, force)

    manifest = Manifest(
        model=model_summary(model, size), tool={"name": "mvit2-export", "version": __version__}
    )
    if gated:
        manifest.model["int8_gate"] = {
            **spec.to_dict(),
            "source": gate.heldout.source if gate else None,
            "int8_isa": isa,
            "enforced": bool(gate and gate.active),
        }
    if calibration is not None:
        manifest.model["int8_calibration"] = calibration
    write_manifest(out, manifest)
    plan = plan_lanes([t for t, _ in jobs], lanes, {t: e.cost for t, e in exporters.items()})
    finished = [0]  # read by the progress callback as steps start, in any lane
    entries: dict[int, ArtifactEntry] = {}
    failures: dict[int, JobFailure] = {}
    classes = {t: type(e) for t, e in exporters.items()}  # by reference: a worker lane imports them
    state = _JobState(model, jobs, out, check, threads, len(plan), classes)

    def relay(lane: int, event: ProgressEvent) -> None:
        listener(event.since(started, lane=lane, done=finished[0], total=len(jobs)))

    for i, (entry, failure) in run_lanes(plan, _run_job, state, relay):
        finished[0] += 1
        if entry is not None:
            entries[i] = entry
        if failure is not None:
            failures[i] = failure
        manifest.artifacts = [entries[k] for k in sorted(entries)]
        manifest.failed = [failures[k].to_dict() for k in sorted(failures) if failures[k].stage == "export"]
        write_manifest(out, manifest)  # after each artifact: never lists a file that is not there
    listener(ProgressEvent("done", "done", finished[0], len(jobs)).since(started))
    from .report import write_report

    write_report(out, manifest)
    if failures:
        raise _combined_error([failures[k] for k in sorted(failures)], out, manifest)
    return manifest


@dataclass
class JobFailure:
    """Why one artifact failed; the other jobs of the export still run."""

    artifact: str
    target: str
    precision: str
    stage: str  # "export" (no file written) or "parity" (the file is there and listed)
    error_type: str
    exit_code: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def of(cls, exc: BaseException, artifact: str, target: str, precision: str, stage: str) -> JobFailure:
        if isinstance(exc, Mvit2ExportError):
            return cls(artifact, target, precision, stage, type(exc).__name__, exc.exit_code, exc.message)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        # An exception no layer expected is a failed step of this artifact: exit 4 (export) or 5 (parity).
        code = ParityError.exit_code if stage == "parity" else ExportError.exit_code
        return cls(
            artifact,
            target,
            precision,
            stage,
            type(exc).__name__,
            code,
            f"unexpected {type(exc).__name__}: {first}",
        )


def _combined_error(failures: list[JobFailure], out: Path, manifest: Manifest) -> Mvit2ExportError:
    """One error naming every failed artifact, of the type of the most severe one (export over parity)."""
    worst = max(failures, key=lambda f: (f.stage == "export", f.exit_code))
    text = " | ".join(f"{f.artifact}: {f.message}" for f in failures)
    if all(f.error_type == "DegenerateReferenceError" for f in failures):
        n = len(failures)
        error: Mvit2ExportError = DegenerateReferenceError(
            f"{failures[0].message} ({n} artifact{'s' * (n > 1)}; see {out / MANIFEST})"
        )
    elif all(
        f.stage == "parity" and f.error_type in ("ParityError", "DegenerateReferenceError") for f in failures
    ):
        error = ParityError(f"parity failed for {text} (see {out / MANIFEST})")
    else:
        verb = "export failed" if worst.stage == "export" else "parity check failed"
        error = ExportError(f"{verb} for {text} (see {out / MANIFEST})")
        error.exit_code = worst.exit_code
    error.manifest = manifest  # type: ignore[attr-defined]  # what was written: the CLI prints its table
    return error


@dataclass
class _JobState:
    """What every export job needs; sent once to each worker process of a parallel export."""

    model: nn.Module
    jobs: list[tuple[str, ExportOptions]]
    out: Path
    check: bool
    threads: int | None  # as asked for; None = the default, shared between the lanes
    lanes: int
    exporters: dict[str, type[Exporter]]  # registered in this process (a test's toy target included)


def _run_job(
    state: _JobState, index: int, say: Callable[[ProgressEvent], None]
) -> tuple[ArtifactEntry | None, JobFailure | None]:
    """Export job `index`, audit it and check its parity; returns its manifest entry (None when nothing
    was written) and its failure, if any. Never raises for one artifact: the other jobs go on."""
    t, options = state.jobs[index]
    exporter, p, model = state.exporters[t](), options.precision, state.model
    dest = state.out / artifact_name(model, exporter.suffix, p, options.embed_preprocessing)
    calibrating = " (calibrating)" if exporter.calibrates(options) else ""
    say(ProgressEvent("export", f"exporting {t} {p}{calibrating} -> {dest.name}", target=t, precision=p))
    try:
        with reporting(say, t, p):  # the exporter's own steps (trace, rewrite, convert, ...) report here
            artifact = exporter.export(model, options, dest)
            entry = artifact.to_entry(state.out)
            step("sha256")
            entry.sha256 = sha256_path(dest)
            entry.size_bytes = size_path(dest)
            step("op histogram and audit")
            histogram = exporter.op_histogram(dest)
            entry.op_histogram = dict(sorted(histogram.items()))
            entry.audit = audit_histogram(exporter, histogram)
    except Exception as exc:  # noqa: BLE001 - any failure of this artifact is recorded, not fatal
        if dest.exists():  # written, then the audit failed: not listed, so not left behind either
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        return None, JobFailure.of(exc, dest.name, t, p, "export")
    if not state.check:
        return entry, None
    say(
        ProgressEvent("parity", f"checking parity of {dest.name} ({artifact.runtime})", target=t, precision=p)
    )
    from .parity.run import run_parity

    try:
        threads = state.threads or max(1, default_threads() // state.lanes)
        runner = exporter.load_runner(dest, entry, threads)
        report = run_parity(model, runner, p, options.image_size, rule=exporter.threshold_class(p))
        if options.gate is not None and artifact.heldout is not None:
            report.heldout = artifact.heldout  # judged on this program in this runtime by the search
        elif options.gate is not None:
            say(ProgressEvent("parity", f"held-out gate of {dest.name}", target=t, precision=p))
            report.heldout = options.gate(runner)
    except Exception as exc:  # noqa: BLE001 - the artifact stays listed, its parity says what broke
        failure = JobFailure.of(exc, dest.name, t, p, "parity")
        entry.parity = {"passed": False, "error": failure.message, "error_type": failure.error_type}
        return entry, failure
    entry.parity = report.to_dict()
    if report.passed:
        return entry, None
    if report.degenerate:
        code = DegenerateReferenceError.exit_code
        return entry, JobFailure(
            dest.name, t, p, "parity", "DegenerateReferenceError", code, report.degenerate
        )
    return entry, JobFailure(
        dest.name, t, p, "parity", "ParityError", ParityError.exit_code, "; ".join(report.failures())
    )


def load_reference_for_manifest(manifest: Manifest, checkpoint: str | None = None) -> nn.Module:
    """Rebuild the reference model a manifest was exported from, checking the checkpoint did not change."""
    m = manifest.model
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
