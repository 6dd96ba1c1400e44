"""One convolution in ExecuTorch's XNNPACK delegate against the same convolution in LiteRT's XNNPACK, in one run.

    python benchmarks/bench_executorch_conv.py             # ~2 min on 2 cores
    python benchmarks/bench_executorch_conv.py --threads 1

Why: our ExecuTorch segmentation program ran 1.3x slower than our TFLite one (w1.0 @ 256), and its
per-op profile (etdump) put 35 of 75 ms in two of the ASPP's 512 -> 512 3x3 convs. Each case below is
a single conv (random weights, batch 1, NCHW float input) lowered by each converter's defaults:
`to_edge_transform_and_lower(XnnpackPartitioner)` and `litert_torch.convert`; both runtimes then run
XNNPACK's convolution operator (plus a layout transpose at each end). Printed per case: median latency
of interleaved rounds, multiply-accumulates per second, and ExecuTorch / LiteRT.

Measured on the AVX2-only AMD EPYC host (2026-12-07, 2 threads; benchmarks/RESULTS-executorch.md): a
1x1 conv runs at parity (1.03x), every 3x3 conv, dilated or not, 64 or 512 channels, 2.5-2.7x slower
than in LiteRT (35 against 82-94 GMAC/s): ExecuTorch's build of XNNPACK, not our graph. Left alone as a
rewrite: nine shifted 1x1 convs ran a 512-channel 3x3 conv in 43 ms against 74 (0.58x), still slower
than LiteRT's 26-31, and would change the int8 recipes (nine quantized convs and eight adds per conv).
"""

# ruff: noqa: E402
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_all.py

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from mvit2_export.bench.interleaved import Row, interleaved_latency
from mvit2_export.bench.machine import machine_facts

# (name, channels, map size, kernel, dilation): the ASPP's convs at 512 and 256 px, and a 1x1 control.
CASES = [
    ("1x1, 512 ch, 32x32", 512, 32, 1, 1),
    ("3x3, 512 ch, 32x32", 512, 32, 3, 1),
    ("3x3 dilation 12, 512 ch, 16x16", 512, 16, 3, 12),
    ("3x3, 64 ch, 64x64", 64, 64, 3, 1),
]


def executorch_fn(conv: nn.Module, x: torch.Tensor, path: Path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    program = to_edge_transform_and_lower(torch.export.export(conv, (x,)), partitioner=[XnnpackPartitioner()])
    path.write_bytes(program.to_executorch().buffer)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda: method.execute([x])


def litert_fn(conv: nn.Module, x: torch.Tensor, path: Path, threads: int):
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    litert_torch.convert(conv, (x,)).export(str(path))
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    xn = x.numpy()
    return lambda: runner(**{name: xn})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(args.threads)  # one pool per process, sized before any load
    host = machine_facts()
    print(f"host: {host['cpu']}, {host['usable_cores']} usable cores; ISA: {' '.join(host['isa'])}")
    print(f"{args.threads} threads in both runtimes; batch 1; fp32")
    print("| conv | ExecuTorch ms (GMAC/s) | LiteRT ms (GMAC/s) | ExecuTorch / LiteRT |")
    print("|---|---:|---:|---:|")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, ch, size, k, dil) in enumerate(CASES):
            conv = nn.Conv2d(ch, ch, k, padding=dil * (k // 2), dilation=dil).eval()
            x = torch.randn(1, ch, size, size)
            rows = [Row(name, "executorch", name, "fp32", "ours"), Row(name, "tflite", name, "fp32", "ours")]
            rows[0].fn = executorch_fn(conv, x, Path(tmp) / f"{i}.pte")
            rows[1].fn = litert_fn(conv, x, Path(tmp) / f"{i}.tflite", args.threads)
            interleaved_latency(rows, args.threads, args.runs, rounds=6, warmup=2)
            macs = size * size * k * k * ch * ch
            et, lt = (r.latency.median_ms for r in rows)
            print(
                f"| {name} | {et:.2f} ({macs / et / 1e6:.0f}) | {lt:.2f} ({macs / lt / 1e6:.0f}) | {et / lt:.2f} |"
            )


if __name__ == "__main__":
    main()
