"""ONNX benchmark: our exports vs the plain dynamo export of transformers' (unrewritten) MobileViTV2.

    python benchmarks/bench_onnx.py [--threads 2] [--runs 20] [--rounds 3] [--out benchmarks/RESULTS-onnx.md]

Width 1.0 at 256 (the embedded default, random weights), onnxruntime CPU. The machine may be shared,
so each artifact is timed in several interleaved rounds and the median of the round medians is kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mvit2_export import load_model
from mvit2_export.bench.latency import LatencyResult, measure_latency
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.exporters.onnx import OnnxExporter, OnnxRunner, onnx_op_histogram
from mvit2_export.exporters.onnx.runner import RUNTIME
from mvit2_export.parity.run import run_parity

FORBIDDEN = ("Col2Im", "Gather", "Expand", "InstanceNormalization", "MatMul", "Einsum")


def bench_onnx(path: Path | str, threads: int, warmup: int = 5, runs: int = 20) -> LatencyResult:
    """Median latency of one batch-1 image at the artifact's own input size."""
    runner = OnnxRunner(Path(path), threads)
    shape = [1 if not isinstance(d, int) else d for d in runner.input_shape]
    rng = np.random.default_rng(0)
    if runner.input_type == np.uint8:
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        x = rng.random(shape, dtype=np.float32).astype(runner.input_type)
    feeds = {runner.input_name: x}
    return measure_latency(lambda: runner.session.run(None, feeds), RUNTIME, threads, warmup, runs)


def export_plain(model: torch.nn.Module, size: int, dest: Path) -> Path:
    """torch.onnx.export(dynamo=True) with defaults: what a user gets without our rewrites/simplifier."""
    x = torch.rand(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["pixel_values"], verbose=False)
    program.save(str(dest))
    return dest


def hf_model(config_src) -> torch.nn.Module:
    import transformers

    from mvit2_export.model.random_init import randomize_weights

    cfg = transformers.MobileViTV2Config(
        num_labels=len(config_src.id2label),
        image_size=config_src.image_size,
        width_multiplier=config_src.width_multiplier,
    )
    return randomize_weights(transformers.MobileViTV2ForImageClassification(cfg).eval(), 0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-onnx.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(None, "classification")
    size = model.config.image_size
    work = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    exporter = OnnxExporter()
    paths: dict[str, Path] = {}
    export_s: dict[str, float] = {}

    t0 = time.perf_counter()
    paths["plain (transformers, dynamo)"] = export_plain(hf_model(model.config), size, work / "plain.onnx")
    export_s["plain (transformers, dynamo)"] = time.perf_counter() - t0
    parity: dict[str, dict] = {}
    variants = {  # name -> (precision, backend options)
        "fp32": ("fp32", {}),
        "fp16": ("fp16", {}),
        "int8": ("int8", {}),  # default: Conv/Gemm/MatMul quantized
        "int8 all-ops": ("int8", {"int8_op_types": "all"}),
    }
    for name, (precision, backend) in variants.items():
        t0 = time.perf_counter()
        opts = ExportOptions(precision=precision, image_size=size, backend=backend)
        art = exporter.export(model, opts, work / f"{name.replace(' ', '_')}.onnx")
        export_s[f"ours {name}"] = time.perf_counter() - t0
        paths[f"ours {name}"] = art.path
        runner = exporter.load_runner(art.path, art.to_entry(), args.threads)
        parity[name] = run_parity(model, runner, precision, size).to_dict()

    medians: dict[str, list[float]] = {k: [] for k in paths}
    mins: dict[str, float] = {k: float("inf") for k in paths}
    for _ in range(args.rounds):
        for name, path in paths.items():
            r = bench_onnx(path, args.threads, warmup=3, runs=args.runs)
            medians[name].append(r.median_ms)
            mins[name] = min(mins[name], r.min_ms)
    med = {k: float(np.median(v)) for k, v in medians.items()}
    hists = {k: onnx_op_histogram(p) for k, p in paths.items()}

    plain, fp32 = med["plain (transformers, dynamo)"], med["ours fp32"]
    lines = [
        "# ONNX benchmark (MobileViTV2 width 1.0, 256x256, batch 1)",
        "",
        f"onnxruntime CPU, {args.threads} threads, ORT_ENABLE_ALL; {platform.processor() or platform.machine()}; "
        f"{args.rounds} interleaved rounds x {args.runs} runs, median of round medians. Shared machine: expect noise.",
        "",
        "| artifact | median ms | min ms | vs plain | vs our fp32 | nodes | export s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k in paths:
        lines.append(
            f"| {k} | {med[k]:.1f} | {mins[k]:.1f} | {med[k] / plain:.2f}x | {med[k] / fp32:.2f}x "
            f"| {sum(hists[k].values())} | {export_s[k]:.0f} |"
        )
    ratio = fp32 / plain
    lines += ["", f"- fp32 ours/plain = {ratio:.2f} (target <= 0.90): {'met' if ratio <= 0.9 else 'MISSED'}"]
    for k in ("ours int8", "ours int8 all-ops"):
        speedup = fp32 / med[k]
        lines.append(
            f"- {k}: {speedup:.2f}x faster than our fp32 (target >= 2x): {'met' if speedup >= 2 else 'MISSED'}"
        )
    bad = {k: [op for op in FORBIDDEN if op in hists[k]] for k in paths if k.startswith("ours")}
    lines.append(f"- forbidden ops {FORBIDDEN} in ours: {bad}")
    lines += [
        "",
        "## Parity (bundled photos + random images; untrained weights: int8 reported, not gated)",
        "",
    ]
    for p, rep in parity.items():
        m = rep["metrics"]["logits"]
        lines.append(
            f"- {p}: passed={rep['passed']} gated={rep['gated']} top1={m['top1']:.3f} "
            f"cosine={m['cosine']:.6f} max_abs_rel={m['max_abs_rel']:.2e}"
        )
    lines += ["", "## Op histograms", ""]
    for k, h in hists.items():
        lines.append(f"- {k}: `{json.dumps(h)}`")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
