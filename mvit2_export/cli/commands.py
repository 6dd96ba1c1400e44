"""Argument definitions and handlers of each command. Handlers return the exit code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import AuditError, UsageError
from ..exporters import known_precisions, registered
from ..manifest import Manifest
from . import ui
from .progress import progress

console = Console(file=ui.stdout, highlight=False)
if not console.is_terminal:
    console = Console(file=ui.stdout, highlight=False, width=200)  # logs and pipes: do not truncate tables
err_console = Console(file=ui.stderr, highlight=False)


# -- shared arguments --------------------------------------------------------------------------------


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        help="HF-format folder (config.json + model.safetensors) or hub id; default: embedded untrained model",
    )
    p.add_argument(
        "--task", choices=("classification", "segmentation", "backbone"), help="default: from config.json"
    )
    p.add_argument("--width", type=float, help="width multiplier of the embedded default model (0.5..2.0)")
    p.add_argument("--image-size", type=int, help="input height and width (default: the config's image_size)")


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="fp32", help=precision_help())
    p.add_argument("--out", default="mvit2_out", help="output directory (default ./mvit2_out)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check after export")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output directory / artifacts")
    p.add_argument(
        "--embed-preprocessing",
        action="store_true",
        help="uint8 RGB NHWC input; scaling, BGR flip and layout in the graph",
    )
    p.add_argument(
        "--calibration-images",
        help="folder of plain images for int8 calibration (default: crops of the left 70%% of the bundled photos)",
    )
    add_gate_args(p, export=True)
    p.add_argument("--threads", type=int, help="runtime threads for parity checks")
    p.add_argument(
        "--jobs",
        type=int,
        help="processes exporting targets side by side (default: one per target, up to the cores; 1 = serial)",
    )
    add_backend_args(p)


def add_gate_args(p: argparse.ArgumentParser, export: bool) -> None:
    """The int8 held-out gate (parity/gate.py); `check` defaults to what the export recorded."""
    from ..cpu import INT8_ISAS
    from ..parity.gate import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MIN_AGREEMENT

    g = p.add_argument_group("int8 accuracy gate (held-out images, never the calibration images)")
    recorded = "" if export else "; default: what the export recorded"
    g.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT if export else None,
        help=f"int8 agreement with the fp32 reference on each half of the held-out images: top-1 "
        f"(classifier; on enough images also its 95%% lower confidence bound), pixel (segmenter), cosine "
        f"(backbone); default {DEFAULT_MIN_AGREEMENT:g}{recorded}",
    )
    g.add_argument(
        "--validation-images",
        help="folder with one subfolder per label name of the checkpoint (classifiers); default: "
        f"built-in held-out crops{recorded}",
    )
    g.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=DEFAULT_MAX_ACCURACY_DROP if export else None,
        help=f"with --validation-images: int8 accuracy at most this below fp32's; default "
        f"{DEFAULT_MAX_ACCURACY_DROP:g}{recorded}",
    )
    g.add_argument(
        "--heldout-count",
        type=int,
        help="built-in held-out images (default 1000 crops; 96 mosaics for segmentation), judged in two halves"
        + recorded,
    )
    if export:
        g.add_argument(
            "--int8-isa",
            default="auto",
            choices=INT8_ISAS,
            help="where the int8 model will run: decides e.g. 7-bit weights (x86-avx2 only); auto = this host",
        )


def precision_help() -> str:
    """Every precision a registered target accepts, with the targets that take it when not all do."""
    classes = registered()
    parts = []
    for precision in known_precisions():
        takers = [t for t, cls in classes.items() if precision in cls.precisions]
        notes = [
            cls.precision_notes[precision] for cls in classes.values() if precision in cls.precision_notes
        ]
        where = (
            "" if len(takers) == len(classes) else f" ({', '.join(takers)}{': ' + notes[0] if notes else ''})"
        )
        parts.append(precision + where)
    return f"comma list of {', '.join(parts)}; default fp32"


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """Every registered target's options, generated from its `option_specs` (a flag two targets declare
    is added once and reaches both)."""
    seen: set[str] = set()
    for cls in registered().values():
        for spec in cls.option_specs:
            if spec.flag in seen:
                continue
            seen.add(spec.flag)
            if spec.kind == "flag":
                p.add_argument(spec.flag, action="store_true", help=spec.help_text())
            else:
                kind = int if spec.kind == "int" else str
                p.add_argument(spec.flag, type=kind, choices=spec.choices, help=spec.help_text())


def backend_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """CLI flags -> per-target options (only the flags given: exporters keep their own defaults)."""
    out: dict[str, dict[str, Any]] = {}
    for target, cls in registered().items():
        given = {spec.key: getattr(args, spec.dest, None) for spec in cls.option_specs}
        out[target] = {k: v for k, v in given.items() if v not in (None, False)}
    return out


# -- export ----------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    from ..api import export

    with progress() as say:
        try:
            manifest = export(
                args.checkpoint,
                args.target,
                args.out,
                args.precision,
                task=args.task,
                width=args.width,
                image_size=args.image_size,
                check=not args.no_check,
                force=args.force,
                embed_preprocessing=args.embed_preprocessing,
                calibration_images=args.calibration_images,
                backend_options=backend_options(args),
                threads=args.threads,
                progress=say,
                workers=args.jobs,
                min_agreement=args.min_agreement,
                max_accuracy_drop=args.max_accuracy_drop,
                validation_images=args.validation_images,
                heldout_count=args.heldout_count,
                int8_isa=args.int8_isa,
            )
        except Exception as exc:
            # Only the manifest this run wrote: an error about --out or the checkpoint prints nothing else.
            written = getattr(exc, "manifest", None)
            if written is not None:
                print_artifacts(written)
            raise
    print_artifacts(manifest)
    console.print(f"wrote {Path(args.out) / 'manifest.json'} and report.md")
    return 0


def print_artifacts(manifest: Manifest) -> None:
    from ..report import parity_summary

    table = Table(title="artifacts")
    for col in (
        "artifact",
        "parity",
        "runtime",
        "max abs/scale",
        "cosine",
        "top-1/pixel",
        "held-out",
        "audit",
    ):
        table.add_column(col)
    for a in manifest.artifacts:
        s = parity_summary(a)
        audit = (
            "ok" if (a.audit or {}).get("elementwise_attention") else str((a.audit or {}).get("violations"))
        )
        fmt = lambda v, spec=".3g": "-" if v is None else format(v, spec)  # noqa: E731
        table.add_row(
            a.path,
            s["status"],
            str(s["runtime"]),
            fmt(s["max_abs_rel"]),
            fmt(s["cosine"], ".6f"),
            fmt(s["top1"]),
            fmt(s["heldout"], ".4f"),
            audit,
        )
    console.print(table)
    if manifest.model.get("untrained"):
        console.print(
            "note: the model is UNTRAINED (embedded default, random weights): parity is real, labels are not"
        )


# -- info ------------------------------------------------------------------------------------------


def add_info_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def run_info(args: argparse.Namespace) -> int:
    from ..api import resolve_model
    from ..model.summary import summarize

    model = resolve_model(args.checkpoint, args.task, args.width)
    info = summarize(model, args.image_size)
    if args.json:
        print(json.dumps(info, indent=2), file=ui.stdout)
        return 0
    table = Table(
        title="MobileViTV2" + (" (UNTRAINED embedded default)" if info["untrained"] else ""),
        show_header=False,
    )
    for k, v in info.items():
        table.add_row(k, f"{v:,}" if k == "parameters" else str(v))
    console.print(table)
    return 0


# -- inspect ---------------------------------------------------------------------------------------


def add_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="an .onnx, .mlpackage or .tflite file")
    p.add_argument(
        "--require-elementwise", action="store_true", help="exit non-zero if the attention audit fails"
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def run_inspect(args: argparse.Namespace) -> int:
    from ..inspect_artifact import inspect_artifact

    result = inspect_artifact(Path(args.artifact))
    if args.json:
        print(json.dumps(result, indent=2, default=str), file=ui.stdout)
    else:
        table = Table(title=f"{args.artifact}: op histogram")
        table.add_column("op")
        table.add_column("count", justify="right")
        for op, n in sorted(result["op_histogram"].items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(op, str(n))
        console.print(table)
        audit = result["audit"]
        verdict = "PASS" if audit["elementwise_attention"] else f"FAIL {audit['violations']}"
        console.print(f"attention audit: {verdict}; transposes: {audit['transpose_count']}")
        for finding in result.get("ane_audit") or []:
            scope = finding.get("scope", "neural engine")  # the backend the finding is about
            console.print(
                f"{scope}: [{finding.get('severity')}] {finding.get('rule')}: {finding.get('op_type')} {finding.get('op_name', '')}",
                markup=False,
            )
        if result.get("rewrites"):
            fired = [
                r["id"] + (f" x{r['fired']}" if r["fired"] else "")
                for r in result["rewrites"]
                if r.get("fired") != 0
            ]
            console.print("rewrites applied: " + (", ".join(fired) or "none"))
    if args.require_elementwise and not result["audit"]["elementwise_attention"]:
        raise AuditError(f"{args.artifact}: attention audit failed: {result['audit']['violations']}")
    return 0


# -- check -----------------------------------------------------------------------------------------


def add_check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an output directory with manifest.json, or one artifact in it")
    p.add_argument("--checkpoint", help="the checkpoint to compare against (default: the manifest's source)")
    p.add_argument("--threads", type=int, help="runtime threads for the parity run (default: up to 4 cores)")
    p.add_argument(
        "--localize", action="store_true", help="compare intermediates op by op; name the first divergent op"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_gate_args(p, export=False)


def run_check(args: argparse.Namespace) -> int:
    from ..check import check, raise_on_failure

    gate = {
        "min_agreement": args.min_agreement,
        "max_accuracy_drop": args.max_accuracy_drop,
        "validation_images": args.validation_images,
        "count": args.heldout_count,
    }
    with progress() as say:
        results = check(
            args.path,
            args.checkpoint,
            args.threads,
            localize=args.localize,
            progress=say,
            gate={k: v for k, v in gate.items() if v is not None},
        )
    if args.json:
        rows = [{k: v for k, v in r.__dict__.items() if k != "error"} for r in results]
        print(json.dumps(rows, indent=2, default=str), file=ui.stdout)
    else:
        for r in results:
            numbers = f"  ({r.numbers()})" if r.numbers() else ""
            console.print(
                f"{'PASS' if r.passed else 'FAIL'}  {r.path}  [{r.target} {r.precision}]{numbers}  {r.detail}",
                markup=False,
            )
        console.print(f"{sum(r.passed for r in results)}/{len(results)} passed", markup=False)
    raise_on_failure(results)  # after printing: the table (and localization) is what the user needs
    return 0


# -- bench -----------------------------------------------------------------------------------------


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an output directory with manifest.json")
    p.add_argument(
        "--threads",
        type=int,
        help="pin every runtime's thread count (host default: each runtime's best of 1..cores and its "
        "wait policy, searched; android default: 2)",
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing (default 5)")
    p.add_argument("--runs", type=int, default=20, help="timed runs; the median is reported (default 20)")
    p.add_argument("--checkpoint", help="the checkpoint the artifacts came from, if not the manifest's")
    p.add_argument(
        "--device",
        choices=("host", "android", "mac"),
        default="host",
        help="host (default); android: each .tflite via adb + benchmark_model (and each .pte via "
        "--executor-runner); mac: each .mlpackage via "
        "MLModel.predict per compute-units setting (macOS only)",
    )
    android = p.add_argument_group("--device android")
    android.add_argument("--adb", help="adb executable (default: adb on PATH)")
    android.add_argument(
        "--benchmark-model",
        help="TFLite benchmark_model: a host file to push, or a device path "
        "(default /data/local/tmp/benchmark_model, already on the device)",
    )
    android.add_argument(
        "--executor-runner",
        help="ExecuTorch's executor_runner (built with XNNPACK): a host file to push, or a device path; "
        "with it, .pte artifacts run too",
    )
    android.add_argument("--serial", help="device serial when several are attached")
    android.add_argument(
        "--delegate",
        choices=("xnnpack", "gpu", "nnapi", "none"),
        help="benchmark_model delegate (default xnnpack)",
    )


ANDROID_ONLY = ("adb", "benchmark_model", "executor_runner", "serial", "delegate")


def run_bench(args: argparse.Namespace) -> int:
    if (args.threads is not None and args.threads < 1) or args.runs < 1 or args.warmup < 0:
        raise UsageError("--threads and --runs must be >= 1, --warmup >= 0")
    given = [f"--{k.replace('_', '-')}" for k in ANDROID_ONLY if getattr(args, k) is not None]
    if given and args.device != "android":
        raise UsageError(f"{', '.join(given)} only apply to --device android")
    if args.device != "host":
        return run_device_bench(args)
    from ..bench.run import bench

    with progress() as say:
        manifest = bench(args.path, args.threads, args.warmup, args.runs, args.checkpoint, progress=say)
    ref = manifest.reference_latency
    host = manifest.host or {}
    console.print(
        f"host: {host.get('cpu')} ({', '.join(host.get('isa') or []) or 'no ISA flags read'}), "
        f"{host.get('usable_cores')} usable cores",
        markup=False,
    )
    console.print(
        f"pytorch eager: {ref['median_ms']:.2f} ms median (p90 {ref['p90_ms']:.2f}, {threading_text(ref)})",
        markup=False,
    )
    for a in manifest.artifacts:
        lat = a.latency
        if lat.get("median_ms") is None:
            console.print(f"{a.path}: not timed ({lat.get('note')})", markup=False)
        else:
            ratio = lat["median_ms"] / ref["median_ms"]
            console.print(
                f"{a.path}: {lat['median_ms']:.2f} ms median (p90 {lat['p90_ms']:.2f}, {threading_text(lat)}), "
                f"{ratio:.2f}x pytorch",
                markup=False,
            )
    return 0


def threading_text(lat: dict[str, Any]) -> str:
    """'2 threads, spinning off (best of 4 tried)': the configuration a latency was measured at."""
    parts = [f"{lat['threads']} thread{'s' * (lat['threads'] != 1)}"]
    parts += [
        f"{k} {'on' if v else 'off'}" if isinstance(v, bool) else f"{k} {v}"
        for k, v in (lat.get("settings") or {}).items()
    ]
    tried = lat.get("tried") or []
    if len(tried) > 1:
        parts.append(f"best of {len(tried)} tried")
    return ", ".join(parts)


def run_device_bench(args: argparse.Namespace) -> int:
    """`bench --device android|mac`: results go to the manifest's `device_latency` and the report."""
    with progress() as say:
        if args.device == "android":
            from ..bench.android import bench_android

            manifest, skipped = bench_android(
                args.path,
                adb=args.adb,
                benchmark_model=args.benchmark_model,
                tools={"--executor-runner": args.executor_runner} if args.executor_runner else {},
                serial=args.serial,
                threads=args.threads or 2,
                runs=args.runs,
                warmup=args.warmup,
                delegate=args.delegate or "xnnpack",
                say=say,
            )
        else:
            from ..bench.mac import bench_mac

            manifest, skipped = bench_mac(args.path, args.warmup, args.runs, say=say)
    kind = ".tflite (and .pte with --executor-runner)" if args.device == "android" else ".mlpackage"
    for path in skipped:
        console.print(f"{path}: skipped (--device {args.device} runs {kind} artifacts only)", markup=False)
    for a in manifest.artifacts:
        r = (a.device_latency or {}).get(args.device)
        if r and args.device == "android":
            s = r["inference"]
            ms = lambda k, s=s: "-" if s.get(k) is None else f"{s[k] / 1e3:.2f}"  # noqa: E731
            console.print(
                f"{a.path}: {r['inference_avg_us'] / 1e3:.2f} ms avg (std {ms('std')}, min {ms('min')}, "
                f"max {ms('max')}, {s.get('count', 0):.0f} runs) on {r['device']}, {r['delegate']}, "
                f"{r['threads']} threads"
            )
        elif r:
            for units, lat in r["compute_units"].items():
                console.print(f"{a.path}: {units} {lat['median_ms']:.2f} ms median (p90 {lat['p90_ms']:.2f})")
    console.print(f"wrote {Path(args.path) / 'manifest.json'} and report.md")
    return 0
