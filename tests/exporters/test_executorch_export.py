"""ExecuTorch export of small models (width 0.5, 64 px): one XNNPACK delegate per program, parity in the
ExecuTorch runtime against our reference and transformers' model (the oracle), the Core ML delegate's
program through the MIL interpreter, and the bad inputs. Lowering takes ~15 s per program on two cores,
int8 ~2 min (its test is in the matrix: tests/test_matrix.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvit2_export import load_model
from mvit2_export.cli.main import main
from mvit2_export.data.images import parity_images
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.model.preprocess import images_to_pixel_values
from mvit2_export.parity.run import run_parity
from tests.conftest import hf_forward

pytest.importorskip("executorch")
from mvit2_export.exporters.executorch import ExecuTorchExporter  # noqa: E402
from mvit2_export.exporters.executorch.runner import MIL_RUNTIME  # noqa: E402

SIZE = 64
EXPORTER = ExecuTorchExporter()


@pytest.fixture(scope="module")
def exported(hf_checkpoint, tmp_path_factory):
    """(task, precision, embedded, backend) -> (hf model, our model, artifact), each exported once."""
    cache: dict[tuple, tuple] = {}

    def get(task: str, precision: str = "fp32", embedded: bool = False, backend: str = "xnnpack"):
        key = (task, precision, embedded, backend)
        if key not in cache:
            folder, hf = hf_checkpoint(task, image_size=SIZE)
            model = cache.setdefault(("model", task), load_model(folder))
            dest = tmp_path_factory.mktemp(f"et-{task}") / "model.pte"
            opts = ExportOptions(
                precision=precision,
                image_size=SIZE,
                embed_preprocessing=embedded,
                backend={"executorch_backend": backend},
            )
            cache[key] = (hf, model, EXPORTER.export(model, opts, dest))
        return cache[key]

    return get


def kernels(hist: dict[str, int]) -> dict[str, int]:
    """Ops left on ExecuTorch's portable kernels (outside every delegate)."""
    return {op: n for op, n in hist.items() if op.startswith("kernel:")}


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
def test_fp32_is_one_xnnpack_delegate_and_matches_transformers(exported, task):
    hf, model, art = exported(task)
    runner = EXPORTER.load_runner(art.path, art.to_entry())
    run_parity(model, runner, "fp32", SIZE).raise_if_failed(f"executorch fp32 {task}")
    images = parity_images(SIZE, n_photos=3, n_random=1)
    oracle = hf_forward(hf, torch.from_numpy(images_to_pixel_values(images)))
    oracle = oracle if isinstance(oracle, tuple) else (oracle,)
    for got, ref in zip(runner.run(images), oracle, strict=True):
        ref = ref.numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    # The whole program in one delegate: nothing on the portable kernels, no matmul in the attention.
    hist = EXPORTER.op_histogram(art.path)
    assert hist["delegate:XnnpackBackend"] == 1 and not kernels(hist), hist
    assert not set(hist) & EXPORTER.forbidden_ops
    assert hist["XNNConv2d"] > 20 and hist["XNNGlobalAvgPooling2d"] >= 42  # decoded from the delegate
    delegation = art.options["delegation"]
    assert delegation["delegate_pieces"] == 1 and delegation["not_delegated_compute"] == {}
    assert EXPORTER.static_audit(art.path) == []
    meta = EXPORTER.metadata(art.path)
    assert meta["task"] == task and meta["output_names"] == list(model.output_names)


def test_fp16_casts_only_at_the_ends(exported):
    _, model, art = exported("classification", "fp16")
    run_parity(model, EXPORTER.load_runner(art.path, art.to_entry()), "fp16", SIZE).raise_if_failed("fp16")
    hist = EXPORTER.op_histogram(art.path)
    assert hist["delegate:XnnpackBackend"] == 1
    assert kernels(hist) == {"kernel:dim_order_ops::_to_dim_order_copy": 2}  # fp32 in -> fp16 -> fp32 out


def test_embedded_preprocessing_takes_camera_pixels(exported):
    _, model, art = exported("classification", embedded=True)
    assert art.inputs[0].to_dict() == {
        "name": "images",
        "shape": [1, SIZE, SIZE, 3],
        "dtype": "uint8",
        "layout": "NHWC",
    }
    run_parity(model, EXPORTER.load_runner(art.path, art.to_entry()), "fp32", SIZE).raise_if_failed("uint8")
    assert kernels(EXPORTER.op_histogram(art.path)) == {"kernel:dim_order_ops::_to_dim_order_copy": 1}


def test_coreml_delegate_program_runs_in_the_mil_interpreter(exported):
    """The Core ML program the .pte carries computes the model (ExecuTorch's Core ML runtime needs Apple
    hardware: this proves the program, not the runtime's feeding of it)."""
    _, model, art = exported("classification", backend="coreml")
    hist = EXPORTER.op_histogram(art.path)
    assert hist == {"delegate:CoreMLBackend": 1}, hist
    runner = EXPORTER.load_runner(art.path, art.to_entry())
    assert runner.runtime == MIL_RUNTIME
    run_parity(model, runner, "fp32", SIZE).raise_if_failed("coreml delegate")


def test_bad_inputs_fail_in_one_line(exported, tmp_path, capsys):
    # Core ML delegate with int8: a usage error before anything is written.
    out = tmp_path / "out"
    code = main(["--target", "executorch", "--executorch-backend", "coreml", "--precision", "int8",
                 "--width", "0.5", "--image-size", "64", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not take int8" in err and len(err.splitlines()) == 1
    assert not out.exists()
    # A corrupt .pte: inspect says so in one line (exit 2); check of a tampered artifact exits 6.
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"\x00" * 64)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an ExecuTorch .pte" in err and len(err.splitlines()) == 1
    good = tmp_path / "good"
    assert main(["--target", "executorch", "--width", "0.5", "--image-size", "64", "--out", str(good)]) == 0
    (pte,) = good.glob("*.pte")
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["check", str(good)]) == 6
