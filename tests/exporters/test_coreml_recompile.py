"""coremltools' compression re-compiles the program; ours runs only the quantization and clean-up passes and
validates once per pipeline (exporters/coreml/recompile.py). It must write the program coremltools' own
re-compile (our conversion pipeline, every pass, validated after each) writes: the same ops in the same
order, computing the same numbers, for every compression the CLI offers."""

from __future__ import annotations

import contextlib
import functools
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("coremltools")

import coremltools.models.utils as ct_utils  # noqa: E402

from mvit2_export import load_model  # noqa: E402
from mvit2_export.data.images import calibration_images  # noqa: E402
from mvit2_export.exporters.base import ExportOptions  # noqa: E402
from mvit2_export.exporters.coreml import compress as compress_module  # noqa: E402
from mvit2_export.exporters.coreml.compress import (  # noqa: E402
    CONV_OP_TYPES,
    calibration_feeds,
    compress,
    quantizable_ops,
)
from mvit2_export.exporters.coreml.convert import convert_model, pass_pipeline  # noqa: E402
from mvit2_export.exporters.coreml.mil import MilInterpreter  # noqa: E402
from mvit2_export.exporters.coreml.recompile import recompile_pipeline  # noqa: E402
from mvit2_export.exporters.coreml.settings import parse_settings  # noqa: E402

SIZE = 64


@contextlib.contextmanager
def full_recompile():
    """coremltools' re-compile with our conversion pipeline, as compress.py ran it before recompile.py."""
    convert = functools.partial(ct_utils._mil_convert, pass_pipeline=pass_pipeline())
    with mock.patch.object(ct_utils, "_mil_convert", convert):
        yield


# Each compression once, each head once (uniform palettization: k-means would cost this test 20 s and
# writes the same look-up-table ops).
@pytest.mark.parametrize(
    "task, precision, backend",
    [
        ("classification", "w8a8", {"calibration_samples": 4}),
        ("segmentation", "int8", {}),
        ("backbone", "palettized", {"palettize_mode": "uniform"}),
    ],
)
def test_the_short_recompile_writes_what_the_full_one_writes(
    task, precision, backend, hf_checkpoint, tmp_path
):
    folder, _ = hf_checkpoint(task, image_size=SIZE)
    options = ExportOptions(precision=precision, image_size=SIZE, backend=backend)
    settings = parse_settings(options)
    mlmodel, _ = convert_model(load_model(folder), settings, SIZE)
    images = calibration_images(None, SIZE)
    floats = quantizable_ops(mlmodel, CONV_OP_TYPES)[2:5]  # the search's float ops, where it has them
    stats: dict = {}
    programs = {}
    for name, recompile in [("short", compress_module.fast_recompile), ("full", full_recompile)]:
        with mock.patch.object(compress_module, "fast_recompile", recompile):
            compressed, _ = compress(mlmodel, settings, lambda: images, False, floats, stats)
        path = tmp_path / f"{name}.mlpackage"
        compressed.save(str(path))
        programs[name] = MilInterpreter.from_mlpackage(path)
    short, full = programs["short"], programs["full"]
    assert [(o.type, o.name) for o in short.program.ops] == [(o.type, o.name) for o in full.program.ops]
    kinds = {o.type for o in short.program.ops}
    assert kinds & {"quantize", "constexpr_affine_dequantize", "constexpr_lut_to_dense", "dequantize"}, kinds
    for feeds in calibration_feeds(images[:2], settings):
        got, want = short.run(feeds), full.run(feeds)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_the_short_pipeline_is_the_conversion_pipeline_filtered():
    """In the conversion pipeline's order, repeats included, and without the float fusions."""
    full, short = pass_pipeline().passes, recompile_pipeline().passes
    assert short == [p for p in full if p in set(short)]
    assert "common::dequantize_quantize_pair_elimination" in short
    assert not [p for p in short if "fuse" in p]
