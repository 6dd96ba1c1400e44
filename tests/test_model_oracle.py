"""Our reference model against transformers' MobileViTV2 (the oracle), loaded from save_pretrained folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvit2_export import load_model
from mvit2_export.model import Preprocessor
from tests.conftest import hf_forward

ATOL = 1e-5


def outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, tuple) else (out,)


def assert_same(ours, theirs):
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert b.abs().max() > 1e-3, "oracle output is trivially small: weights are not doing anything"
        assert (a - b).abs().max().item() <= ATOL


@pytest.mark.parametrize("task", ["classification", "segmentation", "backbone"])
@pytest.mark.parametrize("width", [0.5, 1.0, 2.0])
def test_random_inputs_match_transformers(hf_checkpoint, task, width):
    size = 64 if task != "segmentation" else 128
    folder, hf = hf_checkpoint(task, width_multiplier=width, image_size=size)
    model = load_model(folder)
    assert model.task == task  # from config.json's architectures
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    assert_same(outputs(model, x), hf_forward(hf, x))


@pytest.mark.parametrize(
    ("task", "size", "extra"),
    [
        ("classification", 256, {}),
        ("classification", 384, {}),
        ("segmentation", 512, {"output_stride": 16}),
        ("segmentation", 256, {"output_stride": 8}),
        ("backbone", 320, {}),
    ],
)
def test_other_input_sizes(hf_checkpoint, task, size, extra):
    folder, hf = hf_checkpoint(task, image_size=size, **extra)
    model = load_model(folder)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    assert_same(outputs(model, x), hf_forward(hf, x))


@pytest.mark.slow
def test_full_size_width_1_on_real_photos(hf_checkpoint, photos):
    """Width 1.0 at 256 on real photos, preprocessed by transformers' own image processor."""
    transformers = pytest.importorskip("transformers")
    folder, hf = hf_checkpoint("classification", width_multiplier=1.0, image_size=256, num_labels=1000)
    model = load_model(folder)
    processor = transformers.MobileViTImageProcessor(
        size={"shortest_edge": 288}, crop_size={"height": 256, "width": 256}, resample=2
    )
    x = processor(images=list(photos.values()), return_tensors="pt")["pixel_values"]
    mine = torch.from_numpy(Preprocessor.from_dict(processor.to_dict()).batch(list(photos.values())))
    assert (mine - x).abs().max().item() <= 1e-6
    ours, theirs = outputs(model, mine)[0], hf_forward(hf, x)  # our pipeline end to end vs theirs
    assert (ours - theirs).abs().max().item() <= ATOL
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_loading_a_head_checkpoint_as_backbone(hf_checkpoint):
    folder, hf = hf_checkpoint("classification")
    backbone = load_model(folder, task="backbone")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        theirs = hf.mobilevitv2(pixel_values=x)
    ours = outputs(backbone, x)
    assert_same(ours, (theirs.last_hidden_state, theirs.pooler_output))


def test_pytorch_model_bin_loads_with_weights_only(hf_checkpoint, tmp_path):
    folder, hf = hf_checkpoint("classification")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    model = load_model(tmp_path)
    x = torch.rand(1, 3, 64, 64)
    assert_same(outputs(model, x), hf_forward(hf, x))
    assert model.checkpoint.weights_file == "pytorch_model.bin"
    assert len(model.checkpoint.sha256) == 64 and not model.checkpoint.untrained


def test_embedded_default_is_untrained_and_deterministic():
    a, b = load_model(), load_model()
    assert a.checkpoint.untrained and a.checkpoint.source == "embedded-default"
    assert a.config.width_multiplier == 1.0 and a.config.image_size == 256 and a.config.num_labels == 1000
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("size", [(256, 256), (300, 200), (200, 300), (180, 180)])
def test_preprocessing_matches_transformers_processor(photos, size):
    """Ours vs transformers' MobileViTImageProcessor on real photos, to 1e-6 (including padding crops)."""
    transformers = pytest.importorskip("transformers")
    shortest, crop = size[0] + 32, size
    processor = transformers.MobileViTImageProcessor(
        size={"shortest_edge": shortest}, crop_size={"height": crop[0], "width": crop[1]}, resample=2
    )
    ours = Preprocessor.from_dict(processor.to_dict())
    for name, img in photos.items():
        theirs = processor(images=img, return_tensors="np")["pixel_values"][0]
        mine = ours(img)
        assert mine.shape == theirs.shape, name
        np.testing.assert_allclose(mine, theirs, atol=1e-6, err_msg=name)
    # BGR: channel 0 of ours is the blue channel of the photo
    assert ours(photos["astronaut"])[0].mean() != ours(photos["astronaut"])[2].mean()


def test_preprocessor_config_json_is_read(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        '{"size": {"shortest_edge": 300}, "crop_size": {"height": 256, "width": 256}, "do_flip_channel_order": false}'
    )
    pre = Preprocessor.from_pretrained(tmp_path)
    assert pre.shortest_edge == 300 and not pre.do_flip_channel_order
