"""The registered targets. An exporter class registers itself with `@register`; the built-in ones live in
the packages named in BUILTIN (imported on first use; each imports without its backend installed, so
`--help`, `--target all` and the missing-backend error work everywhere). `--target all` means every
registered exporter, in registration order."""

from __future__ import annotations

import importlib

from ..errors import BackendMissingError, UsageError
from .base import Exporter

BUILTIN = ("onnx", "coreml", "tflite", "executorch")  # sub-packages of mvit2_export.exporters

_REGISTRY: dict[str, type[Exporter]] = {}
_loaded = False


def register(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: make `cls.target` a target of every command."""
    _REGISTRY[cls.target] = cls
    return cls


def registered() -> dict[str, type[Exporter]]:
    """Target name -> exporter class, built-ins first."""
    global _loaded
    if not _loaded:
        _loaded = True
        for name in BUILTIN:
            importlib.import_module(f"{__package__}.{name}")
    builtin = {n: _REGISTRY[n] for n in BUILTIN if n in _REGISTRY}
    return {**builtin, **{n: c for n, c in _REGISTRY.items() if n not in builtin}}


def target_names() -> list[str]:
    return list(registered())


def exporter_class(target: str) -> type[Exporter]:
    classes = registered()
    if target not in classes:
        raise UsageError(f"unknown target {target!r}; expected one of {', '.join(classes)}")
    return classes[target]


def get_exporter(target: str) -> Exporter:
    """The exporter of `target`, after checking its backend packages are installed."""
    cls = exporter_class(target)
    cls.check_available()
    return cls()


def available_targets() -> list[str]:
    """Registered targets whose backend packages are installed here."""
    out = []
    for name, cls in registered().items():
        try:
            cls.check_available()
            out.append(name)
        except BackendMissingError:
            pass
    return out


def parse_targets(value: str) -> list[str]:
    names = [t.strip().lower() for t in value.split(",") if t.strip()]
    known = target_names()
    expected = f"{', '.join(known)} or all"
    if not names:
        raise UsageError(f"--target needs a value: {expected}")
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(t for t in known if t not in out)
        elif name in known:
            if name not in out:
                out.append(name)
        else:
            raise UsageError(f"unknown target {name!r}; expected {expected}")
    return out


def target_of_path(path: str) -> str:
    classes = registered()
    for name, cls in classes.items():
        if str(path).rstrip("/").endswith(cls.suffix):
            return name
    suffixes = ", ".join(cls.suffix for cls in classes.values())
    raise UsageError(f"{path}: unknown artifact type (expected {suffixes})")


def targets_for_device(device: str) -> list[str]:
    """Targets whose artifacts `bench --device DEVICE` runs."""
    return [name for name, cls in registered().items() if device in cls.devices]


def known_precisions() -> list[str]:
    """Every precision some registered target accepts, in declaration order."""
    out: list[str] = []
    for cls in registered().values():
        out.extend(p for p in cls.precisions if p not in out)
    return out
