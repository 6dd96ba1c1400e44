"""`bench --device android` end to end without a phone: a fake `adb` records its argv and replays a
recorded real benchmark_model output (tests/data/benchmark_model/) for the benchmark run.

The OUT directory is a schema-1 manifest with a .tflite file written here, not a real export: the fake
device never reads the model, and a tflite export takes about a minute on this shared machine.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from mvit2_export.cli.main import main
from mvit2_export.manifest import MANIFEST, Manifest, sha256_path, write_json_atomic, write_manifest

DATA = Path(__file__).resolve().parents[1] / "data" / "benchmark_model"

FAKE_ADB = """#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
if args == ["devices"]:
    print("List of devices attached")
    for d in filter(None, os.environ.get("FAKE_ADB_DEVICES", "").split(",")):
        print("\\t".join(d.split(":")))
    print()
    sys.exit(0)
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "push":
    if not Path(args[1]).is_file():
        print(f"adb: error: cannot stat '{{args[1]}}': No such file or directory")
        sys.exit(1)
    print(f"{{args[1]}}: 1 file pushed, 0 skipped.")
elif args[0] == "shell":
    cmd = args[1]
    if cmd == "getprop ro.product.model":
        print("Pixel 7")
    elif cmd == "getprop ro.build.version.release":
        print("14")
    elif "--graph=" in cmd:
        sys.stdout.write(Path(os.environ["FAKE_ADB_OUTPUT"]).read_text())
        sys.exit(int(os.environ.get("FAKE_ADB_RC", "0")))
    elif "--model_path=" in cmd:
        sys.stdout.write(Path(os.environ["FAKE_ET_OUTPUT"]).read_text())
else:
    sys.exit(1)
"""


@pytest.fixture
def out_dir(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_fp32.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(256)))
    (out / "model_fp32.onnx").write_bytes(b"not run on android")
    model = {"task": "classification", "width_multiplier": 0.5, "image_size": 64, "untrained": True}
    artifacts = [
        {"target": t, "precision": "fp32", "path": p, "sha256": sha256_path(out / p)}
        for t, p in (("tflite", "model_fp32.tflite"), ("onnx", "model_fp32.onnx"))
    ]
    # A schema-1 manifest (as the first releases wrote): still read by bench and check.
    write_json_atomic(out / MANIFEST, {"schema": 1, "model": model, "artifacts": artifacts})
    return out


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """Returns (adb path, function reading the recorded argv lists); one attached device by default."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R5CT1234:device")
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(DATA / "android_peak_memory.txt"))

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return adb, calls


def test_android_flow_pushes_runs_and_records(out_dir, fake_adb, capsys):
    adb, calls = fake_adb
    argv = ["bench", str(out_dir), "--device", "android", "--adb", str(adb), "--threads", "3", "--runs", "7"]
    assert main([*argv, "--warmup", "2"]) == 0
    log = calls()
    assert log[0] == ["devices"]
    assert [
        "-s",
        "R5CT1234",
        "push",
        str(out_dir / "model_fp32.tflite"),
        "/data/local/tmp/model_fp32.tflite",
    ] in log
    runs = [c for c in log if c[2:3] == ["shell"] and "--graph=" in c[3]]
    assert len(runs) == 1, "only the .tflite runs on the device"
    assert runs[0][3].split() == [
        "/data/local/tmp/benchmark_model",
        "--graph=/data/local/tmp/model_fp32.tflite",
        "--num_threads=3",
        "--num_runs=7",
        "--warmup_runs=2",
        "--use_xnnpack=true",
    ]
    assert ["-s", "R5CT1234", "shell", "rm -f /data/local/tmp/model_fp32.tflite"] in log
    assert not any(c[2:3] == ["push"] and "benchmark_model" in c[4] for c in log), (
        "no binary given: none pushed"
    )

    manifest = json.loads((out_dir / "manifest.json").read_text())
    tfl, onnx = manifest["artifacts"]
    r = tfl["device_latency"]["android"]
    assert (r["runtime"], r["device"], r["android_version"], r["serial"]) == (
        "android-benchmark_model",
        "Pixel 7",
        "14",
        "R5CT1234",
    )
    assert (r["threads"], r["delegate"]) == (3, "xnnpack")
    assert r["flags"] == ["--num_threads=3", "--num_runs=7", "--warmup_runs=2", "--use_xnnpack=true"]
    # the numbers of the recorded output, in microseconds
    assert (r["init_us"], r["warmup_avg_us"], r["inference_avg_us"]) == (855, 34825.1, 33209.4)
    assert (r["inference"]["std"], r["inference"]["min"], r["inference"]["max"]) == (450, 32641, 34005)
    assert r["memory_mb"] == {"kind": "peak", "init": 0.0, "overall": 12.8672}
    assert "device_latency" not in onnx

    report = (out_dir / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| `model_fp32.tflite` | Pixel 7"))
    assert "33.21 avg, std 0.45, min 32.64, max 34.01" in row and "xnnpack, 3 threads" in row
    assert "| init 0.9 | 12.9 |" in row
    out = capsys.readouterr().out
    assert "model_fp32.onnx: skipped" in out and "33.21 ms avg" in out


def test_host_binary_is_pushed_and_delegate_flags(out_dir, fake_adb, tmp_path):
    adb, calls = fake_adb
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF")
    argv = ["bench", str(out_dir), "--device", "android", "--adb", str(adb), "--delegate", "gpu"]
    assert main([*argv, "--benchmark-model", str(binary)]) == 0
    log = calls()
    push_bin = ["-s", "R5CT1234", "push", str(binary), "/data/local/tmp/benchmark_model"]
    chmod = ["-s", "R5CT1234", "shell", "chmod 755 /data/local/tmp/benchmark_model"]
    run = next(c for c in log if c[2:3] == ["shell"] and "--graph=" in c[3])
    assert log.index(push_bin) < log.index(chmod) < log.index(run)
    assert run[3].endswith("--use_gpu=true --use_xnnpack=false")


def test_serial_chooses_among_devices(out_dir, fake_adb, monkeypatch, capsys):
    adb, calls = fake_adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "emulator-5554:device,R5CT1234:device")
    argv = ["bench", str(out_dir), "--device", "android", "--adb", str(adb)]
    assert main(argv) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--serial" in err and "emulator-5554" in err
    assert main([*argv, "--serial", "emulator-5554"]) == 0
    assert all(c[1] == "emulator-5554" for c in calls() if c[0] == "-s")


def test_no_adb_on_path(out_dir, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["bench", str(out_dir), "--device", "android"]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: adb not found on PATH")


def test_no_device_attached(out_dir, fake_adb, monkeypatch, capsys):
    adb, calls = fake_adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    # adb found on PATH this time
    monkeypatch.setenv("PATH", f"{adb.parent}{os.pathsep}{os.environ['PATH']}")
    assert main(["bench", str(out_dir), "--device", "android"]) == 8
    err = capsys.readouterr().err
    assert err == "error: no Android device attached (`adb devices` lists none)\n"
    assert calls() == [["devices"]]
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R5CT1234:unauthorized")
    assert main(["bench", str(out_dir), "--device", "android"]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "R5CT1234 (unauthorized)" in err


def test_benchmark_model_failure_is_one_line(out_dir, fake_adb, monkeypatch, capsys):
    adb, _ = fake_adb
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(DATA / "failure_registration.txt"))
    assert main(["bench", str(out_dir), "--device", "android", "--adb", str(adb)]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "error: benchmark_model on model_fp32.tflite failed: Didn't find op for builtin opcode 'MUL'"
    )
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert "device_latency" not in manifest["artifacts"][0]
    # a non-zero exit status from the device is a failure even before the output is read
    monkeypatch.setenv("FAKE_ADB_RC", "1")
    assert main(["bench", str(out_dir), "--device", "android", "--adb", str(adb)]) == 8
    assert "(exit 1)" in capsys.readouterr().err


def test_android_options_need_device_android(out_dir, capsys):
    assert main(["bench", str(out_dir), "--delegate", "gpu"]) == 2
    assert "--delegate only apply to --device android" in capsys.readouterr().err


def test_out_without_tflite(out_dir, fake_adb, capsys):
    adb, calls = fake_adb
    manifest = json.loads((out_dir / "manifest.json").read_text())
    manifest["artifacts"] = manifest["artifacts"][1:]
    write_manifest(out_dir, Manifest.from_json(manifest))
    assert main(["bench", str(out_dir), "--device", "android", "--adb", str(adb)]) == 2
    assert "no artifact to run on Android" in capsys.readouterr().err
    assert calls() == []


def test_pte_runs_with_executor_runner_when_given(out_dir, fake_adb, monkeypatch, capsys):
    """A .pte runs with ExecuTorch's executor_runner only when the user passes one (the wheel has none)."""
    adb, calls = fake_adb
    monkeypatch.setenv("FAKE_ET_OUTPUT", str(DATA.parent / "executor_runner" / "handwritten_9_runs.txt"))
    (out_dir / "model_fp32.pte").write_bytes(b"\x00\x00\x00\x00ET12" + bytes(64))
    manifest = json.loads((out_dir / "manifest.json").read_text())
    entry = {"target": "executorch", "precision": "fp32", "path": "model_fp32.pte"}
    entry["sha256"] = sha256_path(out_dir / "model_fp32.pte")
    entry["options"] = {"delegate_backend": "xnnpack"}
    manifest["artifacts"].append(entry)
    write_manifest(out_dir, Manifest.from_json(manifest))
    argv = ["bench", str(out_dir), "--device", "android", "--adb", str(adb), "--threads", "3", "--runs", "7"]
    assert main([*argv, "--warmup", "2"]) == 0
    assert "model_fp32.pte: skipped" in capsys.readouterr().out  # no --executor-runner: not run
    runner = "/data/local/tmp/xnn_executor_runner"
    assert main([*argv, "--warmup", "2", "--executor-runner", runner]) == 0
    (run,) = [c for c in calls() if c[2:3] == ["shell"] and "--model_path=" in c[3]]
    assert run[3].split() == [
        runner,
        "--model_path=/data/local/tmp/model_fp32.pte",
        "--num_executions=9",
        "--cpu_threads=3",
    ]
    pte = json.loads((out_dir / "manifest.json").read_text())["artifacts"][-1]
    r = pte["device_latency"]["android"]
    assert (r["runtime"], r["delegate"], r["threads"]) == ("android-xnn_executor_runner", "xnnpack", 3)
    # 2 warm-up iterations dropped: the 7 timed ones of the log, in microseconds
    assert r["inference"]["count"] == 7 and r["inference"]["min"] == 21000 and r["inference"]["max"] == 23000
    assert abs(r["inference_avg_us"] - 22071.43) < 0.01 and r["init_us"] == 40215
    assert "model_fp32.pte: 22.07 ms avg" in capsys.readouterr().out
    # A Core ML-delegated .pte needs Apple hardware: skipped even with a runner.
    manifest = json.loads((out_dir / "manifest.json").read_text())
    manifest["artifacts"][-1]["options"] = {"delegate_backend": "coreml"}
    write_manifest(out_dir, Manifest.from_json(manifest))
    assert main([*argv, "--executor-runner", runner]) == 0
    assert "model_fp32.pte: skipped" in capsys.readouterr().out
