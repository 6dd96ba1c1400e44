import pytest
import torch
from torch.fx import GraphModule

from mvit2_export.errors import RewriteError
from mvit2_export.rewrites import PIPELINES, REGISTRY, Registry, Rewrite, RewriteResult, apply_pipeline
from mvit2_export.rewrites.graph_utils import aten, find

from ._helpers import export


def test_ids_are_namespaced_and_pipelines_resolve():
    assert len(REGISTRY) >= 9
    for name in ("onnx", "coreml", "tflite"):
        assert PIPELINES[name] and all(rid in REGISTRY for rid in PIPELINES[name])
    assert all("::" in rid for rid in REGISTRY)


def test_duplicate_id_is_an_error():
    reg = Registry()

    class A(Rewrite):
        id = "test::same"

    class B(Rewrite):
        id = "test::same"

    reg.register(A)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(B)
    with pytest.raises(KeyError):
        reg.get("test::missing")


def test_bad_id_rejected():
    class Bad(Rewrite):
        id = "no_namespace"

    with pytest.raises(ValueError, match="namespace::name"):
        Registry().register(Bad)


def test_result_to_dict():
    assert RewriteResult("a::b", 0, "no im2col node").to_dict() == {
        "id": "a::b",
        "fired": 0,
        "reason": "no im2col node",
    }


class _Broken(Rewrite):
    """Replaces relu by sigmoid: valid graph, wrong numbers."""

    id = "test::broken_numerics"

    def apply(self, gm: GraphModule) -> RewriteResult:
        n = 0
        for node in find(gm, aten.relu):
            node.target = aten.sigmoid.default
            n += 1
        return RewriteResult(self.id, n)


class _Crashing(Rewrite):
    id = "test::crashing"

    def apply(self, gm: GraphModule) -> RewriteResult:
        raise RuntimeError("boom")


@pytest.fixture
def temp_rewrites():
    for cls in (_Broken, _Crashing):
        REGISTRY.register(cls)
    yield
    for cls in (_Broken, _Crashing):
        REGISTRY._items.pop(cls.id)


def test_failures_raise_rewrite_error_naming_the_rewrite(temp_rewrites):
    ep = export(lambda x, m: torch.relu(x) - 0.5, torch.randn(2, 3))
    with pytest.raises(RewriteError, match="test::broken_numerics"):
        apply_pipeline(ep, ["common::remove_identity_ops", "test::broken_numerics"])
    with pytest.raises(RewriteError, match="test::crashing failed: RuntimeError: boom"):
        apply_pipeline(ep, ["test::crashing"])
    with pytest.raises(RewriteError, match="unknown pipeline"):
        apply_pipeline(ep, "nope")


def test_untouched_program_returned_as_is():
    ep = export(lambda x, m: x + 1, torch.randn(2, 3))
    new, results = apply_pipeline(ep, "onnx")
    assert new is ep and all(r.fired == 0 and r.reason for r in results)
