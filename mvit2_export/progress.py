"""Progress as events: what every long operation (export, check, bench) reports, and to whom.

An operation calls the user's listener with `ProgressEvent`s: a job (one artifact) starts exporting, a
step inside it starts (`step("onnxslim")`: traced, rewritten, converted, quantized, saved, audited), its
parity check starts, the operation is done. The CLI's progress bar and `benchmarks/bench_all.py` (which
times the steps from the events' clocks) consume the same events; workers of a parallel export send
theirs through the lane queue, stamped where they happened.

    def listener(event: ProgressEvent) -> None: ...
    mvit2_export.export(model, "onnx", "out/", progress=listener)

A callable taking (step, done, total) is accepted too (`as_listener`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

KINDS = ("export", "step", "parity", "localize", "bench", "done")


@dataclass(frozen=True)
class ProgressEvent:
    kind: str  # one of KINDS
    step: str  # what starts now, for a person: "exporting onnx fp32 -> model.onnx", "onnxslim"
    done: int = 0  # units of `total` finished when it starts (jobs for export, artifacts for check)
    total: int = 0
    target: str | None = None
    precision: str | None = None
    lane: int = 0  # the process of a parallel export it happened in (0: this one)
    at: float = field(default_factory=time.time)  # wall clock where it happened (any process)
    elapsed: float = 0.0  # seconds since the operation started (set by the operation)

    def since(self, start: float, **changes: object) -> ProgressEvent:
        return replace(self, elapsed=self.at - start, **changes)  # type: ignore[arg-type]


Listener = Callable[[ProgressEvent], None]


def as_listener(progress: Callable[..., None] | None) -> Listener:
    """The user's callback as a listener: one taking an event, or (step, done, total) for the older form."""
    if progress is None:
        return lambda _event: None
    try:
        params = list(inspect.signature(progress).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: assume the event form
        params = []
    # The older form needs three positional arguments (or takes *args); `f(event, done=None, ...)` is
    # an event listener that also accepts text.
    required = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(required) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return lambda e: progress(e.step, e.done, e.total)
    return progress


# The listener and job that `step()` reports to: set around one job's export, in whatever process runs it.
_CURRENT: ContextVar[tuple[Listener, str | None, str | None] | None] = ContextVar(
    "mvit2_progress", default=None
)


@contextmanager
def reporting(listener: Listener, target: str | None = None, precision: str | None = None) -> Iterator[None]:
    token = _CURRENT.set((listener, target, precision))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def step(name: str) -> None:
    """A step of the current job starts (no-op outside `reporting`)."""
    current = _CURRENT.get()
    if current is not None:
        listener, target, precision = current
        listener(ProgressEvent("step", name, target=target, precision=precision))
