"""`mvit2-export`: the export command plus the `info`, `inspect`, `check` and `bench` subcommands.

`mvit2-export --target coreml` is the export command itself (no subcommand word), so argv is dispatched
on its first word: a known subcommand goes to its parser, anything else to the export parser.
Errors: every `Mvit2ExportError` becomes one line on stderr and its exit code; a traceback only with
--verbose.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import Mvit2ExportError, UsageError
from ..exporters import target_names
from . import commands, ui

SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "info": ("model summary: config, parameters, GMACs", commands.add_info_args, commands.run_info),
    "inspect": (
        "op histogram and attention audit of an artifact",
        commands.add_inspect_args,
        commands.run_inspect,
    ),
    "check": ("re-run parity on exported artifacts (a CI gate)", commands.add_check_args, commands.run_check),
    "bench": ("latency of exported artifacts on this host", commands.add_bench_args, commands.run_bench),
}

EPILOG = """subcommands:
  info       {info}
  inspect    {inspect}
  check      {check}
  bench      {bench}

examples:
  mvit2-export --target onnx --out out/            # the embedded (untrained) default model
  mvit2-export --target all --checkpoint ./mobilevitv2-1.0-imagenet1k-256 --precision fp32,fp16
  mvit2-export info --checkpoint ./my-checkpoint
  mvit2-export check out/                          # exits non-zero when an artifact fails parity
""".format(**{k: v[0] for k, v in SUBCOMMANDS.items()})


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting 2 with a wall of text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def _print_message(self, message: str, file: object = None) -> None:
        # --help and --version: to the command's own stdout (sys.stdout is os.devnull under ui.quiet()).
        if message:
            (ui.stderr if file is sys.stderr else ui.stdout).write(message)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", "-v", action="store_true", help="show tracebacks and library logs")


def build_export_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="mvit2-export",
        description="Export MobileViTV2 to phone and edge runtimes, and prove each artifact against PyTorch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"mvit2-export {__version__}")
    p.add_argument("--target", required=True, help=f"{', '.join(target_names())} or all (comma list allowed)")
    commands.add_model_args(p)
    commands.add_export_args(p)
    add_common(p)
    return p


def build_sub_parser(name: str) -> argparse.ArgumentParser:
    help_text, add_args, _ = SUBCOMMANDS[name]
    p = _Parser(prog=f"mvit2-export {name}", description=help_text)
    add_args(p)
    add_common(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or "-v" in argv
    if verbose:
        return _dispatch(argv, verbose)
    # Library warnings and converter logs are noise to a user; --verbose shows them.
    with warnings.catch_warnings(), ui.quiet():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            return _dispatch(argv, verbose)
        finally:
            logging.disable(previous)


def _dispatch(argv: list[str], verbose: bool) -> int:
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
            close = difflib.get_close_matches(argv[0], list(SUBCOMMANDS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(
                f"unknown command {argv[0]!r}{hint} (commands: {', '.join(SUBCOMMANDS)}; export: --target ...)"
            )
        if argv and argv[0] in SUBCOMMANDS:
            args = build_sub_parser(argv[0]).parse_args(argv[1:])
            return SUBCOMMANDS[argv[0]][2](args)
        if not argv:
            build_export_parser().print_help(ui.stdout)
            return 0
        args = build_export_parser().parse_args(argv)
        return commands.run_export(args)
    except Mvit2ExportError as exc:
        if verbose:
            traceback.print_exc(file=ui.stderr)
        print(f"error: {exc.message}", file=ui.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was left behind", file=ui.stderr)
        return 130
    except Exception as exc:  # a bug or an upstream library failure: still one line unless --verbose
        if verbose:
            traceback.print_exc(file=ui.stderr)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"error: unexpected {type(exc).__name__}: {first[:300]} (re-run with --verbose)", file=ui.stderr
        )
        return 1


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str), file=ui.stdout)


if __name__ == "__main__":
    sys.exit(main())
