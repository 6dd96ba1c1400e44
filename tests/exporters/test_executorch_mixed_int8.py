"""ExecuTorch mixed precision on a small residual network (seconds, not the minutes of a MobileViTV2):
the calibration copied from the all-int8 run equals a fresh calibration, and a program with float layers
next to int8 ones lowers to one XNNPACK delegate that loads and computes what PT2E's simulation does.

The two failures quantize.py works around (a fused pattern split: 'ChannelsLastTaggedReshapePass'
KeyError; a dequantize shared by an int8 and a float consumer: 'Failed to create XNNAdd node') do not
occur in this small graph; they did in the MobileViTV2's, and the trained-fixture test
(tests/exporters/test_int8_trained.py, ExecuTorch row) lowers and loads such a configuration."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("executorch")
from mvit2_export.exporters.executorch import lower  # noqa: E402
from mvit2_export.exporters.executorch.quantize import (  # noqa: E402
    PT2EInt8,
    SimulatedRunner,
    _quantizer,
    _transplant,
)
from mvit2_export.exporters.executorch.runner import ExecuTorchRunner  # noqa: E402
from mvit2_export.rewrites.export import dynamic_batch_example  # noqa: E402


class Residual(nn.Module):
    """conv+relu (a fused pattern), a residual add, a max-pool (shares its input's range), a mean (shares
    its input's range too) added back, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = y + self.b(torch.relu(self.a(y)))
        z = nn.functional.max_pool2d(y, 2)
        return self.head(z + z.mean(dim=(2, 3), keepdim=True))


@pytest.fixture(scope="module")
def q() -> PT2EInt8:
    torch.manual_seed(0)
    module = Residual().eval()
    example = torch.rand(1, 3, 32, 32)
    args, shapes = dynamic_batch_example(example)
    batched = torch.export.export(module, args, dynamic_shapes=shapes, strict=False).module()
    images = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    return PT2EInt8(batched, example, images, embedded=False)


def node_named(q: PT2EInt8, name: str) -> str:
    assert name in q.quantizable_nodes(), q.quantizable_nodes()
    return name


def test_copied_observers_equal_a_fresh_calibration(q):
    """Where no observer is shared between values (a range shared by a max-pool and its input is
    copied from the all-int8 model as it is: that configuration's int8 tensors keep all-int8's ranges)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    floats = {node_named(q, "conv2d_2")}
    observed = prepare_pt2e(copy.deepcopy(q.captured), _quantizer(floats))
    assert _transplant(q.calibrated, observed) == []
    fresh = prepare_pt2e(copy.deepcopy(q.captured), _quantizer(floats))
    q._calibrate(fresh)
    x = torch.cat(q.inputs[:4])
    with torch.no_grad():
        np.testing.assert_array_equal(convert_pt2e(observed)(x), convert_pt2e(fresh)(x))


def test_a_float_mean_is_calibrated_not_copied(q):
    """An int8 mean shares its input's range; float, its output is observed alone (as the add's input),
    and that observer is calibrated: the configuration quantizes as a fresh calibration does. (Copied,
    it had the max-pool's range, and on the trained fixture a conv-only configuration agreed 0.825
    with fp32 instead of 0.964.)"""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    floats = {node_named(q, "mean")}
    observed = prepare_pt2e(copy.deepcopy(q.captured), _quantizer(floats))
    assert len(_transplant(q.calibrated, observed)) == 1
    fresh = prepare_pt2e(copy.deepcopy(q.captured), _quantizer(floats))
    q._calibrate(fresh)
    x = torch.cat(q.inputs[:4])
    with torch.no_grad():
        np.testing.assert_array_equal(q.convert(sorted(floats))(x), convert_pt2e(fresh)(x))


def test_a_fresh_calibration_serves_every_configuration_that_observes_the_same_values(q, monkeypatch):
    """The float mean's output observer, calibrated afresh for one configuration, is reused (not
    calibrated again) by another that observes the same values, and that one still quantizes exactly as
    its own fresh calibration does."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    q.convert([node_named(q, "mean")])
    calibrations: list[int] = []
    calibrate = q._calibrate
    monkeypatch.setattr(q, "_calibrate", lambda gm: (calibrations.append(1), calibrate(gm)))
    floats = [node_named(q, "mean"), node_named(q, "conv2d_3")]
    converted = q.convert(floats)
    assert calibrations == []
    fresh = prepare_pt2e(copy.deepcopy(q.captured), _quantizer(set(floats)))
    calibrate(fresh)
    x = torch.cat(q.inputs[:4])
    with torch.no_grad():
        np.testing.assert_array_equal(converted(x), convert_pt2e(fresh)(x))


# relu_1 alone: the tail of conv2d_1's fused pattern (the conv follows it into float); conv2d_2 + add:
# an add with one float input, whose other input's dequantize an int8 conv also reads.
@pytest.mark.parametrize("floats", [["add"], ["relu_1"], ["max_pool2d"], ["mean"], ["conv2d_2", "add"]])
def test_float_layers_beside_int8_lower_to_one_delegate_that_loads(q, floats, tmp_path):
    float_nodes = [node_named(q, f) for f in floats]
    lowered = lower.to_pte(q.quantize(float_nodes), "xnnpack", "int8", {})
    assert lowered.delegation["delegate_pieces"] == 1, lowered.delegation
    assert not lowered.delegation["not_delegated_compute"], lowered.delegation
    path = tmp_path / "mixed.pte"
    path.write_bytes(lowered.buffer)
    images = q.images[:6]
    got = ExecuTorchRunner(path).run(images)[0]
    simulated = SimulatedRunner(q.convert(float_nodes), embedded=False).run(images)[0]
    scale = float(np.abs(simulated).max())
    # the runtime's requantization rounds where the simulation does not: within a few int8 steps
    assert np.abs(got - simulated).max() <= 0.05 * scale


def test_floated_names_the_nodes_that_follow_a_float_node(q):
    """The manifest's float_nodes: a float relu takes its pattern's conv with it, a float add the
    max-pool and the mean that share its range, a float conv nothing else."""
    assert q.floated([]) == []
    assert q.floated([node_named(q, "relu_1")]) == ["conv2d_1", "relu_1"]
    assert q.floated([node_named(q, "add")]) == ["add", "max_pool2d", "mean"]
    assert q.floated([node_named(q, "conv2d_3")]) == ["conv2d_3"]
