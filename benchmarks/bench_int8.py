"""int8 against fp32 on each runtime, each artifact at its best threading on this host, in one run.

    python benchmarks/bench_int8.py                          # widths 1.0 and 2.0 @ 256 (~15-20 min, 2 cores)
    python benchmarks/bench_int8.py --widths 0.5 --size 128  # a quick look

Per width: the embedded default model (random weights) exported to ONNX, TFLite and ExecuTorch in fp32
and int8 (every layer int8: on untrained weights the gate reports and does not search, so this is the
fastest int8 each backend makes; a trained model's float fallbacks cost what its search's trials record).
Per artifact the threading is searched as `mvit2-export bench` does (threads 1..cores x the runtime's
own knobs, e.g. onnxruntime's spinning; ExecuTorch's thread pool is one per process and sized once, so
it runs at the cores), then fp32 and int8 are timed at their own best settings in interleaved rounds
(rotated order), so a burst of load from elsewhere hits both alike. Prints the host's CPU and ISA, the
`--int8-isa` the int8 artifacts were built for, the setting each ran at, and int8's speed-up over fp32.
"""

# ruff: noqa: E402
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_all.py

import argparse
import tempfile
from pathlib import Path

import mvit2_export
from mvit2_export.bench.interleaved import Row, interleaved_latency
from mvit2_export.bench.machine import machine_facts
from mvit2_export.bench.threading import best_threading, thread_candidates
from mvit2_export.data.images import parity_images
from mvit2_export.exporters import available_targets, get_exporter

TARGETS = ("onnx", "tflite", "executorch")


def rows_for(out: Path, manifest, image, runs: int) -> list[Row]:
    rows = []
    for entry in manifest.artifacts:
        exporter = get_exporter(entry.target)
        path = out / entry.path

        def make(k: int, setting: dict, path=path, entry=entry, exporter=exporter):
            runner = exporter.load_runner(path, entry, k, **setting)
            return lambda: runner.run(image)

        threads = exporter.bench_threads(thread_candidates(None))
        best = best_threading(make, entry.target, threads, exporter.bench_settings(), 2, max(5, runs // 4))
        row = Row(f"w{manifest.model['width_multiplier']}", entry.target, entry.path, entry.precision, "ours")
        row.fn = make(best.threads, best.settings)
        row.extra = {"threads": best.threads, **best.settings}
        row.size_mb = path.stat().st_size / 1e6
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="1.0,2.0")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=40, help="timed calls per artifact, pooled over the rounds")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--int8-isa", default="auto")
    args = ap.parse_args()
    targets = [t for t in TARGETS if t in available_targets()]
    host = machine_facts()
    print(f"host: {host['cpu']}, {host['usable_cores']} usable cores; ISA: {' '.join(host['isa'])}")
    print(f"targets: {', '.join(targets)}; int8 built for --int8-isa {args.int8_isa}")
    image = parity_images(args.size, n_photos=1, n_random=0)
    print(
        "| model | runtime | fp32 ms (threads, setting) | int8 ms (threads, setting) | int8 speed-up | MB fp32 / int8 |"
    )
    print("|---|---|---|---|---:|---|")
    for width in [float(w) for w in args.widths.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            manifest = mvit2_export.export(
                None,
                ",".join(targets),
                out,
                "fp32,int8",
                width=width,
                image_size=args.size,
                check=False,
                workers=1,
                int8_isa=args.int8_isa,
            )
            rows = rows_for(out, manifest, image, args.runs)
            interleaved_latency(rows, 0, args.runs, args.rounds, 2)
            by = {(r.backend, r.precision): r for r in rows}
            for target in targets:
                fp, q = by[(target, "fp32")], by[(target, "int8")]

                def cell(r: Row) -> str:
                    knobs = ", ".join(f"{k}={v}" for k, v in r.extra.items())
                    return f"{r.latency.median_ms:.2f} ({knobs})"

                speedup = fp.latency.median_ms / q.latency.median_ms
                print(
                    f"| w{width:g} @{args.size} | {target} | {cell(fp)} | {cell(q)} | {speedup:.2f}x "
                    f"| {fp.size_mb:.1f} / {q.size_mb:.1f} |",
                    flush=True,
                )
            if ("tflite", "fp32") in by:  # issue 15's target: ExecuTorch fp32 <= 1.0x our TFLite on XNNPACK
                lite = by[("tflite", "fp32")].latency.median_ms
                ratios = ", ".join(
                    f"{t} {by[(t, 'fp32')].latency.median_ms / lite:.2f}x" for t in targets if t != "tflite"
                )
                print(f"|   | fp32 time / LiteRT fp32 time: {ratios} | | | | |", flush=True)


if __name__ == "__main__":
    main()
