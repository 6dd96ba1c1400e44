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
from mvit2_export.manifest import Manifest, write_manifest

ANSI = re.compile(r"\x1b\[")
SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏━")  # rich's default spinner frames and bar


def noisy(text: str) -> bool:
    return bool(ANSI.search(text)) or bool(SPINNER & set(text))


@pytest.fixture
def empty_out(tmp_path):
    model = resolve_model(None, "classification", 0.5)
    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out, Manifest(model=model_summary(model, 64)))
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


def test_export_reports_events_per_job_and_step_from_every_lane(tmp_path):
    """The events the CLI's bar and benchmarks/bench_all.py consume: each artifact's export, the steps
    inside it (trace and rewrites once per model and target, then each backend's own), its parity check,
    from the lane it ran in, with the elapsed time; then "done" with done == total."""
    from mvit2_export import export
    from mvit2_export.exporters import available_targets
    from mvit2_export.progress import ProgressEvent

    targets = [t for t in ("onnx", "tflite") if t in available_targets()]
    if len(targets) < 2:
        pytest.skip("needs onnx and tflite for two lanes")
    events: list[ProgressEvent] = []
    export(
        None,
        ",".join(targets),
        tmp_path / "out",
        "fp32,fp16",
        width=0.5,
        image_size=64,
        progress=events.append,
        workers=2,
    )
    assert events[-1].kind == "done" and events[-1].done == events[-1].total == 4
    assert {e.lane for e in events if e.kind == "export"} == {0, 1}  # both lanes heard from
    for target in targets:
        mine = [e for e in events if e.target == target]
        assert [e.kind for e in mine if e.kind != "step"] == ["export", "parity", "export", "parity"]
        steps = [e.step for e in mine if e.kind == "step"]
        assert steps.count("torch.export trace") == 1 and steps.count("rewrite pipeline") == 1  # shared
        assert "fp16 conversion" in steps and "sha256" in steps
        assert len({e.lane for e in mine}) == 1  # one target's jobs stay in one lane
    assert "dynamo ONNX exporter" in {e.step for e in events} and "litert-torch conversion" in {
        e.step for e in events
    }
    elapsed = [e.elapsed for e in events]
    assert elapsed[0] >= 0 and elapsed[-1] == max(elapsed)


def test_a_listener_gets_events_and_the_older_three_argument_form_gets_text():
    from mvit2_export.progress import ProgressEvent, as_listener

    event = ProgressEvent("export", "exporting onnx fp32 -> m.onnx", 0, 2)
    heard: list = []

    def bar(event, done=None, total=None):  # the CLI's bar: an event listener that also takes text
        heard.append(event)

    as_listener(bar)(event)
    as_listener(heard.append)(event)
    as_listener(lambda step, done, total: heard.append((step, done, total)))(event)
    as_listener(lambda *args: heard.append(args))(event)
    assert heard == [event, event, (event.step, 0, 2), (event.step, 0, 2)]
