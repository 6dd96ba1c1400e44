"""What a user sees in a terminal or a CI log: the command's own output, no library logs unless --verbose.

Run as a subprocess: the converters' C++ logs (absl, oneDNN, LiteRT's XNNPACK line) go to file descriptor
2 directly, which an in-process capture would not see.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mvit2_export.exporters import available_targets


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    return subprocess.run(
        [sys.executable, "-m", "mvit2_export.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


# ExecuTorch's int8 lowering takes minutes (tests/test_matrix.py): its own output is checked on fp32 below.
SLOW_INT8 = {"executorch"}


@pytest.mark.long
def test_export_and_check_print_only_their_own_output_unless_verbose(tmp_path):
    targets = [t for t in available_targets() if t not in SLOW_INT8]
    if "tflite" not in targets:
        pytest.skip("the loudest libraries (LiteRT, ai-edge-quantizer) are not installed")
    out = tmp_path / "out"
    # int8: calibration (quantizer progress bars), every converter, parity in every runtime, lanes.
    proc = _cli(
        "--target",
        ",".join(targets),
        "--precision",
        "int8",
        "--width",
        "0.5",
        "--image-size",
        "64",
        "--heldout-count",  # what is printed does not depend on it; the MIL interpreter's time does
        "24",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not a terminal: no progress bar either
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"wrote {out / 'manifest.json'} and report.md"
    for noise in ("XNNPACK", "Failed to load", "oneDNN", "absl", "Warning", "[START]", "it/s"):
        assert noise not in proc.stdout, noise

    quiet = _cli("check", str(out))
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.splitlines()[-1] == f"{len(targets)}/{len(targets)} passed"
    verbose = _cli("check", str(out), "--verbose")
    assert verbose.returncode == 0
    assert "XNNPACK" in verbose.stderr  # LiteRT's own log line: --verbose shows the libraries
    assert verbose.stdout.splitlines()[-1] == quiet.stdout.splitlines()[-1]


def test_help_and_errors_reach_the_user_under_the_quiet_streams():
    helped = _cli("--help")
    assert helped.returncode == 0 and "--precision" in helped.stdout and helped.stderr == ""
    bad = _cli("--target", "nope")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "unknown target" in bad.stderr


def test_executorch_prints_only_our_output(tmp_path):
    """executorch's runtime, torchao and coremltools log at import and load; none of it reaches the user."""
    if "executorch" not in available_targets():
        pytest.skip("executorch not installed")
    out = tmp_path / "out"
    proc = _cli("--target", "executorch", "--width", "0.5", "--image-size", "64", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for noise in ("cpuinfo", "Failed to load", "torchao", "Warning", "it/s"):
        assert noise not in proc.stdout, noise
    quiet = _cli("check", str(out))
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
