"""A progress bar over a command's long steps (export, calibration, parity, localization, bench).

Drawn by rich on stderr and only when stderr is an interactive terminal: in a pipe, a log file or CI
there are no spinner frames or escape codes to strip. `TTY_COMPATIBLE=1` or `FORCE_COLOR=1` force it on,
as for every rich program. The bar is transient: the command's own output is all that stays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ..progress import ProgressEvent
from . import ui

# say(event) with a ProgressEvent, or say(step, done, total) with text (counts optional).
Say = Callable[..., None]


@contextmanager
def progress(console: Console | None = None) -> Iterator[Say]:
    """Yield `say` for the library's `progress=` callbacks; a no-op unless `console` is interactive."""
    console = console or Console(file=ui.stderr)
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_interactive,
    )
    with bar:
        task = bar.add_task("starting", total=None)

        lanes: dict[int, str] = {}  # per process of a parallel export: its artifact and current step

        def say(event: ProgressEvent | str, done: int | None = None, total: int | None = None) -> None:
            if not isinstance(event, ProgressEvent):
                bar.update(task, description=event, completed=done, total=total)
                return
            if event.kind == "step":  # a step inside the lane's current artifact
                job = lanes.get(event.lane, "").split(": ")[0]
                lanes[event.lane] = f"{job}: {event.step}" if job else event.step
            else:
                lanes[event.lane] = event.step
            if event.kind == "done":
                lanes.clear()
            text = " | ".join(s for _, s in sorted(lanes.items()))
            bar.update(task, description=text or event.step, completed=event.done, total=event.total or None)

        yield say
