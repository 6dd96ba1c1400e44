"""The roofline pieces: FLOPs against an independent counter, a sane throughput, the bound's arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mvit2_export.bench.roofline import gemm_probe, gemm_throughput, model_flops, roofline_ms
from mvit2_export.model import MobileViTV2Config, build_model
from mvit2_export.model.checkpoint import CheckpointInfo
from mvit2_export.model.summary import summarize


@pytest.mark.parametrize("task,output_stride", [("classification", 32), ("segmentation", 16)])
def test_flops_are_twice_the_summary_macs_and_match_torch_counter(task, output_stride):
    size = 64  # FLOPs do not depend on the weights: an untrained build is enough
    config = MobileViTV2Config(width_multiplier=0.5, image_size=size, output_stride=output_stride)
    model = build_model(config, task).eval()
    model.checkpoint = CheckpointInfo("untrained build", None, None, untrained=True)  # for summarize()
    flops = model_flops(model, size)
    # `info` rounds GMACs to 3 decimals: within 2 x 0.0005e9 FLOPs.
    assert flops == pytest.approx(2e9 * summarize(model, size)["gmacs"], abs=1e6)
    # torch's own counter: 2 FLOPs per MAC for convolutions and matmuls, nothing for element-wise ops
    # (MobileViTV2's attention is element-wise, so the two conventions agree exactly).
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    assert flops == counter.get_total_flops()


def test_gemm_throughput_is_positive_and_finite_and_restores_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = gemm_throughput(threads=1, sizes=(128, 256), repeats=2)
        assert torch.get_num_threads() == 2  # the caller's setting is back after measuring at 1
    finally:
        torch.set_num_threads(previous)
    assert result.threads == 1
    assert set(result.by_size) == {128, 256}
    assert all(math.isfinite(v) and v > 0 for v in result.by_size.values())
    assert result.gflops == max(result.by_size.values())


def test_roofline_ms_is_flops_over_throughput():
    assert roofline_ms(2e9, 100.0) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        roofline_ms(1e9, 0.0)


def test_gemm_probe_computes_the_product_it_counts():
    call, flops = gemm_probe(n=64, threads=1)
    assert flops == 2 * 64**3
    out = call()
    gen = torch.Generator().manual_seed(0)  # the probe's own operands, regenerated
    a, b = torch.randn(64, 64, generator=gen), torch.randn(64, 64, generator=gen)
    torch.testing.assert_close(out, a @ b)
