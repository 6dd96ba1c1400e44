"""The combined benchmark: every backend and precision next to the peers and the roofline, in one run.

    python benchmarks/bench_all.py                 # widths 0.5/1.0/2.0 @ 256 + DeepLabV3 1.0 @ 512 (~20-30 min)
    python benchmarks/bench_all.py --quick         # smoke test: width 0.5 @ 128, few runs, writes to a temp dir
    python benchmarks/bench_all.py --widths 1.0 --runs 60 --threads 2 --no-seg

Per model, on `--threads` threads, batch 1, random (untrained) weights of the embedded default config:
  - PyTorch eager on our reference model (the model every artifact is checked against);
  - onnxruntime on the plain dynamo ONNX export of transformers' unrewritten model (what an optimum user
    gets; `bench_onnx.export_plain`);
  - LiteRT (XNNPACK) on transformers' model minimally patched so litert-torch converts it (the patches of
    `bench_tflite.py`, generalised to any width/task and undone after conversion);
  - ExecuTorch (XNNPACK) on transformers' unrewritten model, ExecuTorch's own recipe (when installed);
  - our artifacts from `mvit2_export.export(...)` (ONNX, TFLite, ExecuTorch; fp32/fp16/int8), run through the
    exporters' runners; Core ML is listed, not timed (MLModel.predict needs macOS).
Latencies are pooled over interleaved rounds (every runner gets some runs in each round, in a rotated
order), so a burst of load from another process hits all of them alike; only ratios within this run are
quoted. It also measures fp32 GEMM throughput (-> the roofline bound of each model) and the export time of
width 1.0 to all three targets in fp32, split into steps. Writes RESULTS.md and RESULTS.png.
"""

# ruff: noqa: E402  (OMP_WAIT_POLICY must be set before torch loads OpenMP)
from __future__ import annotations

import os

# libgomp's default spin-waiting turns 2-thread PyTorch on a loaded 2-core machine into a scheduler
# benchmark: measured here (w0.5 @128, load ~6), eager median 190-850 ms spinning vs 36 ms passive
# (1 thread: 29 ms). Passive waiting touches only OpenMP (torch eager, the GEMM probe, the rewrite
# checks); onnxruntime and XNNPACK use their own thread pools. An explicit setting is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import copy
import functools
import importlib.util
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

import mvit2_export
from mvit2_export.api import resolve_model
from mvit2_export.bench.interleaved import Row, interleaved_latency
from mvit2_export.bench.machine import cpu_flags, environment, machine_facts
from mvit2_export.bench.roofline import GemmThroughput, gemm_probe, gemm_throughput, model_flops, roofline_ms
from mvit2_export.data.images import parity_images
from mvit2_export.exporters import get_exporter
from mvit2_export.exporters.coreml.runner import MilReferenceRunner
from mvit2_export.model.config import TASK_ARCHITECTURES
from mvit2_export.model.preprocess import images_to_pixel_values
from mvit2_export.progress import ProgressEvent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_onnx import export_plain  # the same baseline as the ONNX benchmark
from bench_tflite import decompose_group_norms, minimal_patches  # the TFLite benchmark's baseline

HERE = Path(__file__).resolve().parent
EXECUTORCH = importlib.util.find_spec("executorch") is not None
OUR_TARGETS = "onnx,tflite,executorch" if EXECUTORCH else "onnx,tflite"
PRECISIONS = ("fp32", "fp16", "int8")
GEMM_PROBE_N = 1024  # ~2 GFLOP: a call as long as a small model's, timed in the same rounds
# CPU features that decide which fp16/int8 kernels onnxruntime and XNNPACK can use.
INT8_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
)
VERSIONS = ("torch", "onnxruntime", "onnx", "onnxscript", "onnxslim", "litert-torch", "ai-edge-litert")
VERSIONS += ("ai-edge-quantizer", "coremltools", "transformers", "numpy", "mvit2-export")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the machine -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    facts = machine_facts()
    _, flags = cpu_flags()
    return {**facts, "flags": {f: (f in flags) for f in INT8_FLAGS}, **environment(VERSIONS)}


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# -- baselines -----------------------------------------------------------------------------------------


class Logits(nn.Module):
    """transformers' model returning its logits tensor (what both baselines export)."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=pixel_values).logits


def transformers_twin(ours: nn.Module) -> nn.Module:
    """transformers' unrewritten model with our model's config and (random) weights, strict keys."""
    import transformers

    d = {k: v for k, v in ours.config.to_dict().items() if k != "extra"}
    config = transformers.MobileViTV2Config.from_dict(d)
    hf = getattr(transformers, TASK_ARCHITECTURES[ours.task])(config).eval()
    hf.load_state_dict(ours.state_dict(), strict=True)
    return hf


@contextlib.contextmanager
def minimal_litert_patches() -> Iterator[None]:
    """bench_tflite.py's three patches (pixel_(un)shuffle patching, broadcast attention), undone on exit
    so the plain ONNX baseline always sees transformers' own code."""
    with contextlib.ExitStack() as stack:
        for cls, attr, fn in minimal_patches():
            stack.enter_context(mock.patch.object(cls, attr, fn))
        yield


def export_litert_minimal(ours: nn.Module, size: int, dest: Path) -> Path:
    from mvit2_export.exporters.tflite.convert import to_flatbuffer

    hf = copy.deepcopy(transformers_twin(ours))
    decompose_group_norms(hf)
    module = Logits(hf).eval()
    x = torch.rand(1, 3, size, size)
    with minimal_litert_patches():
        with torch.no_grad():
            ref = ours(x)
            ref = ref[0] if isinstance(ref, tuple) else ref
            got = module(x)
        if not torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * (1 + ref.abs().max().item())):
            raise RuntimeError("the minimally patched transformers model differs from the reference")
        dest.write_bytes(to_flatbuffer(module, "serving_default", "pixel_values", x))
    return dest


# -- runners: name -> a zero-argument callable timed as one inference ----------------------------------


def export_executorch_plain(model: nn.Module, size: int, dest: Path) -> Path:
    """What a PyTorch user gets from ExecuTorch's own recipe: torch.export of transformers' model,
    `to_edge_transform_and_lower` with the XNNPACK partitioner (47 delegate pieces at width 1.0)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(model, (torch.rand(1, 3, size, size),))
    dest.write_bytes(
        to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    )
    return dest


def executorch_baseline_call(path: Path, image: np.ndarray, threads: int) -> Callable[[], Any]:
    from executorch.runtime import Runtime

    from mvit2_export.exporters.executorch.runner import set_threads

    set_threads(threads)  # before the first load only: see the runner
    method = Runtime.get().load_program(str(path)).load_method("forward")
    x = torch.from_numpy(images_to_pixel_values(image))

    def run() -> Any:
        return method.execute([x])

    return run


def megabytes(path: Path) -> float:
    return path.stat().st_size / 1e6


def eager_call(model: nn.Module, image: np.ndarray, threads: int) -> Callable[[], Any]:
    x = torch.from_numpy(images_to_pixel_values(image))

    def run() -> Any:
        torch.set_num_threads(threads)  # litert-torch conversions may change it in between
        with torch.inference_mode():
            return model(x)

    return run


def onnx_call(path: Path, image: np.ndarray, threads: int, runner: Any = None) -> Callable[[], Any]:
    from mvit2_export.exporters.onnx import OnnxRunner

    runner = runner or OnnxRunner(path, threads)
    feeds = {runner.input_name: runner.feed(image)}
    return lambda: runner.session.run(None, feeds)


def litert_call(runner: Any, image: np.ndarray) -> Callable[[], Any]:
    """Our LiteRT runner's signature call on a prepared input (the same call the baseline gets)."""
    from mvit2_export.exporters.tflite.quantize import pixel_feeds

    embedded = runner.input_dtype == np.uint8 and not runner.input_quant[0]
    x = pixel_feeds(image, embedded)[0]
    if runner.input_quant[0]:  # int8 I/O: the runner quantizes the input itself
        return lambda: runner.run_one(x)
    feeds = {runner.input_name: x}
    return lambda: runner.fn(**feeds)


def litert_baseline_call(path: Path, image: np.ndarray, threads: int) -> Callable[[], Any]:
    from mvit2_export.exporters.tflite.runner import make_interpreter

    fn = make_interpreter(path, threads, "xnnpack").get_signature_runner("serving_default")
    feeds = {"pixel_values": images_to_pixel_values(image)}
    return lambda: fn(**feeds)


# -- one model: baselines, our artifacts, timing --------------------------------------------------------


@dataclass
class Case:
    task: str
    width: float
    size: int

    @property
    def label(self) -> str:
        head = {"classification": "classifier", "segmentation": "DeepLabV3"}[self.task]
        return f"{head} w{self.width:g} @{self.size}"


@dataclass
class CaseResult:
    case: Case
    flops: int
    rows: list[Row]
    load_before: str
    load_after: str
    gemm: GemmThroughput  # best rate over sizes, measured just before the model's block
    gemm_rounds_gflops: float  # median rate of the GEMM probe timed in the same rounds as the runners

    @property
    def bound_ms(self) -> float:
        """The roofline bound at the throughput the runners could get during their own rounds."""
        return roofline_ms(self.flops, self.gemm_rounds_gflops)

    @property
    def shown(self) -> list[Row]:
        return [r for r in self.rows if r.role != "probe"]


def run_case(case: Case, args: argparse.Namespace, work: Path) -> CaseResult:
    threads = args.threads
    log(f"== {case.label}")
    torch.set_num_threads(threads)
    load_before = load_average()
    gemm = gemm_throughput(threads)
    log(f"GEMM {gemm.gflops:.1f} GFLOP/s; load {load_before}")
    ours = resolve_model(None, case.task, case.width)
    flops = model_flops(ours, case.size)
    image = parity_images(case.size, n_photos=1, n_random=0)
    tag = f"{case.task[:3]}-w{case.width:g}-{case.size}"
    row = functools.partial(Row, case.label)
    rows = [
        row("pytorch", "PyTorch eager (our reference)", "fp32", "reference", eager_call(ours, image, threads))
    ]

    log("plain dynamo ONNX export of transformers' model")
    t0 = time.perf_counter()
    plain = export_plain(Logits(transformers_twin(ours)).eval(), case.size, work / f"{tag}-plain.onnx")
    name = "plain dynamo export of transformers (onnxruntime)"
    fn = onnx_call(plain, image, threads)
    rows.append(row("onnx", name, "fp32", "baseline", fn, time.perf_counter() - t0, megabytes(plain)))

    log("litert-torch on the minimally patched transformers model")
    t0 = time.perf_counter()
    name = "litert-torch, minimally patched transformers (XNNPACK)"
    try:
        minimal = export_litert_minimal(ours, case.size, work / f"{tag}-minimal.tflite")
        fn = litert_baseline_call(minimal, image, threads)
        rows.append(row("tflite", name, "fp32", "baseline", fn, time.perf_counter() - t0, megabytes(minimal)))
    except Exception as exc:  # a baseline that does not convert is a result, not a crash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        rows.append(row("tflite", name, "fp32", "baseline", note=f"failed: {first}"))

    if EXECUTORCH:
        log("ExecuTorch (XNNPACK) on transformers' unrewritten model")
        t0 = time.perf_counter()
        name = "ExecuTorch XNNPACK, transformers unrewritten"
        try:
            pte = export_executorch_plain(
                Logits(transformers_twin(ours)).eval(), case.size, work / f"{tag}-plain.pte"
            )
            fn = executorch_baseline_call(pte, image, threads)
            rows.append(
                row("executorch", name, "fp32", "baseline", fn, time.perf_counter() - t0, megabytes(pte))
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            rows.append(row("executorch", name, "fp32", "baseline", note=f"failed: {first}"))

    log(f"our artifacts (mvit2_export.export {OUR_TARGETS} fp32,fp16,int8)")
    out = work / tag
    marks: list[tuple[str, float]] = []

    def progress(msg: str, *_counts: int) -> None:  # (step, done, total)
        if msg.startswith("exporting "):
            marks.append((msg.split(" -> ")[-1], time.perf_counter()))
            log(msg)

    manifest = mvit2_export.export(
        ours,
        OUR_TARGETS,
        out,
        ",".join(PRECISIONS),
        image_size=case.size,
        check=False,
        threads=threads,
        progress=progress,
    )
    marks.append(("end", time.perf_counter()))
    export_s = {name: marks[i + 1][1] - t for i, (name, t) in enumerate(marks[:-1])}
    for entry in manifest.artifacts:
        path = out / entry.path
        exporter = get_exporter(entry.target)
        runner = exporter.load_runner(path, entry, threads)
        if entry.target == "onnx":
            fn, name = onnx_call(path, image, threads, runner), "ours (onnxruntime)"
        elif entry.target == "executorch":
            fn, name = (lambda r=runner: r.run(image)), "ours (ExecuTorch XNNPACK)"
        else:
            fn, name = litert_call(runner, image), "ours (LiteRT XNNPACK)"
        secs = export_s.get(path.name)
        rows.append(row(entry.target, name, entry.precision, "ours", fn, secs, megabytes(path)))
    for p in PRECISIONS:
        rows.append(
            row("coreml", "ours (Core ML)", p, "ours", note=f"not timed: {MilReferenceRunner.not_timed}")
        )

    probe, probe_flops = gemm_probe(GEMM_PROBE_N, threads)
    rows.append(row("gemm", f"torch.matmul {GEMM_PROBE_N}^2 probe", "fp32", "probe", probe))
    log(f"timing {sum(r.fn is not None for r in rows)} runners: {args.rounds} rounds, {args.runs} runs each")
    interleaved_latency(rows, threads, args.runs, args.rounds, args.warmup)
    for r in rows:
        r.fn = None  # release sessions and interpreters before the next model
    load_after = load_average()
    shutil.rmtree(out, ignore_errors=True)
    probe_ms = rows[-1].latency.median_ms if rows[-1].latency else float("nan")
    gemm_rounds = probe_flops / (probe_ms / 1e3) / 1e9
    log(f"GEMM probe in the rounds: {gemm_rounds:.1f} GFLOP/s; load {load_after}")
    return CaseResult(case, flops, rows, load_before, load_after, gemm, gemm_rounds)


# -- export time of width 1.0 to all targets, fp32, split into steps ------------------------------------


# Step times come from the export's own progress events (mvit2_export/progress.py): each event starts a
# step, which lasts until the next event of the same lane. Nothing is patched, so a renamed function
# cannot silently drop a step.
def step_times(events: list[ProgressEvent]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(seconds per target, seconds per target and step) from one export's events."""
    per_target: dict[str, float] = defaultdict(float)
    steps: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_lane: dict[int, list[ProgressEvent]] = defaultdict(list)
    for e in events:
        by_lane[e.lane].append(e)
    end = max(e.at for e in events)
    for lane_events in by_lane.values():
        lane_events.sort(key=lambda e: e.at)
        for e, nxt in zip(lane_events, [*lane_events[1:], None], strict=True):
            if e.target is None:
                continue
            secs = (nxt.at if nxt is not None else end) - e.at
            label = (
                e.step
                if e.kind == "step"
                else {"export": "exporter glue (settings, metadata)"}.get(e.kind, e.kind)
            )
            per_target[e.target] += secs
            steps[e.target][label] += secs
    return dict(per_target), {t: dict(v) for t, v in steps.items()}


def cli_export_wall(width: float, size: int, work: Path, jobs: int | None) -> float:
    """Wall time of `mvit2-export --target all --precision fp32 --no-check` in a fresh process, as a user
    runs it (start-up and imports included)."""
    cmd = [sys.executable, "-m", "mvit2_export.cli.main", "--target", "all", "--precision", "fp32"]
    cmd += ["--no-check", "--force", "--out", str(work / f"export-cli-{jobs}"), "--image-size", str(size)]
    cmd += [] if width == 1.0 else ["--width", f"{width:g}"]
    cmd += [] if jobs is None else ["--jobs", str(jobs)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def measure_export_time(width: float, size: int, threads: int, work: Path) -> dict[str, Any]:
    """The API equivalent of `mvit2-export --target all --precision fp32 --no-check --jobs 1` on a fresh
    model, split into steps; then the CLI's wall time in fresh processes, serial and with its default lanes."""
    events: list[ProgressEvent] = []

    def progress(event: ProgressEvent) -> None:
        events.append(event)
        if event.kind == "export":
            log(event.step)

    t0 = time.perf_counter()
    manifest = mvit2_export.export(
        None,
        "all",
        work / "export-time",
        "fp32",
        width=None if width == 1.0 else width,
        image_size=size,
        check=False,
        threads=threads,
        progress=progress,
        workers=1,  # one lane: per-target times add up to the serial total
    )
    total = time.perf_counter() - t0
    per_target, steps = step_times(events)
    jobs = [e for e in events if e.kind == "export"]
    first = jobs[0].elapsed if jobs else 0.0
    return {
        "width": width,
        "size": size,
        "total_s": total,
        "before_first_target_s": first,
        "after_last_target_s": total - max(e.elapsed for e in events),
        "per_target_s": per_target,
        "steps": steps,
        "artifacts": [e.path for e in manifest.artifacts],
        "cli_serial_s": cli_export_wall(width, size, work, 1),
        "cli_default_s": cli_export_wall(width, size, work, None),
    }


# -- report ---------------------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:{spec}}{suffix}"


def ratios(res: CaseResult) -> list[dict[str, Any]]:
    bound = res.bound_ms
    med = {(r.backend, r.role, r.precision): r.latency.median_ms for r in res.rows if r.latency}
    eager = med.get(("pytorch", "reference", "fp32"))
    out = []
    for r in res.shown:
        m = r.latency.median_ms if r.latency else None
        base = med.get((r.backend, "baseline", "fp32"))
        ours32 = med.get((r.backend, "ours", "fp32"))
        out.append(
            {
                "row": r,
                "median": m,
                "p90": r.latency.p90_ms if r.latency else None,
                "min": r.latency.min_ms if r.latency else None,
                "x_bound": m / bound if m else None,
                "vs_eager": m / eager if m and eager else None,
                "vs_baseline": m / base if m and base and r.role == "ours" else None,
                "vs_fp32": m / ours32
                if m and ours32 and r.role == "ours" and r.precision != "fp32"
                else None,
            }
        )
    return out


# The per-backend targets of issues 4 (ONNX) and 8 (TFLite): (label, numerator, denominator, goal, rule).
TARGETS = (
    ("ONNX fp32 ours / plain", ("onnx", "ours", "fp32"), ("onnx", "baseline", "fp32"), "<= 0.9", 0.9),
    ("ONNX int8 speed-up over our fp32", ("onnx", "ours", "fp32"), ("onnx", "ours", "int8"), ">= 2x", -2.0),
    (
        "TFLite fp32 ours / minimal litert-torch",
        ("tflite", "ours", "fp32"),
        ("tflite", "baseline", "fp32"),
        "<= 0.8",
        0.8,
    ),
    (
        "TFLite int8 speed-up over our fp32",
        ("tflite", "ours", "fp32"),
        ("tflite", "ours", "int8"),
        ">= 2x",
        -2.0,
    ),
    (
        "ExecuTorch fp32 ours / our TFLite (LiteRT XNNPACK)",
        ("executorch", "ours", "fp32"),
        ("tflite", "ours", "fp32"),
        "<= 1.0",
        1.0,
    ),
    (
        "ExecuTorch fp32 ours / ExecuTorch on transformers",
        ("executorch", "ours", "fp32"),
        ("executorch", "baseline", "fp32"),
        "<= 0.8",
        0.8,
    ),
    (
        "ExecuTorch int8 speed-up over our fp32",
        ("executorch", "ours", "fp32"),
        ("executorch", "ours", "int8"),
        ">= 2x",
        -2.0,
    ),
)  # a positive limit is an upper bound, a negative one a lower bound on the ratio


def targets(res: CaseResult) -> list[str]:
    med = {(r.backend, r.role, r.precision): r.latency.median_ms for r in res.rows if r.latency}
    lines = []
    for label, num, den, goal, limit in TARGETS:
        if num in med and den in med:
            v = med[num] / med[den]
            ok = v <= limit if limit > 0 else v >= -limit
            lines.append(f"{label} **{v:.2f}** (target {goal}): {'met' if ok else 'MISSED'}")
    return lines


def write_markdown(
    path: Path,
    mach: dict[str, Any],
    results: list[CaseResult],
    gflops: float,
    export: dict[str, Any] | None,
    args: argparse.Namespace,
    wall_s: float,
    png: Path,
) -> None:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in mach["flags"].items())
    vers = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    gemms = "; ".join(
        f"{r.case.label}: {r.gemm_rounds_gflops:.1f} in the rounds, {r.gemm.gflops:.1f} best before"
        for r in results
    )
    lines = [
        "# Benchmark: all backends and precisions, the peers, and the roofline",
        "",
        f"`python benchmarks/bench_all.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        f"(one process, one run, {wall_s / 60:.0f} min; {mach['date']}).",
        "",
        "## Machine",
        "",
        f"- CPU: {mach['cpu']}; {mach['cores']} cores ({mach['usable_cores']} usable), {mach['memory']} RAM; {mach['os']}",
        f"- ISA flags that matter for fp16/int8 kernels: {flags}",
        f"- Python {mach['python']}; {vers}",
        "- Shared machine: other processes ran during the benchmark (1-min load average per model below), so "
        "absolute numbers are noisy; the ratios compare runners measured in the same interleaved rounds.",
        "",
        "## Method",
        "",
        f"- {args.threads} threads everywhere (torch intra-op, onnxruntime intra-op with ORT_ENABLE_ALL, LiteRT "
        "num_threads with the XNNPACK delegate); batch 1; random (untrained) weights of the embedded default config. "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}: with libgomp's default spinning, 2-thread eager PyTorch "
        "on this loaded 2-core machine measured 5-50x slower than passive (see the top of bench_all.py).",
        f"- Latency: {args.rounds} interleaved rounds; each round runs every runner (rotated order) "
        f"for {math.ceil(args.runs / args.rounds)} timed calls after 1 warm-up call ({args.warmup} more in the first round); "
        f"median and p90 over the {math.ceil(args.runs / args.rounds) * args.rounds} pooled calls. Timed call: "
        "`model(x)` under inference_mode, `InferenceSession.run`, the LiteRT signature runner; inputs prepared once.",
        "- Roofline bound = model FLOPs (2 x conv/linear MACs, `mvit2_export/model/summary.py`) / fp32 GEMM "
        f"throughput at {args.threads} threads (`mvit2_export/bench/roofline.py`). The throughput is the median rate "
        f"of a {GEMM_PROBE_N}x{GEMM_PROBE_N} `torch.matmul` timed as one more runner in the same interleaved rounds, "
        "so bound and latencies see the same load; the best rate over 1024-2048 matrices measured just before each "
        f"model is shown for scale (GFLOP/s: {gemms}; overall best {gflops:.1f}). "
        "`x bound` = median latency / bound (1.0 = every FLOP at GEMM speed and nothing else costs).",
        "- Baselines: *plain dynamo*: `torch.onnx.export(dynamo=True)` of transformers' unrewritten model, defaults "
        "(`bench_onnx.export_plain`), in onnxruntime. *minimal litert-torch*: transformers' model with only the "
        "patches litert-torch needs (pixel_(un)shuffle patching, broadcast instead of expand_as, GroupNorm as "
        "element-wise ops; as `bench_tflite.py`), XNNPACK. `vs baseline` compares ours with the baseline of the "
        "same runtime; `vs fp32` compares with our fp32 artifact of the same backend.",
        f"- Ours: `mvit2_export.export(model, '{OUR_TARGETS}', ..., precision='fp32,fp16,int8', check=False)`; parity "
        "is gated by the exporters and their tests, not re-measured here. int8 = the defaults (ONNX: static QDQ "
        "u8s8 on Conv/Gemm; TFLite: ai-edge-quantizer static), calibrated on the bundled photos. `export s` of "
        "fp16/int8 excludes the fp32 lowering they reuse from the fp32 export in the same process.",
        "- fp16 on this CPU: onnxruntime's CPU provider has few fp16 kernels (it inserts casts); XNNPACK runs "
        "fp16-weight TFLite models in fp32 (weights dequantized at load). Both are measured, neither is a "
        "fp16-compute speed on this host.",
        "",
        "## Results",
        "",
        "| model | backend | runner | prec | median ms | p90 ms | min ms | x bound | vs eager | vs baseline | vs fp32 "
        "| MB | export s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for d in ratios(res):
            r: Row = d["row"]
            if r.latency is None:
                lines.append(
                    f"| {res.case.label} | {r.backend} | {r.name} | {r.precision} | {r.note} | | | | | | | | |"
                )
                continue
            lines.append(
                f"| {res.case.label} | {r.backend} | {r.name} | {r.precision} | {fmt(d['median'])} | {fmt(d['p90'])} "
                f"| {fmt(d['min'])} "
                f"| {fmt(d['x_bound'], '.2f')} | {fmt(d['vs_eager'], '.2f')} | {fmt(d['vs_baseline'], '.2f')} "
                f"| {fmt(d['vs_fp32'], '.2f')} | {fmt(r.size_mb)} | {fmt(r.export_s, '.0f')} |"
            )
    lines += ["", "## Per model: roofline bound, targets of the issues (same-run ratios)", ""]
    for res in results:
        lines.append(
            f"- **{res.case.label}**: {res.flops / 1e9:.2f} GFLOPs; GEMM {res.gemm_rounds_gflops:.1f} GFLOP/s in the "
            f"rounds -> bound {res.bound_ms:.1f} ms ({roofline_ms(res.flops, gflops):.1f} ms at the best rate seen); "
            f"load average {res.load_before} -> {res.load_after}"
        )
        lines += [f"  - {t}" for t in targets(res)]
    if export is not None:
        lines += export_section(export)
    lines += [
        "",
        "## Plot",
        "",
        f"![latency by model, backend and precision]({png.name})",
        "",
        "## Other results",
        "",
        "- `RESULTS-onnx.md` (`bench_onnx.py`): ONNX op histograms, parity numbers and the int8 all-ops variant.",
        "- `RESULTS-tflite.md` (`bench_tflite.py`): TFLite op histograms (TRANSPOSE, BATCH_MATMUL) and the per-op profile.",
    ]
    path.write_text("\n".join(lines) + "\n")


def export_section(e: dict[str, Any]) -> list[str]:
    total = e["total_s"]
    width_flag = "" if e["width"] == 1.0 else f" --width {e['width']:g} --image-size {e['size']}"
    cli = f"mvit2-export --target all --precision fp32 --no-check{width_flag}"
    cli_s = e["cli_default_s"]
    lines = [
        "",
        f"## Export time: width {e['width']:g} @ {e['size']}, all three targets, fp32",
        "",
        f"`{cli}` in a fresh process, start-up included: **{cli_s:.0f} s** with the default lanes (one process "
        f"per target group, up to the cores; target < 60 s: {'met' if cli_s < 60 else 'MISSED'}), "
        f"{e['cli_serial_s']:.0f} s with `--jobs 1`.",
        "",
        "Split into steps: the API equivalent with `workers=1` (`mvit2_export.export(None, 'all', ...)`), in "
        "this process, first thing after start-up (torch, transformers already imported; the backends' own "
        "imports are inside the clock), a fresh model so no cached trace is reused.",
        "",
        f"- **total {total:.0f} s** serial; before the first target "
        f"(model build, validation) {e['before_first_target_s']:.1f} s; after the last (report) {e['after_last_target_s']:.1f} s",
        "- per target: " + ", ".join(f"{t} {s:.0f} s" for t, s in e["per_target_s"].items()),
        "",
        "| target | step | s | share of target |",
        "|---|---|---:|---:|",
    ]
    for target, steps in e["steps"].items():
        t_total = e["per_target_s"][target]
        for label, secs in sorted(steps.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {target} | {label} | {secs:.1f} | {secs / t_total:.0%} |")
    return lines


def plot_label(r: Row) -> str:
    if r.role == "reference":
        return "PyTorch eager"
    if r.role == "baseline":
        return "plain dynamo ONNX (ORT)" if r.backend == "onnx" else "minimal litert-torch (XNNPACK)"
    return f"ours {'ONNX' if r.backend == 'onnx' else 'TFLite'} {r.precision}"


def write_plot(path: Path, results: list[CaseResult], gflops: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"pytorch": "#777777", "onnx": "#1f77b4", "tflite": "#ff7f0e", "executorch": "#2ca02c"}
    heights = [1.4 + 0.3 * sum(r.latency is not None for r in res.rows) for res in results]
    fig, axes = plt.subplots(
        len(results), 1, figsize=(9, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, res in zip(axes[:, 0], results, strict=True):
        timed = [r for r in res.shown if r.latency]
        labels = [plot_label(r) for r in timed]
        med = [r.latency.median_ms for r in timed]
        p90 = [r.latency.p90_ms - r.latency.median_ms for r in timed]
        y = np.arange(len(timed))
        bars = ax.barh(
            y,
            med,
            xerr=[np.zeros(len(p90)), p90],
            color=[colors[r.backend] for r in timed],
            edgecolor="black",
        )
        for bar, r in zip(bars, timed, strict=True):
            if r.role == "baseline":  # the peers: hatched and lighter
                bar.set_hatch("//")
                bar.set_alpha(0.5)
        ax.axvline(res.bound_ms, color="red", linestyle="--", label=f"roofline bound {res.bound_ms:.1f} ms")
        best = roofline_ms(res.flops, gflops)
        ax.axvline(best, color="gray", linestyle=":", label=f"at the best GEMM rate seen {best:.1f} ms")
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        core_ml = " (Core ML: not timed, needs macOS)" if any(r.backend == "coreml" for r in res.rows) else ""
        ax.set_title(f"{res.case.label}: median (bar) and p90 (whisker), ms{core_ml}", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: width 0.5 @ 128 (also segmentation), few runs, temp output",
    )
    ap.add_argument("--widths", default="0.5,1.0,2.0", help="classification widths (comma list)")
    ap.add_argument("--size", type=int, default=256, help="classification image size")
    ap.add_argument("--seg-widths", default="1.0", help="segmentation widths (comma list)")
    ap.add_argument("--seg-size", type=int, default=512)
    ap.add_argument("--no-seg", action="store_true")
    ap.add_argument("--runs", type=int, default=60, help="timed calls per runner, pooled over the rounds")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-export-time", action="store_true")
    ap.add_argument(
        "--out-dir", type=Path, default=None, help="where RESULTS.md/.png go (default: benchmarks/)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.widths, args.seg_widths, args.size, args.seg_size = "0.5", "0.5", 128, 128
        args.runs, args.rounds, args.warmup = min(args.runs, 6), min(args.rounds, 2), min(args.warmup, 2)
        if args.out_dir is None:
            args.out_dir = Path(tempfile.mkdtemp(prefix="bench-all-quick-"))
    args.out_dir = args.out_dir or HERE
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    mach = machine()
    work = Path(tempfile.mkdtemp(prefix="bench-all-"))
    try:
        export = None
        if not args.no_export_time:
            ew, es = (0.5, 128) if args.quick else (1.0, 256)
            log(f"export time: width {ew} @ {es}, all targets, fp32")
            export = measure_export_time(ew, es, args.threads, work)
            log(f"export time total {export['total_s']:.1f} s: {export['per_target_s']}")
        cases = [Case("classification", float(w), args.size) for w in args.widths.split(",") if w.strip()]
        if not args.no_seg:
            cases += [
                Case("segmentation", float(w), args.seg_size) for w in args.seg_widths.split(",") if w.strip()
            ]
        results = [run_case(c, args, work) for c in cases]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gflops = max(max(r.gemm.gflops, r.gemm_rounds_gflops) for r in results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md, png = args.out_dir / "RESULTS.md", args.out_dir / "RESULTS.png"
    write_plot(png, results, gflops)
    write_markdown(md, mach, results, gflops, export, args, time.perf_counter() - start, png)
    print(md.read_text())
    log(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
