"""The incremental shape refresh gives every node the value a full fake-tensor propagation gives it."""

from __future__ import annotations

import pytest
import torch
from torch._guards import detect_fake_mode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from mvit2_export.rewrites import PIPELINES, REGISTRY, export_program
from mvit2_export.rewrites.graph_utils import erase_unused
from mvit2_export.rewrites.shape_refresh import ShapeRefresher, _describe

from ._helpers import hf_model

pytest.importorskip("transformers")


def _full_propagation(gm: torch.fx.GraphModule) -> None:
    inputs = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
    for n in gm.graph.nodes:
        if n.op != "placeholder":
            n.meta.pop("val", None)
    mode = detect_fake_mode(inputs)
    with mode:
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)


def _snapshot(gm: torch.fx.GraphModule) -> dict[str, object]:
    return {n.name: _describe(n.meta.get("val")) for n in gm.graph.nodes if n.op != "output"}


# Static programs: on a dynamic-batch program this from-scratch propagation gives the batch as the example's
# concrete 2 where the incremental one keeps the symbol; tests/rewrites/test_whole_model.py runs the
# rewritten dynamic programs at batch 2 and 3.
@pytest.mark.parametrize(("kind", "pipeline"), [("classifier", "tflite"), ("segmentation", "coreml")])
def test_refresh_matches_full_propagation_after_every_rewrite(kind, pipeline):
    gm = export_program(hf_model(kind), torch.randn(1, 3, 64, 64)).module()
    refresher = ShapeRefresher(gm)
    fired, full_cost = 0, 0
    for rid in PIPELINES[pipeline]:
        if not REGISTRY.get(rid)().apply(gm).fired:
            continue
        fired += 1
        erase_unused(gm)
        refresher.refresh(gm)
        incremental = _snapshot(gm)
        full_cost += sum(1 for n in gm.graph.nodes if n.op not in ("placeholder", "output"))
        _full_propagation(gm)  # the oracle: torch's own propagation of the whole graph, from scratch
        assert _snapshot(gm) == incremental, rid
    assert fired >= 5
    # The point of it: far fewer nodes re-propagated than a full pass after each rewrite.
    assert refresher.propagated < full_cost / 3
