"""Where the command's own output goes, and library output kept out of it unless --verbose.

The converters write to the terminal at every level: TensorFlow/absl and oneDNN from C++ (fd 2), LiteRT's
"Created TensorFlow Lite XNNPACK delegate", coremltools' "Failed to load _MLModelProxy" and torch-version
notes, torchao's "Failed to load ... .so", ai-edge-quantizer's tqdm bars (sys.stderr), litert-torch's
"[START] Write Model to Bytes" (sys.stdout), FutureWarnings from spawned lanes. `quiet()` points file
descriptors 1 and 2 (inherited by worker processes) and sys.stdout/sys.stderr at os.devnull for the
command's duration; the command itself writes through `stdout`/`stderr` below, which keep the streams the
process started with (a terminal, a pipe, or pytest's capture).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_streams: dict[str, TextIO | None] = {"stdout": None, "stderr": None}

# Native libraries read these at import (TensorFlow's C++ log level, glog): set before they load.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3", "PYTHONWARNINGS": "ignore"}


class _Stream(io.TextIOBase):
    """The command's stdout or stderr: the stream it started with while `quiet()` runs, else sys's."""

    def __init__(self, which: str) -> None:
        self.which = which

    def _target(self) -> TextIO:
        return _streams[self.which] or getattr(sys, self.which)

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", None) or "utf-8"


stdout = _Stream("stdout")
stderr = _Stream("stderr")


def _keep(stream: TextIO, fd: int) -> TextIO:
    """A stream that still reaches where `stream` did after fd `fd` is redirected."""
    try:
        own_fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream  # an in-memory capture (pytest's capsys): unaffected by fd redirection
    if own_fd != fd:
        return stream
    return open(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8")


@contextmanager
def quiet() -> Iterator[None]:
    """Library output to os.devnull (fds 1 and 2, sys.stdout/sys.stderr, the environment of worker
    processes); the command's own output through `stdout`/`stderr`."""
    for s in (sys.stdout, sys.stderr):
        s.flush()
    kept = {"stdout": _keep(sys.stdout, 1), "stderr": _keep(sys.stderr, 2)}
    saved_env = {k: os.environ.get(k) for k in QUIET_ENV}
    os.environ.update({k: v for k, v in QUIET_ENV.items() if saved_env[k] is None})
    saved_fds: list[tuple[int, int]] = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            saved_fds.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        except OSError:
            pass  # no such descriptor (a daemon): nothing to keep quiet
    os.close(devnull)
    # Two sinks, so that code routing by `file is sys.stderr` (argparse's messages) still can.
    sinks = open(os.devnull, "w"), open(os.devnull, "w")  # noqa: SIM115 - closed below
    old = sys.stdout, sys.stderr
    _streams.update(kept)
    sys.stdout, sys.stderr = sinks
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old
        for name, s in kept.items():
            s.flush()
            if s is not old[0] and s is not old[1]:
                s.close()
            _streams[name] = None
        for sink in sinks:
            sink.close()
        for fd, copy in saved_fds:
            os.dup2(copy, fd)
            os.close(copy)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
