"""Typed errors. Each carries the one-line message the CLI prints and the exit code it uses.

Library code raises these (never `assert` for user input); the CLI maps them to a line on stderr
and a non-zero exit, with a traceback only under --verbose.
"""

from __future__ import annotations

from typing import Any


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a library's exception message, for a one-line error (its type when empty)."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


class Mvit2ExportError(Exception):
    """Base class: a problem the user can act on, described in one line."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from the message alone, whatever the subclass's __init__ takes: errors raised in a
        # worker process of a parallel export are pickled back to the main one.
        return (_rebuild, (type(self), self.message))


def _rebuild(cls: type[Mvit2ExportError], message: str) -> Mvit2ExportError:
    err = cls.__new__(cls)
    Mvit2ExportError.__init__(err, message)
    return err


class CheckpointError(Mvit2ExportError):
    """A checkpoint that is missing, unreadable, unsafe or does not match the architecture."""

    exit_code = 2


class ConfigError(Mvit2ExportError):
    """A config.json that is not a MobileViTV2 config, or whose values the architecture cannot take."""

    exit_code = 2


class InputSizeError(Mvit2ExportError):
    """An image size the architecture cannot take (patches must tile every transformer stage)."""

    exit_code = 2


class UsageError(Mvit2ExportError):
    """A bad command-line value or an unsupported combination of options."""

    exit_code = 2


class OutputExistsError(Mvit2ExportError):
    """An output that already exists without --force, or an output path that cannot be written."""

    exit_code = 2


class BackendMissingError(Mvit2ExportError):
    """An optional backend whose packages are not installed; the message names the extra to install."""

    exit_code = 3

    def __init__(self, backend: str, extra: str, detail: str = "") -> None:
        hint = f"pip install 'mvit2-export[{extra}]'"
        msg = f"the {backend} backend is not available ({detail}); install it with: {hint}"
        if not detail:
            msg = f"the {backend} backend is not available; install it with: {hint}"
        super().__init__(msg)


class RewriteError(Mvit2ExportError):
    """A graph rewrite that broke the program (validation or re-trace failed after it)."""

    exit_code = 4


class ExportError(Mvit2ExportError):
    """A backend converter that failed on the rewritten program."""

    exit_code = 4


class UnsupportedOpError(Mvit2ExportError):
    """An operation a runtime or interpreter here does not implement."""

    exit_code = 4


class ParityError(Mvit2ExportError):
    """An artifact whose outputs do not match the PyTorch reference within the stated thresholds."""

    exit_code = 5


class GateNotMetError(ParityError):
    """int8 misses the held-out accuracy gate even with its most sensitive layers kept in float; nothing
    was written. The message lists every configuration tried."""

    trials: list[Any] = []  # the search's configurations (exporters/int8_search.Trial), when it ran one


class DegenerateReferenceError(Mvit2ExportError):
    """Reference outputs that are all ~0 or the same for every input (e.g. transformers' default init):
    parity cannot say pass or fail."""

    exit_code = 9


class AuditError(Mvit2ExportError):
    """An artifact whose attention did not lower to element-wise ops (`inspect --require-elementwise`)."""

    exit_code = 7


class IntegrityError(Mvit2ExportError):
    """An artifact listed in a manifest that is missing, whose sha256 changed, or that the
    manifest's model does not lower to (found when `check --localize` re-lowers a .pte)."""

    exit_code = 6


class DeviceError(Mvit2ExportError):
    """An on-device run that cannot happen or failed: no adb, no device attached, benchmark_model
    failed, or Core ML timing asked for on a host that is not macOS."""

    exit_code = 8
