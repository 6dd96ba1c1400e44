"""Core ML W8A8 op selection, what the mixed-precision search (exporters/int8_search.py) asks of
coremltools.optimize: the ops it keeps float read neither quantized activations nor compressed weights in
the saved program, and the activation statistics (a pass of the MIL interpreter over the calibration
images) are computed once per float model, not once per configuration tried."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("coremltools")

from coremltools.optimize.coreml.experimental._model_debugger import ModelDebugger  # noqa: E402

from mvit2_export import load_model  # noqa: E402
from mvit2_export.data.images import calibration_images  # noqa: E402
from mvit2_export.exporters.base import ExportOptions  # noqa: E402
from mvit2_export.exporters.coreml import compress as compress_module  # noqa: E402
from mvit2_export.exporters.coreml.compress import TAIL, compress, quantizable_ops  # noqa: E402
from mvit2_export.exporters.coreml.convert import convert_model  # noqa: E402
from mvit2_export.exporters.coreml.settings import parse_settings  # noqa: E402

SIZE = 64
DEQUANTIZED = {"dequantize", "constexpr_affine_dequantize"}


def dequantized_inputs(mlmodel, names: set[str]) -> dict[str, list[str]]:
    """op name -> the op types of its inputs that come out of a dequantization, for the ops in `names`."""
    func = mlmodel._mil_program.functions["main"]
    out = {}
    for op in func.operations:
        if op.name in names:
            producers = [getattr(v, "op", None) for v in op.inputs.values()]
            out[op.name] = [p.op_type for p in producers if p is not None and p.op_type in DEQUANTIZED]
    return out


def test_float_ops_stay_float_and_statistics_are_computed_once(hf_checkpoint, monkeypatch):
    folder, _ = hf_checkpoint("classification", image_size=SIZE)
    model = load_model(folder)
    options = ExportOptions(precision="w8a8", image_size=SIZE, backend={"calibration_samples": 4})
    settings = parse_settings(options)
    mlmodel, _ = convert_model(model, settings, SIZE)
    calls = []
    real = compress_module._interpreter_stats
    monkeypatch.setattr(compress_module, "_interpreter_stats", lambda *a: calls.append(1) or real(*a))
    images = calibration_images(None, SIZE)
    ops = quantizable_ops(mlmodel)
    floats = set(ops[:6])
    stats: dict = {}
    everything, _ = compress(mlmodel, settings, lambda: images, False, [], stats)
    mixed, facts = compress(mlmodel, settings, lambda: images, False, sorted(floats), stats)
    assert len(calls) == 1 and stats["stats"]
    assert facts["compression"] == "w8a8"
    # all-W8A8 dequantizes into these ops; with them kept float nothing does, and the others still are
    assert any(dequantized_inputs(everything, floats).values())
    assert not any(dequantized_inputs(mixed, floats).values()), dequantized_inputs(mixed, floats)
    assert any(dequantized_inputs(mixed, set(ops[6:])).values())
    # weights too (coremltools' weight pass runs inside the activations' re-compile): every conv the
    # search did not keep float reads int8 weights when coremltools compresses them (over 2048 values, and
    # no float conv shares the const: the unfold rewrite's one-hot kernels are shared)
    program = mlmodel._mil_program.functions["main"].operations
    convs = [op for op in program if op.op_type == "conv" and op.weight.val.size > 2048]
    shared = {op.weight.op.name for op in convs if op.name in floats}
    quantized = {op.name for op in convs if op.name not in floats and op.weight.op.name not in shared}
    weights = dequantized_inputs(mixed, {op.name for op in convs})
    assert quantized and all("constexpr_affine_dequantize" in weights[c] for c in quantized), weights
    assert not any("constexpr_affine_dequantize" in weights[c] for c in floats & set(weights)), weights


def test_calibration_ranges_are_percentiles_of_every_sample_not_only_the_last(hf_checkpoint):
    """coremltools 9.0 keeps only the last sample's range (apple/coremltools#2704); ours are the 0.01st and
    99.99th percentiles of every value of every sample: the same in either order, and per tensor at most
    TAIL of the values of both images together fall outside, and no more than that is clipped."""
    folder, _ = hf_checkpoint("classification", image_size=SIZE)
    settings = parse_settings(ExportOptions(precision="w8a8", image_size=SIZE))
    mlmodel, _ = convert_model(load_model(folder), settings, SIZE)
    feeds = compress_module.calibration_feeds(calibration_images(None, SIZE)[:2], settings)
    both = compress_module._interpreter_stats(mlmodel, feeds)
    assert both == compress_module._interpreter_stats(mlmodel, feeds[::-1])
    values: dict[str, list[np.ndarray]] = {}
    for tensors in compress_module.calibration_tensors(mlmodel, feeds):
        for name, v in tensors.items():
            values.setdefault(name, []).append(v.ravel())
    concat_shared = {n for group in ModelDebugger(mlmodel)._get_concat_op_info() for n in group}
    checked = clipped = 0
    for name, parts in values.items():
        if name not in both or name in concat_shared:
            continue
        x = np.concatenate(parts)
        lo, hi = both[name]["rmin"], both[name]["rmax"]
        assert (x > hi).sum() <= TAIL * x.size and (x < lo).sum() <= TAIL * x.size, name
        assert hi >= np.percentile(x, 100 * (1 - 2 * TAIL)) and lo <= np.percentile(x, 100 * 2 * TAIL), name
        checked += 1
        clipped += bool(hi < x.max() or lo > x.min())
    assert checked > 100 and clipped > 10, (checked, clipped)  # large tensors are clipped, not min/max
    # a range from the last image alone would miss the other's extremes somewhere
    last = compress_module._interpreter_stats(mlmodel, feeds[1:])
    assert any(last[n] != both[n] for n in both)


def test_the_recorded_held_out_verdict_is_the_written_programs(hf_checkpoint, tmp_path):
    """The W8A8 export's held-out numbers come from the search (its chosen candidate, run by the runner
    parity loads), not from a second pass over the same images; the gate run afresh on the written file
    gives the same numbers."""
    import json

    from mvit2_export.cli.main import main
    from mvit2_export.exporters import get_exporter
    from mvit2_export.manifest import ArtifactEntry
    from mvit2_export.parity.gate import GateSpec, build_gate

    folder, _ = hf_checkpoint("classification", image_size=SIZE)
    out = tmp_path / "out"
    args = ["--target", "coreml", "--checkpoint", str(folder), "--precision", "w8a8", "--out", str(out)]
    assert main([*args, "--image-size", str(SIZE), "--heldout-count", "40"]) == 0
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    held, search = entry["parity"]["heldout"], entry["options"]["int8_search"]
    chosen = search["trials"][search["chosen"]]
    assert "judged by the int8 search" in held["note"] and held["n_images"] == 40
    assert (held["agreement"], held["lowest_half"]) == (chosen["agreement"], chosen["lowest_half"])
    runner = get_exporter("coreml").load_runner(out / entry["path"], ArtifactEntry.from_json(entry), 1)
    fresh = build_gate(load_model(folder), SIZE, GateSpec(count=40))(runner).to_dict()
    assert {k: fresh[k] for k in ("agreement", "halves", "met")} == {
        k: held[k] for k in ("agreement", "halves", "met")
    }
