"""How coremltools re-compiles a compressed program: which passes, and how often it validates.

Every coremltools.optimize call (palettize, int8 weights, W8A8) converts the saved program back to MIL,
applies its compression pass, and re-compiles it through the DEFAULT pipeline: ~80 passes, each followed
by a whole-program validation. The program was already compiled by our conversion pipeline (DEFAULT minus
one pass, convert.py; DEFAULT's fuse_elementwise_to_batchnorm would build an invalid fp32-mean batch_norm in
an fp16 program), and compression only adds quantize/dequantize and constexpr ops, so the float
fusion passes find nothing new. Measured on the trained W8A8 fixture (width 0.5 @ 128, coremltools 9):
of the re-compile's passes, only nullify_redundant_quantization_zero_point,
dequantize_quantize_pair_elimination, distributive_quantized_binary_op_scale_normalization,
const_deduplication, remove_redundant_ops, dead_code_elimination and topological_reorder changed the
program, and the int8 search compresses ~36 times. coremltools.optimize takes no pipeline of its own,
hence the patch.

So the re-compile keeps DEFAULT's order, filtered to the passes that canonicalise quantization and clean
up, and validates the program once at the end of each pipeline instead of after every pass (validation
only checks, it changes nothing; it was 5 s of the remaining 12 under a profiler). Together, one W8A8
compression with cached calibration statistics at width 0.5 @ 128: 10.5 s -> 3.3 s (2026-12-08, AVX2
host). tests/exporters/test_coreml_recompile.py holds the result to the full pipeline's: the same
program, op for op, and the same outputs, for every compression.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any
from unittest import mock

from .convert import pass_pipeline

# recompile_pipeline keeps these in the conversion pipeline's order, repeats included.
_QUANTIZATION = {
    "common::int_op_canonicalization",
    "common::nullify_redundant_quantization_zero_point",
    "common::dequantize_quantize_pair_elimination",
    "common::distributive_quantized_binary_op_scale_normalization",
    "common::dequantize_to_constexpr",
    "common::canonicalize_quantized_lut_pattern",
    "common::merge_affine_dequantize_with_consecutive_ops",
}
_CLEAN_UP = {
    "common::update_output_dtypes",
    "common::cast_optimization",
    "common::noop_elimination",
    "common::const_elimination",
    "common::const_deduplication",
    "common::remove_redundant_ops",
    "common::dedup_op_and_var_names",
    "common::dead_code_elimination",
    "common::topological_reorder",
}
KEPT = _QUANTIZATION | _CLEAN_UP


def recompile_pipeline() -> Any:
    """The conversion pipeline (convert.py) with only the passes in KEPT, each with its options."""
    import coremltools as ct

    full = pass_pipeline()
    names = [n for n in full.passes if n in KEPT]
    pipeline = ct.PassPipeline(names, pipeline_name="mvit2-export recompile")
    for name in set(names):
        options = full.get_options(name)
        if options:
            pipeline.set_options(name, {o.option_name: o.option_val for o in options})
    return pipeline


@contextlib.contextmanager
def fast_recompile() -> Iterator[None]:
    """Within: coremltools' compression re-compiles with `recompile_pipeline()`, and each pipeline
    validates the program once, after its last pass."""
    import coremltools.models.utils as ct_utils
    from coremltools.converters.mil.mil import Program
    from coremltools.converters.mil.mil.passes.pass_pipeline import PassPipelineManager

    apply = PassPipelineManager.apply_pipeline

    def validated_once(prog: Any, pipeline: Any) -> None:
        with mock.patch.object(Program, "validate", lambda *_, **__: None):
            apply(prog, pipeline)
        # as apply_pipeline does after dead-code elimination (its checks of scope information)
        prog.validate(check_essential_scope="common::dead_code_elimination" in pipeline.passes)

    convert = functools.partial(ct_utils._mil_convert, pass_pipeline=recompile_pipeline())
    with (
        mock.patch.object(ct_utils, "_mil_convert", convert),
        mock.patch.object(PassPipelineManager, "apply_pipeline", staticmethod(validated_once)),
    ):
        yield
