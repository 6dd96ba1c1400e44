"""What each float fallback costs: int8 with one layer group kept float, timed beside all-int8 and fp32.

    python benchmarks/bench_int8_fallbacks.py                        # width 1.0 @ 256, ONNX and TFLite
    python benchmarks/bench_int8_fallbacks.py --targets executorch   # + ~2 min of lowering per group,
                                                                     # and its convolutions-only recipe

The mixed-precision search (mvit2_export/exporters/int8_search.py) keeps the most sensitive of 12
contiguous layer groups in float until the held-out gate holds; which groups a trained model needs is
the model's, so this measures them all: per backend, the all-int8 artifact with each group float alone
(built by the backend's own quantizer object, exactly as the search builds its candidates), then fp32,
all-int8 and the 12 variants timed in the same interleaved rounds. Every artifact of a backend runs at
the threading found best for its all-int8 artifact (searched as `mvit2-export bench` does). Prints the
host's CPU and ISA, and per group the latency, its cost over all-int8 in ms and as a share of the
int8-over-fp32 saving. Random weights (the embedded default): speed does not depend on the values.
"""

# ruff: noqa: E402
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_all.py

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

import mvit2_export
from mvit2_export.api import resolve_model
from mvit2_export.bench.interleaved import Row, interleaved_latency
from mvit2_export.bench.machine import machine_facts
from mvit2_export.cpu import resolve_int8_isa
from mvit2_export.data.images import calibration_images, parity_images
from mvit2_export.exporters import available_targets, get_exporter
from mvit2_export.exporters.int8_search import groups_of

TARGETS = ("onnx", "tflite", "executorch")


def onnx_variants(model, size: int, isa: str, calib, work: Path) -> tuple[list[str], Callable]:
    from mvit2_export.exporters.onnx import convert, quantize
    from mvit2_export.exporters.onnx.exporter import resolve_opset

    graph = convert.fp32_graph(model, size, False, resolve_opset({}))
    fp32 = work / "fp32-graph.onnx"
    onnx.save(graph.proto, str(fp32))
    q = quantize.OnnxInt8(fp32, work, graph.input_name, calib, False, quantize.resolve_op_types({}), isa)

    def build(float_nodes: list[str], dest: Path) -> Path:
        return Path(shutil.move(q.quantize(float_nodes), dest))  # its names repeat: move it out

    return q.quantizable_nodes(), build


def tflite_variants(model, size: int, isa: str, calib, work: Path, int8: Path) -> tuple[list[str], Callable]:
    from mvit2_export.exporters.tflite import convert, quantize
    from mvit2_export.exporters.tflite.flatbuffer import read_metadata, with_metadata

    lowered = convert.lower(model, size, False)
    q = quantize.StaticInt8(lowered.flatbuffer, lowered.signature, lowered.input_name, calib, False)
    meta = read_metadata(int8)  # the runner reads the signature and layouts from it

    def build(float_ops: list[str], dest: Path) -> Path:
        dest.write_bytes(with_metadata(q.quantize(float_ops), meta))
        return dest

    return q.quantizable_ops(), build


def executorch_variants(
    model, size: int, isa: str, calib, work: Path, int8: Path
) -> tuple[list[str], Callable]:
    from mvit2_export.exporters.executorch import lower
    from mvit2_export.exporters.executorch.quantize import PT2EInt8
    from mvit2_export.exporters.executorch.runner import read_metadata

    body = lower.prepared(model, size, False)
    batched = lower.prepared(model, size, False, dynamic_batch=True)
    q = PT2EInt8(batched.module, body.example, calib, False)
    meta = read_metadata(int8)

    def build(float_nodes: list[str], dest: Path) -> Path:
        dest.write_bytes(lower.to_pte(q.quantize(float_nodes), "xnnpack", "int8", meta).buffer)
        return dest

    return q.quantizable_nodes(), build


def recipes(target: str, model, size: int, calib) -> list[tuple[str, list[str]]]:
    """A backend's second int8 recipe, as (name, the nodes it keeps float): searched when the first
    misses in every configuration (ExecuTorch's CONVS_ONLY), so its cost is measured too."""
    if target != "executorch":
        return []
    from mvit2_export.exporters.executorch import lower
    from mvit2_export.exporters.executorch.exporter import CONVS_ONLY
    from mvit2_export.exporters.executorch.quantize import PT2EInt8

    batched = lower.prepared(model, size, False, dynamic_batch=True)
    q = PT2EInt8(batched.module, lower.example_input(size, False), calib[:1], False)
    convs = set(q.convolutions())
    return [(CONVS_ONLY, [n for n in q.quantizable_nodes() if n not in convs])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--targets", default="onnx,tflite", help=f"of {', '.join(TARGETS)}")
    ap.add_argument("--runs", type=int, default=40, help="timed calls per artifact, pooled over the rounds")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--int8-isa", default="auto")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t in available_targets()]
    isa = resolve_int8_isa(args.int8_isa)
    host = machine_facts()
    print(f"host: {host['cpu']}, {host['usable_cores']} usable cores; ISA: {' '.join(host['isa'])}")
    print(
        f"width {args.width:g} @ {args.size}; int8 built for --int8-isa {isa}; targets {', '.join(targets)}"
    )
    model = resolve_model(None, None, args.width)
    calib = calibration_images(None, args.size)
    image = parity_images(args.size, n_photos=1, n_random=0)
    builders = {"onnx": onnx_variants, "tflite": tflite_variants, "executorch": executorch_variants}
    from bench_int8 import rows_for  # the fp32 / all-int8 pair at each one's best threading

    for target in targets:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            out = work / "out"
            manifest = mvit2_export.export(
                model, target, out, "fp32,int8", image_size=args.size, check=False, workers=1, int8_isa=isa
            )
            rows = rows_for(out, manifest, image, args.runs)
            int8_row = next(r for r in rows if r.precision == "int8")
            entry = next(a for a in manifest.artifacts if a.precision == "int8")
            extra = () if target == "onnx" else (out / entry.path,)
            nodes, build = builders[target](model, args.size, isa, calib, work, *extra)
            exporter = get_exporter(target)
            settings = {k: v for k, v in int8_row.extra.items() if k != "threads"}
            variants = [(f"{n.split(' (')[0]} ({len(g)} ops)", g) for n, g in groups_of(nodes)]  # stem first
            for name, group in [*variants, *recipes(target, model, args.size, calib)]:
                print(f"  building {target}: {name} float", flush=True)
                path = build(group, work / f"float-{len(rows)}{Path(entry.path).suffix}")
                runner = exporter.load_runner(path, entry, int8_row.extra["threads"], **settings)
                row = Row("", target, name, "int8", "ours", fn=lambda r=runner: r.run(image))
                row.size_mb = path.stat().st_size / 1e6
                rows.append(row)
            interleaved_latency(rows, 0, args.runs, args.rounds, 2)
            fp32, int8 = rows[0].latency.median_ms, int8_row.latency.median_ms
            knobs = ", ".join(f"{k}={v}" for k, v in int8_row.extra.items())
            print(f"\n### {target} ({knobs})\n")
            print(f"fp32 {fp32:.2f} ms, all-int8 {int8:.2f} ms ({fp32 / int8:.2f}x)\n")
            print("| kept float | ms | cost over all-int8 | share of int8's saving | speed-up over fp32 |")
            print("|---|---:|---:|---:|---:|")
            for row in rows[2:]:
                ms = row.latency.median_ms
                share = (ms - int8) / (fp32 - int8) if fp32 > int8 else float("nan")
                print(
                    f"| {row.name} | {ms:.2f} | {ms - int8:+.2f} ms | {share:.0%} | {fp32 / ms:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
