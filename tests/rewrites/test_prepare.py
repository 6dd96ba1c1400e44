"""The one trace -> rewrite -> cache: shared by every precision of one model, traced again when the
weights change in place, keyed apart by pipeline, example, batch mode and wrapper."""

from __future__ import annotations

import torch

from mvit2_export.api import resolve_model
from mvit2_export.model.preprocess import EmbeddedPreprocessing
from mvit2_export.rewrites import prepare
from mvit2_export.rewrites.prepare import weights_fingerprint


def test_prepare_caches_per_model_weights_and_form():
    model = resolve_model(None, "classification", 0.5)
    x = torch.rand(1, 3, 64, 64)
    first = prepare(model, "tflite", x)
    assert prepare(model, "tflite", torch.rand(1, 3, 64, 64)) is first  # same shape and dtype: a hit
    assert prepare(model, "onnx", x) is not first  # another pipeline
    assert prepare(model, "tflite", x, dynamic_batch=True) is not first
    uint8 = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    wrapped = prepare(model, "onnx", uint8, wrap=EmbeddedPreprocessing, dynamic_batch=True)
    assert isinstance(wrapped.traced, EmbeddedPreprocessing)
    with torch.no_grad():  # the rewritten program computes what the traced module computes
        torch.testing.assert_close(
            wrapped.module(uint8.expand(2, -1, -1, -1)),
            wrapped.traced(uint8.expand(2, -1, -1, -1)),
            atol=1e-5,
            rtol=1e-5,
        )

    before = weights_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # edited in place: same object, same storage
    assert weights_fingerprint(model) != before
    again = prepare(model, "tflite", x)
    assert again is not first and again.rewrites == first.rewrites


def test_derived_results_live_with_their_program():
    model = resolve_model(None, "classification", 0.5)
    prepared = prepare(model, "tflite", torch.rand(1, 3, 64, 64))
    prepared.derived["backend"] = "built once"
    assert prepare(model, "tflite", torch.rand(1, 3, 64, 64)).derived["backend"] == "built once"
