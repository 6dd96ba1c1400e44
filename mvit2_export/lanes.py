"""Run the export jobs of different targets side by side: one lane per process, this process included.

Exporting is single-threaded Python (torch.export, the rewrites, the converters), so `--target all` on
one core is the sum of three exports (68 s at width 1.0 here, start-up included). A lane per target group
on another core brings it to the longest lane (50 s with two lanes: tflite | onnx + coreml). The jobs of one target stay in one lane, in order: fp32, fp16 and int8
reuse that target's cached trace and conversion. Worker lanes are spawned processes (a fork of a process
that has run torch would inherit its thread pools); each reads the model once, at start, from a file this
process writes: passed in the spawn arguments instead, a model larger than a pipe's buffer made this
process wait forever on a worker that died before reading them (a script calling export() without an
`if __name__ == "__main__":` guard, re-run by the spawned worker; measured: a hang at 0% CPU).
"""

from __future__ import annotations

import os
import pickle
import queue as queue_mod
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import current_process, get_context
from typing import Any

from .errors import ExportError, UsageError

# (job index) -> result, run in the lane's process; `say(message)` reports progress (any picklable value).
JobFn = Callable[..., Any]


def resolve_lanes(requested: int | None, targets: Sequence[str]) -> int:
    """How many lanes: `requested` (>= 1), else one per target group up to the usable cores."""
    groups = len(set(targets))
    if requested is not None:
        if requested < 1:
            raise UsageError(f"--jobs must be >= 1 (got {requested})")
        return min(requested, groups)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, groups))


def plan_lanes(targets: Sequence[str], lanes: int, cost: Mapping[str, int] | None = None) -> list[list[int]]:
    """Job indices per lane (lane 0 is this process): each target group, costliest first (`cost`: the
    relative export time each exporter declares), to the least loaded lane. Jobs keep their order."""
    cost = cost or {}
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        groups.setdefault(t, []).append(i)
    n = max(1, min(lanes, len(groups)))
    plan: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    for target, idx in sorted(groups.items(), key=lambda kv: -cost.get(kv[0], 3) * len(kv[1])):
        k = load.index(min(load))
        plan[k].extend(idx)
        load[k] += cost.get(target, 3) * len(idx)
    return [sorted(lane) for lane in plan]


def refuse_in_a_starting_worker() -> None:
    """Raise if this process is a spawned worker still importing the user's main script: a script that
    calls export() outside `if __name__ == "__main__":` runs it again in every worker, which would redo
    (and race) the export into the same folder before dying at its own spawn."""
    if getattr(current_process(), "_inheriting", False):  # what multiprocessing's own check reads
        raise UsageError(
            "export() was called while a worker process was starting (workers re-run the main "
            "script): call it under `if __name__ == '__main__':`"
        )


# -- worker side ---------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(lane: int, state_file: str, messages: Any) -> None:
    import torch

    torch.set_num_threads(1)  # the lanes share the cores; eager checks must not oversubscribe them
    with open(state_file, "rb") as f:  # written by run_lanes in this run, in its private directory
        state = pickle.load(f)
    _WORKER.update(lane=lane, state=state, messages=messages)


def _run_in_worker(fn: JobFn, index: int) -> Any:
    lane, messages = _WORKER["lane"], _WORKER["messages"]
    return fn(_WORKER["state"], index, lambda message: messages.put((lane, message)))


# -- this side -----------------------------------------------------------------------------------------


def run_lanes(
    plan: list[list[int]],
    fn: JobFn,
    state: Any,
    say: Callable[[int, Any], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield (job index, fn(state, index, say)) as jobs finish: lane 0 here, the others in workers;
    what a job says reaches `say(lane, message)` here.

    `fn` must be a module-level function and `state` picklable (it is sent to each worker once). The
    first error, from any lane, cancels the jobs not started and is raised here.
    """
    if len(plan) == 1:
        for i in plan[0]:
            yield i, fn(state, i, lambda message: say(0, message) if say else None)
        return
    with tempfile.TemporaryDirectory(prefix="mvit2-lanes-") as scratch:
        state_file = os.path.join(scratch, "state.pickle")
        with open(state_file, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        yield from _run_pools(plan, fn, state, state_file, say)


def _run_pools(
    plan: list[list[int]], fn: JobFn, state: Any, state_file: str, say: Callable[[int, Any], None] | None
) -> Iterator[tuple[int, Any]]:
    ctx = get_context("spawn")
    messages = ctx.Queue()
    lock = threading.Lock()

    def show(lane: int, message: Any) -> None:
        with lock:
            if say:
                say(lane, message)

    pools = [
        ProcessPoolExecutor(1, ctx, initializer=_init_worker, initargs=(k, state_file, messages))
        for k in range(1, len(plan))
    ]
    futures: dict[Future[Any], int] = {}
    stop = threading.Event()
    relay = threading.Thread(target=_relay, args=(messages, show, stop), daemon=True)
    relay.start()
    try:
        for pool, lane in zip(pools, plan[1:], strict=True):
            for i in lane:
                futures[pool.submit(_run_in_worker, fn, i)] = i
        for i in plan[0]:
            result = fn(state, i, lambda message: show(0, message))
            yield i, result
            yield from _collect(futures, block=False)
        yield from _collect(futures, block=True)
    finally:
        stop.set()
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
        relay.join(timeout=5)
        messages.close()


def _collect(futures: dict[Future[Any], int], block: bool) -> Iterator[tuple[int, Any]]:
    while futures:
        done, _ = wait(futures, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        if not done:
            return
        for f in done:
            i = futures.pop(f)
            try:
                yield i, f.result()
            except BrokenProcessPool as exc:
                raise ExportError(
                    "a worker process of the parallel export died (out of memory, or a script calling "
                    "export() outside `if __name__ == '__main__':`); retry with --jobs 1 (workers=1)"
                ) from exc


def _relay(messages: Any, show: Callable[[int, Any], None], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            lane, message = messages.get(timeout=0.2)
        except queue_mod.Empty:
            continue
        except (EOFError, OSError):  # queue closed at shutdown
            return
        show(lane, message)
