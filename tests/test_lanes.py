"""Parallel export lanes: the plan, and results and errors across processes (a real two-target export
is in test_end_to_end.py)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

import mvit2_export
from mvit2_export.errors import ExportError, UsageError
from mvit2_export.exporters import exporter_class
from mvit2_export.lanes import plan_lanes, resolve_lanes, run_lanes


def test_plan_keeps_each_target_in_one_lane_and_balances():
    targets = ["onnx", "onnx", "coreml", "coreml", "tflite", "tflite"]
    cost = {t: exporter_class(t).cost for t in targets}  # as each exporter declares it
    plan = plan_lanes(targets, 2, cost)
    assert sorted(i for lane in plan for i in lane) == list(range(6))
    for t in set(targets):  # one target's precisions share one process (and its cached conversion)
        assert sum(any(targets[i] == t for i in lane) for lane in plan) == 1
    assert [4, 5] in plan  # the costliest group (tflite) alone, the two others share a lane
    assert sorted(plan_lanes(targets, 8, cost)) == [[0, 1], [2, 3], [4, 5]]  # at most one lane per target
    assert plan_lanes(targets, 1, cost) == [list(range(6))]


def test_lane_count():
    assert resolve_lanes(1, ["onnx", "tflite"]) == 1
    assert resolve_lanes(4, ["onnx", "onnx"]) == 1  # one target: nothing to run side by side
    assert 1 <= resolve_lanes(None, ["onnx", "coreml", "tflite"]) <= 3
    with pytest.raises(UsageError, match="--jobs"):
        resolve_lanes(0, ["onnx"])


def _job(state, index, say):  # module level: workers import it by name
    say(f"job {index}")
    if index == state["fail"]:
        raise ExportError(f"job {index} cannot be converted")
    return os.getpid(), index * index


def test_results_come_back_from_the_worker_lane():
    steps: list[str] = []
    got = dict(run_lanes([[0, 2], [1]], _job, {"fail": -1}, lambda _lane, m: steps.append(m)))
    assert {i: sq for i, (_, sq) in got.items()} == {0: 0, 1: 1, 2: 4}
    assert got[1][0] != os.getpid() and got[0][0] == got[2][0] == os.getpid()
    assert any("job 0" in s for s in steps)


def test_a_worker_error_is_raised_here_with_its_type_and_message():
    with pytest.raises(ExportError, match="job 1 cannot be converted"):
        list(run_lanes([[0], [1]], _job, {"fail": 1}))


def test_a_worker_that_dies_starting_fails_the_run_instead_of_hanging_it(tmp_path):
    # A script without a main guard: the spawned worker re-runs it, and dies at its own spawn before
    # reading its start-up arguments. With the state in those arguments (larger than a pipe's buffer)
    # this process waited forever to write them (measured: 0% CPU until killed).
    script = tmp_path / "no_guard.py"
    script.write_text(
        "from mvit2_export.lanes import run_lanes\n"
        "def job(state, index, say):\n"
        "    return index\n"
        "list(run_lanes([[0], [1]], job, bytes(1 << 20)))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "a worker process of the parallel export died" in proc.stderr
    assert "__name__ == '__main__'" in proc.stderr


def test_export_refuses_to_run_inside_a_starting_worker(monkeypatch, tmp_path):
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(UsageError, match="__name__ == '__main__'"):
        mvit2_export.export(None, "onnx,tflite", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the folder is touched
