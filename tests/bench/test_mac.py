"""`bench --device mac` off macOS: a one-line error. (The macOS path itself cannot run on this Linux host.)"""

from __future__ import annotations

import sys

import pytest

from mvit2_export.cli.main import main


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the error given off macOS")
def test_mac_device_needs_macos(tmp_path, capsys):
    assert main(["bench", str(tmp_path), "--device", "mac"]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --device mac needs macOS")
