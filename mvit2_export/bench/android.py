"""`mvit2-export bench OUT --device android`: every .tflite through TensorFlow Lite's `benchmark_model`
on a phone, over adb.

Per artifact: `adb push` it to /data/local/tmp, run `benchmark_model --graph=.. --num_threads=..
--num_runs=.. --warmup_runs=..` with one delegate chosen (XNNPACK, GPU, NNAPI or none: one at a time, so
a number belongs to one delegate; ops it does not take run on the built-in kernels), parse its output
(`benchmark_model_output.py`) into `entry.device_latency["android"]` and the report. The binary is
either already on the device (a device path, /data/local/tmp/benchmark_model by default) or pushed from
a host path. adb missing, no device, or a failed run raise DeviceError (one line, exit 8).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeviceError, UsageError
from ..exporters import exporter_class, targets_for_device
from ..manifest import Manifest, read_manifest, verify_artifact, write_manifest
from ..report import write_report
from .benchmark_model_output import failure_reason, parse_benchmark_model_output

RUNTIME = "android-benchmark_model"
DEVICE_DIR = "/data/local/tmp"
DEFAULT_BINARY = f"{DEVICE_DIR}/benchmark_model"
DELEGATES = ("xnnpack", "gpu", "nnapi", "none")
ADB_TIMEOUT_S = 120
RUN_TIMEOUT_S = 1800  # a large model with many runs on a slow phone

# XNNPACK is on by default in recent builds; turned off for the other choices so it cannot take the graph.
DELEGATE_FLAGS = {
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true", "--use_xnnpack=false"],
    "nnapi": ["--use_nnapi=true", "--use_xnnpack=false"],
    "none": ["--use_xnnpack=false"],
}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def find_adb(adb: str | None) -> str:
    exe = adb or shutil.which("adb")
    if exe is None:
        raise DeviceError("adb not found on PATH: install Android platform-tools or pass --adb PATH")
    if shutil.which(exe) is None:  # also catches a path that exists but is not executable
        raise DeviceError(f"--adb {exe}: not an executable file")
    return exe


def _call(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"{what}: no answer within {timeout:.0f} s") from exc
    except OSError as exc:
        raise DeviceError(f"{what}: cannot run {argv[0]} ({exc.strerror or exc})") from exc


def attached_devices(exe: str) -> list[tuple[str, str]]:
    """(serial, state) of every device `adb devices` lists; state is `device` when it is usable."""
    proc = _call([exe, "devices"], ADB_TIMEOUT_S, "adb devices")
    if proc.returncode != 0:
        raise DeviceError(f"adb devices failed: {_last_line(proc.stdout)}")
    devices = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            devices.append((parts[0], parts[1]))
    return devices


def choose_device(devices: list[tuple[str, str]], serial: str | None) -> str:
    states = dict(devices)
    if serial is not None:
        if serial not in states:
            listed = ", ".join(states) or "none"
            raise DeviceError(f"device {serial} is not attached (adb devices lists: {listed})")
        if states[serial] != "device":
            raise DeviceError(f"device {serial} is {states[serial]}: it cannot run commands yet")
        return serial
    ready = [s for s, state in devices if state == "device"]
    if not ready:
        if devices:
            listed = ", ".join(f"{s} ({state})" for s, state in devices)
            raise DeviceError(f"no usable Android device: {listed}; authorize USB debugging on the phone")
        raise DeviceError("no Android device attached (`adb devices` lists none)")
    if len(ready) > 1:
        raise DeviceError(f"{len(ready)} devices attached ({', '.join(ready)}): choose one with --serial")
    return ready[0]


@dataclass
class Adb:
    exe: str
    serial: str

    def run(self, *args: str, timeout: float = ADB_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return _call([self.exe, "-s", self.serial, *args], timeout, f"adb {args[0]}")

    def shell(self, argv: list[str], timeout: float = ADB_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        # adb joins its arguments into one command line for the device's shell: quote each word once.
        return self.run("shell", " ".join(shlex.quote(a) for a in argv), timeout=timeout)

    def push(self, src: Path, dest: str) -> None:
        proc = self.run("push", str(src), dest, timeout=RUN_TIMEOUT_S)
        if proc.returncode != 0:
            raise DeviceError(f"adb push {src.name} to {dest} failed: {_last_line(proc.stdout)}")

    def getprop(self, name: str) -> str | None:
        proc = self.shell(["getprop", name])
        value = proc.stdout.strip()
        return value if proc.returncode == 0 and value else None


def benchmark_flags(threads: int, runs: int, warmup: int, delegate: str) -> list[str]:
    if delegate not in DELEGATE_FLAGS:
        raise UsageError(f"--delegate {delegate}: choose one of {', '.join(DELEGATES)}")
    return [
        f"--num_threads={threads}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
        *DELEGATE_FLAGS[delegate],
    ]


def install_binary(adb: Adb, benchmark_model: str | None) -> str:
    """The device path of benchmark_model: a host file is pushed (and made executable), a device path kept."""
    if benchmark_model is None:
        return DEFAULT_BINARY
    host = Path(benchmark_model)
    if host.is_file():
        adb.push(host, DEFAULT_BINARY)
        proc = adb.shell(["chmod", "755", DEFAULT_BINARY])
        if proc.returncode != 0:
            raise DeviceError(f"chmod of {DEFAULT_BINARY} on the device failed: {_last_line(proc.stdout)}")
        return DEFAULT_BINARY
    if benchmark_model.startswith("/"):
        return benchmark_model
    raise UsageError(
        f"--benchmark-model {benchmark_model}: no such file on this host (a device path starts with /)"
    )


def run_benchmark_model(
    adb: Adb, binary: str, remote_graph: str, flags: list[str], name: str
) -> dict[str, Any]:
    proc = adb.shell([binary, f"--graph={remote_graph}", *flags], timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:  # adb passes the device's exit status on (Android 7+)
        raise DeviceError(
            f"benchmark_model failed on {name} (exit {proc.returncode}): {failure_reason(proc.stdout)}"
        )
    return parse_benchmark_model_output(proc.stdout, f"benchmark_model on {name}").to_dict()


def install_tool(adb: Adb, tool: Any, given: str) -> str:
    """A target's own runner binary (`Exporter.android_tool`): a host file is pushed, a device path kept."""
    host = Path(given)
    if host.is_file():
        adb.push(host, tool.DEVICE_BINARY)
        proc = adb.shell(["chmod", "755", tool.DEVICE_BINARY])
        if proc.returncode != 0:
            raise DeviceError(
                f"chmod of {tool.DEVICE_BINARY} on the device failed: {_last_line(proc.stdout)}"
            )
        return tool.DEVICE_BINARY
    if given.startswith("/"):
        return given
    raise UsageError(f"{tool.FLAG} {given}: no such file on this host (a device path starts with /)")


def run_tool(
    adb: Adb, tool: Any, binary: str, remote: str, threads: int, runs: int, warmup: int, name: str
) -> dict[str, Any]:
    proc = adb.shell(tool.argv(binary, remote, threads, runs, warmup), timeout=RUN_TIMEOUT_S)
    what = f"{Path(binary).name} on {name}"
    if proc.returncode != 0:
        raise DeviceError(f"{what} failed (exit {proc.returncode}): {_last_line(proc.stdout)}")
    return tool.parse(proc.stdout, warmup, what)


def bench_android(
    out: str | Path,
    *,
    adb: str | None = None,
    benchmark_model: str | None = None,
    tools: dict[str, str] | None = None,
    serial: str | None = None,
    threads: int = 2,
    runs: int = 20,
    warmup: int = 5,
    delegate: str = "xnnpack",
    say: Callable[[str], None] = lambda _msg: None,
) -> tuple[Manifest, list[str]]:
    """Run every artifact of OUT that runs on Android on the device: .tflite with benchmark_model, a
    target with its own tool (`Exporter.android_tool`, e.g. ExecuTorch's executor_runner) when `tools`
    names that tool's binary (by its flag); returns the updated manifest and the skipped artifacts."""
    out = Path(out)
    tools = tools or {}
    flags = benchmark_flags(threads, runs, warmup, delegate)
    manifest = read_manifest(out)
    runs_here = targets_for_device("android")
    tool_of = {t: exporter_class(t).android_tool for t in runs_here}

    def runnable(entry: Any) -> bool:
        tool = tool_of.get(entry.target)
        if entry.target not in runs_here:
            return False
        return tool is None or (tool.FLAG in tools and tool.can_run(entry.options or {}))

    entries = [a for a in manifest.artifacts if runnable(a)]
    skipped = [a.path for a in manifest.artifacts if not runnable(a)]
    if not entries:
        needs = [f"{t} ({tool.FLAG} PATH)" for t, tool in tool_of.items() if tool is not None]
        raise UsageError(
            f"{out}: no artifact to run on Android (.tflite, or {', '.join(needs) or 'none other'})"
        )
    exe = find_adb(adb)
    device = Adb(exe, choose_device(attached_devices(exe), serial))
    model = device.getprop("ro.product.model")
    android = device.getprop("ro.build.version.release")
    binaries: dict[str, str] = {}
    for entry in entries:
        path = verify_artifact(out, entry)
        remote = f"{DEVICE_DIR}/{path.name}"
        tool = tool_of.get(entry.target)
        key = tool.FLAG if tool else "--benchmark-model"
        if key not in binaries:
            binaries[key] = (
                install_tool(device, tool, tools[key]) if tool else install_binary(device, benchmark_model)
            )
        binary = binaries[key]
        say(f"{path.name}: {Path(binary).name} on {model or device.serial}")
        device.push(path, remote)
        try:
            if tool:
                result = run_tool(device, tool, binary, remote, threads, runs, warmup, path.name)
            else:
                result = run_benchmark_model(device, binary, remote, flags, path.name)
        finally:
            device.shell(["rm", "-f", remote])  # /data/local/tmp is not cleaned by the system
        entry.device_latency = entry.device_latency or {}
        entry.device_latency["android"] = {
            "runtime": f"android-{Path(binary).name}" if tool else RUNTIME,
            "device": model,
            "android_version": android,
            "serial": device.serial,
            "benchmark_model": binary,  # the binary that ran it (benchmark_model or the target's tool)
            "threads": threads,
            # A target's own tool runs the delegate the artifact was lowered for.
            "delegate": (entry.options or {}).get("delegate_backend", "in the artifact")
            if tool
            else delegate,
            "flags": tool.argv(binary, remote, threads, runs, warmup)[1:] if tool else flags,
            **result,
        }
        write_manifest(out, manifest)  # a later failure keeps the runs already made
    write_report(out, manifest)
    return manifest, skipped
