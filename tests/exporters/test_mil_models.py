"""Whole-model tests of the MIL interpreter: MobileViTV2 (random weights, width 0.5, 64x64) converted
from an ExportedProgram, saved, read back and compared to PyTorch; plus image inputs, classifier
outputs and compressed weights."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import torch.nn.functional as F  # noqa: E402
from transformers.models.mobilevitv2 import modeling_mobilevitv2 as mvit  # noqa: E402

from mvit2_export.errors import UsageError  # noqa: E402
from mvit2_export.exporters.coreml.mil import SUPPORTED_OPS, MilInterpreter  # noqa: E402

SIZE = 64


# -- minimal export-friendly patches (test-only; the real rewrites live elsewhere) -----------------


def _unfolding(self, feature_map):
    # nn.functional.unfold with kernel == stride == patch: [B, C*ph*pw, N], channel-major then
    # kernel position, exactly pixel_unshuffle's channel order.
    b, c, h, w = feature_map.shape
    patches = F.pixel_unshuffle(feature_map, self.patch_height)
    return patches.reshape(b, c, self.patch_height * self.patch_width, -1), (h, w)


def _folding(self, patches, output_size):
    b, c, p, _ = patches.shape
    h, w = output_size
    x = patches.reshape(b, c * p, h // self.patch_height, w // self.patch_width)
    return F.pixel_shuffle(x, self.patch_height)


def _attention_forward(self, hidden_states):
    qkv = self.qkv_proj(hidden_states)
    query, key, value = torch.split(qkv, [1, self.embed_dim, self.embed_dim], dim=1)
    scores = torch.softmax(query, dim=-1)
    context = (key * scores).sum(dim=-1, keepdim=True)
    return self.out_proj(F.relu(value) * context)  # plain broadcast instead of expand_as


@pytest.fixture(scope="module")
def patched():
    mp = pytest.MonkeyPatch()
    mp.setattr(mvit.MobileViTV2Layer, "unfolding", _unfolding)
    mp.setattr(mvit.MobileViTV2Layer, "folding", _folding)
    mp.setattr(mvit.MobileViTV2LinearSelfAttention, "forward", _attention_forward)
    yield
    mp.undo()


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """HF init zeroes some heads; give every weight and BN statistic non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def _build(kind: str) -> torch.nn.Module:
    cfg = mvit.MobileViTV2Config(width_multiplier=0.5, image_size=SIZE, num_labels=10)
    cls = mvit.MobileViTV2ForImageClassification if kind == "cls" else mvit.MobileViTV2ForSemanticSegmentation
    model = cls(cfg).eval()
    _randomize(model, seed=1 if kind == "cls" else 2)
    return _Logits(model).eval()


class Case:
    """One model: PyTorch wrapper, its ExportedProgram and a cache of saved conversions."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp = kind, tmp
        self.module = _build(kind)
        self.x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
        self.ep = torch.export.export(self.module, (self.x,)).run_decompositions({})
        self.paths: dict[str, Path] = {}
        self.seconds: dict[str, float] = {}

    def reference(self, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.module(x).numpy()

    def convert(self, variant: str) -> Path:
        if variant not in self.paths:
            if variant == "image":
                inp = ct.ImageType(
                    name="pixel_values", shape=self.x.shape, scale=1 / 255, color_layout=ct.colorlayout.BGR
                )
            else:
                inp = ct.TensorType(name="pixel_values", shape=self.x.shape)
            precision = ct.precision.FLOAT16 if variant == "fp16" else ct.precision.FLOAT32
            t0 = time.perf_counter()
            ml = ct.convert(
                self.ep,
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
                compute_precision=precision,
                inputs=[inp],
            )
            self.seconds[variant] = time.perf_counter() - t0
            path = self.tmp / f"{self.kind}_{variant}.mlpackage"
            ml.save(str(path))
            self.paths[variant] = path
        return self.paths[variant]


@pytest.fixture(scope="module")
def cases(patched, tmp_path_factory) -> dict[str, Case]:
    tmp = tmp_path_factory.mktemp("mil_models")
    return {"cls": Case("cls", tmp), "seg": Case("seg", tmp)}


def _rel_max_abs(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


def _cosine(out: np.ndarray, ref: np.ndarray) -> float:
    a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _only_output(outs: dict[str, np.ndarray]) -> np.ndarray:
    assert len(outs) == 1, outs.keys()
    return next(iter(outs.values()))


@pytest.mark.parametrize("kind", ["cls", "seg"])
def test_fp32_tensor_input_parity(cases, kind, record_property):
    case = cases[kind]
    interp = MilInterpreter.from_mlpackage(case.convert("fp32"))
    interp.check_supported()
    assert not interp.is_fp16
    hist = interp.op_histogram()
    assert hist["conv"] > 0 and hist["pixel_unshuffle"] == 3 and hist["pixel_shuffle"] == 3
    out = _only_output(interp.run({"pixel_values": case.x.numpy()}))
    ref = case.reference(case.x)
    assert out.shape == ref.shape and np.abs(ref).max() > 1e-3
    err = _rel_max_abs(out, ref)
    record_property("fp32_rel_max_abs", err)
    record_property("convert_seconds", case.seconds["fp32"])
    print(
        f"{kind} fp32: max|diff|/max|ref| = {err:.2e}, convert {case.seconds['fp32']:.1f}s, ops {dict(hist)}"
    )
    assert err <= 1e-4


# fp16 on the classifier only: each extra conversion costs several seconds on a 2-core runner, and the
# segmentation head adds no fp16-specific op (its upsample/concat are covered by the fp32 test).
@pytest.mark.parametrize("kind", ["cls"])
def test_fp16_parity(cases, kind, record_property):
    case = cases[kind]
    interp = MilInterpreter.from_mlpackage(case.convert("fp16"))
    assert interp.is_fp16
    outs, trace = interp.run({"pixel_values": case.x.numpy()}, trace=True)
    out = _only_output(outs)
    assert out.dtype == np.float16
    assert sum(v.dtype == np.float16 for v in trace.values()) > 0.9 * len(trace)
    cos = _cosine(out, case.reference(case.x))
    record_property("fp16_cosine", cos)
    print(f"{kind} fp16: cosine = {cos:.6f}")
    assert cos >= 0.999


def test_image_input_bgr(cases, record_property):
    case = cases["cls"]
    interp = MilInterpreter.from_mlpackage(case.convert("image"))
    assert interp.program.image_inputs["pixel_values"].channels == ("B", "G", "R")
    hist = interp.op_histogram()
    assert hist["mul"] >= 1  # the converter's scale=1/255 lands in the program as a mul
    rgb = np.random.default_rng(4).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    # Core ML reorders RGB pixels into BGR planes, then the program scales by 1/255.
    ref = case.reference(torch.from_numpy(rgb[:, :, ::-1].transpose(2, 0, 1).copy()).float()[None] / 255)
    out_hwc = _only_output(interp.run({"pixel_values": rgb}))
    out_nchw = _only_output(interp.run({"pixel_values": rgb.transpose(2, 0, 1)[None].astype(np.float32)}))
    np.testing.assert_array_equal(out_hwc, out_nchw)
    err = _rel_max_abs(out_hwc, ref)
    record_property("image_rel_max_abs", err)
    print(f"cls image BGR: max|diff|/max|ref| = {err:.2e}")
    assert err <= 1e-4


# -- classifier outputs, compression (small models keep these fast) --------------------------------


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.fc = torch.nn.Linear(32, 5)

    def forward(self, x):
        x = F.silu(self.conv2(F.silu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(5)
    net = _TinyNet().eval()
    x = torch.rand(1, 3, 16, 16)
    return net, x, torch.export.export(net, (x,)).run_decompositions({})


def test_classifier_outputs(tiny, tmp_path):
    net, x, ep = tiny
    labels = ["a", "b", "c", "d", "e"]
    ml = ct.convert(
        ep,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,
        inputs=[ct.ImageType(name="image", shape=x.shape, scale=1 / 255, color_layout=ct.colorlayout.RGB)],
        classifier_config=ct.ClassifierConfig(labels),
    )
    ml.save(str(tmp_path / "c.mlpackage"))
    interp = MilInterpreter.from_mlpackage(tmp_path / "c.mlpackage")
    assert interp.class_labels == labels
    pixels = (x.numpy() * 255).round()
    outs = interp.run({"image": pixels})
    with torch.no_grad():
        ref = net(torch.from_numpy(pixels) / 255).numpy()
    label_name, probs_name = interp.output_names
    assert str(outs[label_name]) == labels[int(ref.argmax())]
    np.testing.assert_allclose(outs[probs_name], ref[0], rtol=1e-4, atol=1e-5)
    # The underlying logits tensor feeding `classify` is returned too.
    extra = set(outs) - {label_name, probs_name}
    assert len(extra) == 1 and outs[extra.pop()].shape == ref.shape
    with pytest.raises(UsageError, match="image input 'image'"):
        interp.run({"image": np.zeros((16, 16), np.uint8)})  # grayscale pixels for an RGB model


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_compressed_weights(tiny, tmp_path, target):
    net, x, ep = tiny
    cto = ct.optimize.coreml
    ml = ct.convert(
        ep,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT32,
        inputs=[ct.TensorType(name="x", shape=x.shape)],
    )
    with torch.no_grad():
        ref = net(x).numpy()
    variants = {
        "int8": cto.linear_quantize_weights(
            ml,
            cto.OptimizationConfig(
                global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)
            ),
        ),
        "pal6": cto.palettize_weights(
            ml,
            cto.OptimizationConfig(
                global_config=cto.OpPalettizerConfig(nbits=6, mode="uniform", weight_threshold=0)
            ),
        ),
    }
    for name, compressed in variants.items():
        path = tmp_path / f"{name}.mlpackage"
        compressed.save(str(path))
        interp = MilInterpreter.from_mlpackage(path)
        hist = interp.op_histogram()
        assert any(t.startswith("constexpr_") for t in hist), hist
        assert set(hist) <= SUPPORTED_OPS
        out = interp.run({"x": x.numpy()})
        out = _only_output(out)
        print(
            f"{target} {name}: {sorted(t for t in hist if t.startswith('constexpr'))} cos={_cosine(out, ref):.6f}"
        )
        assert _cosine(out, ref) > 0.99
        # Exact decompression check: coremltools' own decompression, run through the interpreter.
        dpath = tmp_path / f"{name}_dec.mlpackage"
        cto.decompress_weights(compressed).save(str(dpath))
        dec = _only_output(MilInterpreter.from_mlpackage(dpath).run({"x": x.numpy()}))
        np.testing.assert_allclose(out, dec, rtol=1e-5, atol=1e-6)
