"""A compute roofline for this host: a model's FLOPs over the fp32 GEMM throughput measured here.

The bound is what a runtime would reach if every multiply-accumulate ran at large-GEMM speed and
nothing else (norms, activations, memory traffic) cost time; a latency's ratio to it says how much is
left on the table. Throughput is measured, not taken from a spec sheet: on a shared machine the
sustained rate is what the models see too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..model.summary import count_macs

GEMM_SIZES = (1024, 1536, 2048)


@dataclass
class GemmThroughput:
    threads: int
    gflops: float  # best over sizes and repeats
    by_size: dict[int, float] = field(default_factory=dict)


def gemm_throughput(threads: int, sizes: tuple[int, ...] = GEMM_SIZES, repeats: int = 5) -> GemmThroughput:
    """Best fp32 `torch.matmul` rate on square matrices at `threads` threads (best-of: noise only slows)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    by_size: dict[int, float] = {}
    try:
        gen = torch.Generator().manual_seed(0)
        for n in sizes:
            a = torch.randn(n, n, generator=gen)
            b = torch.randn(n, n, generator=gen)
            out = torch.empty(n, n)
            torch.matmul(a, b, out=out)  # warm-up: thread pool, page faults
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.matmul(a, b, out=out)
                best = min(best, time.perf_counter() - t0)
            by_size[n] = 2.0 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)
    return GemmThroughput(threads, max(by_size.values()), by_size)


def gemm_probe(n: int = 1024, threads: int | None = None) -> tuple[Callable[[], torch.Tensor], int]:
    """One fp32 n x n matmul as a zero-argument call, and its FLOPs. Timed in the same rounds as the
    models, its rate is the throughput they could get under the same load at that moment."""
    gen = torch.Generator().manual_seed(0)
    a, b, out = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen), torch.empty(n, n)

    def call() -> torch.Tensor:
        if threads is not None:  # other runtimes in the same process may have changed it
            torch.set_num_threads(threads)
        return torch.matmul(a, b, out=out)

    return call, 2 * n**3


def model_flops(model: nn.Module, image_size: int) -> int:
    """FLOPs of one image: 2 x the multiply-accumulates of convs and linears (the `info` GMACs)."""
    return 2 * count_macs(model, image_size)


def roofline_ms(flops: float, gflops: float) -> float:
    """The compute-bound latency in ms of `flops` at `gflops` GFLOP/s."""
    if not gflops > 0:
        raise ValueError(f"throughput must be positive, got {gflops}")
    return flops / (gflops * 1e9) * 1e3
