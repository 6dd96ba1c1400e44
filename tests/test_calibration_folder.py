"""A user's calibration folder: non-image and unreadable files are skipped and counted in the manifest
and report; a folder with no readable image is a one-line usage error before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest

from mvit2_export import export
from mvit2_export.cli.main import main
from mvit2_export.data import bundled_photos
from mvit2_export.data.images import describe_calibration, read_calibration
from mvit2_export.errors import UsageError


@pytest.fixture
def folder(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for photo in bundled_photos()[:3]:
        shutil.copy(photo, calib / photo.name)
    (calib / "notes.txt").write_text("not an image")
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    return calib


def test_skipped_files_are_counted(folder):
    images, skipped = read_calibration(folder, 64)
    assert images.shape == (3, 64, 64, 3) and skipped == 2
    assert describe_calibration(folder, 64) == {"source": str(folder), "images": 3, "skipped_files": 2}
    assert read_calibration(folder, 64, limit=2)[0].shape[0] == 2  # the first `limit` readable ones


def test_manifest_and_report_state_the_skipped_files(folder, tmp_path):
    out = tmp_path / "out"
    export(None, "onnx", out, "int8", width=0.5, image_size=64, check=False, calibration_images=folder)
    recorded = json.loads((out / "manifest.json").read_text())["model"]["int8_calibration"]
    assert recorded == {"source": str(folder), "images": 3, "skipped_files": 2}
    assert "3 used, 2 file(s) skipped" in (out / "report.md").read_text()


def test_no_readable_image_is_a_usage_error_before_anything_is_written(tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    args = ["--target", "onnx", "--precision", "int8", "--width", "0.5", "--image-size", "64"]
    assert main([*args, "--calibration-images", str(calib), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no readable images for calibration" in err
    assert not out.exists()
    with pytest.raises(UsageError, match="must be a directory"):
        read_calibration(calib / "broken.png", 64)
