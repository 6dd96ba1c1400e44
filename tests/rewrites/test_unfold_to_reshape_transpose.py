import torch

from ._helpers import ATOL, counts, export, max_diff, rewrite, unfold_fn

RID = "coreml::unfold_to_reshape_transpose"


def test_unfold_becomes_rank5_reshapes():
    x = torch.randn(2, 6, 8, 12)
    ep = export(unfold_fn(2, 2), x, dynamic=True)
    new, res = rewrite(ep, RID)
    assert res.fired == 1
    after = counts(new)
    assert "im2col" not in after and "pixel_unshuffle" not in after and after["permute"] == 2
    for node in new.graph.nodes:  # Core ML tensors are at most rank 5
        val = node.meta.get("val")
        assert not isinstance(val, torch.Tensor) or val.dim() <= 5
    assert max_diff(ep, new, torch.randn(3, 6, 8, 12)) <= ATOL


def test_overlapping_windows_left_alone():
    _, res = rewrite(export(unfold_fn(3, 1), torch.randn(1, 2, 6, 6)), RID)
    assert res.fired == 0 and res.reason == "im2col with overlapping windows (kernel 3 != stride 1)"
