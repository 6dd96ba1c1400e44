"""int8 on trained models, gated on held-out images (parity/gate.py), through the CLI.

The fixtures (mvit2_export/fixture.py): a classifier at width 0.5, 128 px (58% held-out accuracy, 10
photo classes) and a DeepLabV3 segmenter on photo mosaics, trained once and cached under
~/.cache/mvit2-export. Training on a CPU is not bit-reproducible across hosts, so each host has slightly
different weights: the tests assert what must hold on any of them. The gate's built-in images are crops
of the right 30% of the photos; calibration uses the left 70%. Whether the gate generalises is tested on a
second, independent held-out set the export never saw.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch import nn

from mvit2_export import load_model
from mvit2_export.cli.main import main
from mvit2_export.data.crops import HELDOUT_BAND, band_crops, load_photos
from mvit2_export.exporters import get_exporter
from mvit2_export.exporters.coreml.compress import ALL_W8A8 as COREML_ALL_W8A8
from mvit2_export.exporters.executorch.exporter import XNNPACK_RECIPE
from mvit2_export.exporters.tflite.quantize import ALL_INT8 as TFLITE_ALL_INT8
from mvit2_export.fixture import SEGMENTATION, Recipe, trained_fixture
from mvit2_export.manifest import ArtifactEntry
from mvit2_export.parity.run import reference_outputs, run_parity

TARGETS = {
    "onnx": ("onnxruntime",),
    "tflite": ("litert_torch", "ai_edge_litert"),
    "executorch": ("executorch",),
    "coreml": ("coremltools",),
}
# Core ML's `int8` compresses weights only (activations stay fp16): int8 activations are `w8a8`.
PRECISION = {"coreml": "w8a8"}
PHOTO_NAMES = load_photos()[1]
# The tests that read the TFLite export share one worker under `pytest -n` (session fixtures are per
# worker: split, each worker would export it again).
TFLITE_EXPORT = pytest.mark.xdist_group("trained-tflite-int8")


@pytest.fixture(scope="session")
def trained_checkpoint() -> Path:
    return trained_fixture()


@pytest.fixture(scope="session")
def segmenter_checkpoint() -> Path:
    return trained_fixture(SEGMENTATION)


@pytest.fixture(scope="session")
def int8_export(trained_checkpoint, tmp_path_factory):
    """target -> (CLI exit code, out dir, the int8 manifest entry, or the manifest's `failed` record when
    the gate refused every configuration); one export per target per session."""
    cache: dict[str, tuple[int, Path, dict[str, Any]]] = {}

    def get(target: str) -> tuple[int, Path, dict[str, Any]]:
        if target not in cache:
            out = tmp_path_factory.mktemp(f"int8-trained-{target}") / "out"
            size = str(Recipe().image_size)
            precision = PRECISION.get(target, "int8")
            args = ["--target", target, "--checkpoint", str(trained_checkpoint), "--precision", precision]
            code = main([*args, "--image-size", size, "--out", str(out)])
            manifest = json.loads((out / "manifest.json").read_text())
            (entry,) = manifest["artifacts"] or manifest["failed"]
            cache[target] = (code, out, entry)
        return cache[target]

    return get


def exported(int8_export, target: str) -> tuple[int, Path, dict[str, Any]]:
    """The int8 export of `target`. When the gate refused it, the refusal must be the documented one (exit
    5, no int8 file, every configuration tried named, the best within 1 point of the gate), and the test
    is an expected failure. Measured 2026-12-07 on a fixture trained on an AVX2-only host, under the
    95% lower bound (parity/gate.py): ExecuTorch's convolutions-only recipe reached 0.990 on the first
    512 crops in the runtime, refused; ONNX, TFLite and Core ML W8A8 met it on their convolutions-only
    recipes with 6 of 12 groups float. Training is not bit-reproducible across hosts,
    and the fixture's low-margin decisions flip under int8 noise (issue 14)."""
    code, out, entry = int8_export(target)
    if "parity" in entry:
        return code, out, entry
    tried = [float(a) for a in re.findall(r"float: (\d\.\d+)", entry["message"])]
    assert code == 5 and entry["error_type"] == "GateNotMetError" and tried, entry
    assert not [p for p in out.iterdir() if "int8" in p.name], "a refused int8 left a file"
    assert max(tried) >= 0.98, f"int8 is far from the gate on every configuration: {entry['message']}"
    pytest.xfail(f"{target}: the gate refused int8 on this host's fixture (best agreement {max(tried)})")


@pytest.mark.long
@pytest.mark.parametrize(
    "target", [pytest.param(t, marks=[TFLITE_EXPORT] if t == "tflite" else []) for t in sorted(TARGETS)]
)
def test_int8_holds_the_held_out_gate_and_generalises(
    int8_export, trained_checkpoint, target, record_property
):
    """Default gate: top-1 agreement >= 0.99 with the reference on each half of 1000 held-out crops and as
    its 95% lower confidence bound (at most 4 of the 1000 disagree); when all-int8
    misses it the exporter keeps the most sensitive layer groups float. The artifact written then agrees on
    1000 further crops it was never gated on (>= 0.98, else an expected failure down to 0.96: see below).
    A target the gate refuses on this host's fixture is an expected failure too (`exported`)."""
    for module in TARGETS[target]:
        pytest.importorskip(module)
    code, out, entry = exported(int8_export, target)
    assert code == 0, entry
    held = entry["parity"]["heldout"]
    record_property("heldout", held["agreement"])
    assert held["gated"] and held["n_images"] >= 1000 and held["lowest_half"] >= 0.99, held
    assert held["bound_applies"] and held["lower_bound"] >= 0.99, held  # at most 4 of 1000 disagree
    assert [h["n_images"] for h in held["halves"]] == [500, 500]
    assert "right 30%" in held["source"]
    search = entry["options"]["int8_search"]
    trials = search["trials"]
    chosen = trials[search["chosen"]]
    # the first configuration that meets the gate is the one kept; every earlier one missed it (where a
    # stand-in judged first, ExecuTorch's simulated int8, the chosen configuration's own stand-in trial
    # met it too); the kept one was judged on the artifact itself (off macOS, Core ML's saved program
    # run by the MIL interpreter)
    earlier = [t for t in trials[: search["chosen"]] if t["names"] != chosen["names"]]
    judges = ("artifact", "mil-reference") if target == "coreml" else ("artifact",)
    assert chosen["met"] and chosen["judge"] in judges and not any(t["met"] for t in earlier)
    assert search["chosen"] == len(trials) - 1
    # a second recipe (convolutions only) only after every configuration of the first missed
    first = [t for t in trials if not t.get("recipe")]
    assert not chosen.get("recipe") or (len(first) >= 2 and not any(t["met"] for t in first))
    if target == "executorch":
        assert entry["options"]["int8"]["recipe"] == (chosen.get("recipe") or XNNPACK_RECIPE)
        embedded = get_exporter(target).metadata(out / entry["path"])["export_options"]["int8"]
        assert embedded["recipe"] == entry["options"]["int8"]["recipe"]  # inspect shows the same
    if target == "tflite":
        assert entry["options"]["int8_recipe"] == (chosen.get("recipe") or TFLITE_ALL_INT8)
    if target == "coreml":
        assert entry["options"]["int8_recipe"] == (chosen.get("recipe") or COREML_ALL_W8A8)
    if target == "onnx":
        assert entry["options"]["int8"]["recipe"] == (chosen.get("recipe") or "every op of int8_op_types")
    fresh, _ = band_crops(Recipe().image_size, 1000, HELDOUT_BAND, seed=777)
    model = load_model(trained_checkpoint)
    ref = reference_outputs(model, fresh)[0].argmax(-1)
    runner = get_exporter(target).load_runner(out / entry["path"], ArtifactEntry.from_json(entry), 2)
    got = np.concatenate([runner.run(fresh[i : i + 50])[0] for i in range(0, 1000, 50)]).argmax(-1)
    fresh = float((got == ref).mean())
    record_property("fresh_heldout", fresh)
    # The crops are of 10 photos, so two crop sets are far from independent: measured on an AVX2 host's
    # fixture, TFLite met a pooled 500-crop gate at 0.992 and agreed 0.972 on 500 of these; judged per
    # half of 1000 it kept one more group float and agreed 0.990 on these 1000 (ONNX 0.994, Core ML
    # 0.993). Below 0.96 is a gate that does not generalise at all; between, reported as issue 14's gap.
    assert fresh >= 0.96, f"gated at {held['agreement']}, {fresh} on crops the export never saw"
    if fresh < 0.98:
        pytest.xfail(f"{target}: gated at {held['agreement']}, {fresh} on 1000 other crops (issue 14)")


def test_trained_segmenter_int8_pixel_agreement_on_held_out_mosaics(segmenter_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    code = main(["--target", "onnx", "--checkpoint", str(segmenter_checkpoint), "--precision", "int8",
                 "--out", str(out)])  # fmt: skip
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    held = entry["parity"]["heldout"]
    assert held["metric"] == "pixel_agreement" and held["gated"] and "mosaics" in held["source"]
    assert code == 0 and held["agreement"] >= 0.99, held
    # the 95% lower bound over the 96 mosaics as units (parity/gate.py), not over their pixels
    assert held["bound_applies"] and held["lower_bound"] >= 0.99, held


def test_validation_folder_gates_the_accuracy_drop(trained_checkpoint, tmp_path):
    """--validation-images: one subfolder per label name; accuracy against the labels is compared with
    the reference's, and a non-image file is skipped and counted, not a crash."""
    pytest.importorskip("onnxruntime")
    folder = labelled_folder(tmp_path / "val", 60)
    (folder / PHOTO_NAMES[0] / "notes.txt").write_text("not an image")
    (folder / PHOTO_NAMES[1] / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    code = main(["--target", "onnx", "--checkpoint", str(trained_checkpoint), "--precision", "int8",
                 "--validation-images", str(folder), "--max-accuracy-drop", "0.05",
                 "--min-agreement", "0.95", "--out", str(out)])  # fmt: skip
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    held = entry["parity"]["heldout"]
    assert held["n_images"] == 60 and "2 unreadable" in held["source"]
    assert held["accuracy_reference"] is not None and held["accuracy"] is not None
    # judged per half (parity/gate.py): 30 alternating images each
    assert [h["n_images"] for h in held["halves"]] == [30, 30]
    each = [
        h["accuracy_reference"] - h["accuracy"] <= 0.05 + 1e-12 and h["agreement"] >= 0.95
        for h in held["halves"]
    ]
    assert entry["parity"]["passed"] == all(each)
    assert code == (0 if entry["parity"]["passed"] else 5)
    # check re-runs the same gate (the manifest records the folder and limits)
    assert main(["check", str(out)]) == code


def test_gate_that_cannot_be_met_writes_nothing(trained_checkpoint, tmp_path, capsys):
    """The trained backbone held to cosine 1.0 exactly: int8 never gets there, however many layer groups
    stay float (up to half); exit 5, the configurations tried are named, and no int8 file is left."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    code = main(["--target", "onnx", "--checkpoint", str(trained_checkpoint), "--task", "backbone",
                 "--precision", "int8", "--min-agreement", "1.0", "--heldout-count", "6",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 5 and "tried" in err and "no int8 artifact written" in err, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"] == [] and manifest["failed"][0]["error_type"] == "GateNotMetError"
    assert not list(out.glob("*.onnx"))


@pytest.mark.parametrize(
    "case, expect",
    [
        ("unknown-label", "are not labels of the checkpoint"),
        ("empty", "no label subfolders"),
        ("no-images", "no readable images"),
        ("backbone", "needs labels"),
    ],
)
def test_bad_validation_folders_are_one_line_usage_errors(case, expect, trained_checkpoint, tmp_path, capsys):
    folder = tmp_path / "val"
    folder.mkdir()
    args = ["--target", "onnx", "--checkpoint", str(trained_checkpoint), "--precision", "int8"]
    if case == "unknown-label":
        (folder / "not-a-label").mkdir()
    elif case == "no-images":
        (folder / PHOTO_NAMES[0]).mkdir()
        (folder / PHOTO_NAMES[0] / "readme.md").write_text("x")
    elif case == "backbone":
        labelled_folder(folder, 4)
        args += ["--task", "backbone"]
    code = main([*args, "--validation-images", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expect in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def labelled_folder(folder: Path, n: int) -> Path:
    """n held-out crops saved as JPEGs under <photo name>/ (the fixture's labels)."""
    images, labels = band_crops(Recipe().image_size, n, HELDOUT_BAND, seed=4242)
    for i, (im, label) in enumerate(zip(images, labels, strict=True)):
        sub = folder / PHOTO_NAMES[label]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(sub / f"{i}.jpg", quality=95)
    return folder


@TFLITE_EXPORT
def test_tflite_int8_keeps_every_normalisation_statistics_chain_float(int8_export, trained_checkpoint):
    """(x - mean)^2 -> mean -> + eps -> rsqrt -> x * rsqrt stays float in each GroupNorm: five ops each,
    found by graph structure, so a layout change that hides the pattern shows up here."""
    for module in TARGETS["tflite"]:
        pytest.importorskip(module)
    _, _, entry = exported(int8_export, "tflite")
    norms = sum(isinstance(m, nn.GroupNorm) for m in load_model(trained_checkpoint).modules())
    assert norms > 0 and entry["options"]["float_normalisation_ops"] == 5 * norms


@TFLITE_EXPORT
def test_tflite_int8_reference_kernels_agree_with_xnnpack(int8_export, trained_checkpoint):
    """XNNPACK off: the builtin reference kernels are an independent implementation, so a quantized op
    that only one runtime computes correctly (int8 SUM/MEAN in this graph) fails here or above."""
    for module in TARGETS["tflite"]:
        pytest.importorskip(module)
    _, out, entry = exported(int8_export, "tflite")
    runner = get_exporter("tflite").load_runner(
        out / entry["path"], ArtifactEntry.from_json(entry), 2, kernels="reference"
    )
    report = run_parity(load_model(trained_checkpoint), runner, "int8", Recipe().image_size)
    xnnpack = entry["parity"]["metrics"]["logits"]
    ref_kernels = report.metrics["logits"]
    assert report.gated and ref_kernels["cosine"] >= 0.99, report.failures()
    # the two kernel sets compute the same int8 graph: their agreement with PyTorch is within one image
    assert abs(ref_kernels["top1"] - xnnpack["top1"]) <= 1 / report.n_inputs + 1e-9
