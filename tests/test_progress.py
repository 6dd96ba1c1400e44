"""Progress bars: step names on an interactive terminal, nothing at all in a pipe or a log.

The CLI runs `bench` on an OUT directory whose manifest lists no artifact (written by the API's own
helpers), so the command is real but takes a second: its one step is timing PyTorch.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from mvit2_export.api import model_summary, resolve_model
from mvit2_export.cli.main import main
from mvit2_export.cli.progress import progress
from mvit2_export.manifest import SCHEMA, write_manifest

ANSI = re.compile(r"\x1b\[")
SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏━")  # rich's default spinner frames and bar


def noisy(text: str) -> bool:
    return bool(ANSI.search(text)) or bool(SPINNER & set(text))


@pytest.fixture
def empty_out(tmp_path):
    model = resolve_model(None, "classification", 0.5)
    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out, {"schema": SCHEMA, "model": model_summary(model, 64), "artifacts": []})
    return out


@pytest.fixture
def no_forcing(monkeypatch):
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def test_helper_draws_steps_on_a_terminal_and_nothing_elsewhere():
    tty, pipe = io.StringIO(), io.StringIO()
    for file, force in ((tty, True), (pipe, None)):
        with progress(Console(file=file, force_terminal=force, width=100)) as say:
            say("exporting onnx fp32", 0, 2)
            say("checking parity", 1, 2)
    assert "checking parity" in tty.getvalue() and "1/2" in tty.getvalue() and noisy(tty.getvalue())
    assert pipe.getvalue() == ""


def test_cli_prints_no_progress_noise_when_not_a_terminal(empty_out, capsys, no_forcing):
    assert main(["bench", str(empty_out), "--warmup", "0", "--runs", "1", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "pytorch eager:" in out
    assert not noisy(out) and not noisy(err), (out, err)
    assert "timing" not in out + err


def test_cli_shows_step_names_on_a_forced_terminal(empty_out, capsys, no_forcing, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # what a terminal emulator without a tty would set
    monkeypatch.setenv("TERM", "xterm-256color")
    assert main(["bench", str(empty_out), "--warmup", "0", "--runs", "1", "--threads", "1"]) == 0
    _, err = capsys.readouterr()
    assert "timing pytorch eager" in err and noisy(err)
