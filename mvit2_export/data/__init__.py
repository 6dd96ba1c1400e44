"""Bundled real photos (from scikit-image's public-domain/CC0 samples) for parity and calibration."""

from __future__ import annotations

from pathlib import Path

PHOTO_DIR = Path(__file__).parent / "photos"


def bundled_photos() -> list[Path]:
    return sorted(PHOTO_DIR.glob("*.jpg"))
