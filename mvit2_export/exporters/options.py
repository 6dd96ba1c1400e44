"""A target's command-line options as data: the CLI generates its flags from these specs, and
`backend_options` maps the parsed flags back to each target's `ExportOptions.backend` keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OptionSpec:
    """One backend option: `--flag` on the command line, `key` in `ExportOptions.backend`.

    `kind` is "int", "str" or "flag" (a switch, True when given). `default` is for the help text only:
    a flag that is not given is left out, so the exporter's own default applies."""

    flag: str
    key: str
    kind: str
    help: str
    choices: tuple[Any, ...] | None = None
    default: Any = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def help_text(self) -> str:
        parts = [self.help]
        if self.choices:
            parts.append(f"one of {', '.join(map(str, self.choices))}")
        if self.default is not None:
            parts.append(f"default {self.default}")
        return "; ".join(parts)
