"""`check --localize` on .tflite artifacts: LiteRT's preserved tensors matched to PyTorch's by value.

One conversion (width 0.5, 64 px, ~1 min on two cores) for the module. A copy of the artifact with one
mid-network conv's weights perturbed in the flatbuffer is listed next to it in the manifest (with its
sha256), so a single `check --localize` checks both: the clean one has no divergent op, the corrupted one
fails parity and localization names the corrupted conv or the op right after it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from mvit2_export.api import export  # noqa: E402
from mvit2_export.cli.main import main  # noqa: E402
from mvit2_export.errors import ParityError  # noqa: E402
from mvit2_export.exporters.tflite.flatbuffer import _builtin_names  # noqa: E402
from mvit2_export.manifest import sha256_path, write_manifest  # noqa: E402


def corrupt_middle_conv(src, dest) -> tuple[int, set[int]]:
    """Add noise to the weights of the middle CONV_2D; returns its op index and its consumers' indices."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    graph = model.subgraphs[0]
    names = _builtin_names()
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    convs = [i for i, op in enumerate(graph.operators) if names[codes[op.opcodeIndex]] == "CONV_2D"]
    k = convs[len(convs) // 2]
    weight = graph.tensors[graph.operators[k].inputs[1]]
    buf = model.buffers[weight.buffer]
    w = np.frombuffer(bytes(buf.data), dtype=np.float32).copy()
    rng = np.random.default_rng(0)
    w += rng.standard_normal(w.shape).astype(np.float32) * w.std()
    buf.data = np.frombuffer(w.tobytes(), dtype=np.uint8)
    dest.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    out = graph.operators[k].outputs[0]
    consumers = {i for i, op in enumerate(graph.operators) if out in list(op.inputs)}
    return k, consumers


@pytest.fixture(scope="module")
def out_with_corrupted_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite-localize") / "out"
    steps: list[tuple] = []
    manifest = export(
        None,
        "tflite",
        out,
        "fp32",
        width=0.5,
        image_size=64,
        check=False,
        progress=lambda *a: steps.append(a),
    )
    entry = manifest.artifacts[0]
    bad = dataclasses.replace(entry, path="corrupted.tflite")
    k, consumers = corrupt_middle_conv(out / entry.path, out / bad.path)
    bad.sha256 = sha256_path(out / bad.path)
    manifest.artifacts.append(bad)
    write_manifest(out, manifest)
    return out, k, consumers, entry.path, steps


def test_export_reports_its_steps(out_with_corrupted_copy):
    *_, name, steps = out_with_corrupted_copy
    # A (step, done, total) callback hears every event: the job, the steps inside it, then done.
    assert steps[0] == (f"exporting tflite fp32 -> {name}", 0, 1) and steps[-1] == ("done", 1, 1)
    inside = [s for s, *_ in steps[1:-1]]
    assert inside[:2] == ["torch.export trace", "rewrite pipeline"] and "litert-torch conversion" in inside


def test_localize_names_the_corrupted_conv_and_nothing_in_a_clean_model(out_with_corrupted_copy, capsys):
    out, k, consumers, *_ = out_with_corrupted_copy
    assert main(["check", str(out), "--localize", "--json"]) == ParityError.exit_code
    clean, bad = json.loads(capsys.readouterr().out)

    assert clean["passed"] and not bad["passed"]
    loc = clean["localization"]
    assert loc["first_divergent"] is None and loc["tolerance"] == 1e-4
    assert loc["compared"] >= 50, "most op outputs should match a reference value"
    assert max(op["rel_err"] for op in loc["ops"]) <= 1e-4
    # ops without a reference counterpart (the LOGISTIC of a SiLU split in two) are set aside, not blamed
    assert all(name.split("#")[0] != "CONV_2D" for name in loc["unmatched"])

    blamed = bad["localization"]["first_divergent"]
    assert blamed is not None, bad["detail"]
    index = int(blamed["name"].split("#")[1].split(":")[0])
    assert index in {k} | consumers, (blamed, k, consumers)
    assert blamed["rel_err"] > 1e-2
    # every op before the corrupted one still matches its reference value
    before = [op for op in bad["localization"]["ops"] if int(op["name"].split("#")[1].split(":")[0]) < k]
    assert before and all(op["rel_err"] <= 1e-4 for op in before)
    assert f"first divergent op: {blamed['name']}" in bad["detail"]
