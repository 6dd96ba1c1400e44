"""Rewrite base class, result record and the id -> rewrite registry.

A rewrite is a small class (coremltools MIL-pass style) that edits the `torch.fx.Graph` of an
*unlifted* ExportedProgram module (`ep.module()`: parameters and buffers are `get_attr` nodes), in
place, and returns how many times it fired. It never re-exports: the manager does that after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import ClassVar, TypeVar

import torch

_ID = re.compile(r"^[a-z][a-z0-9_]*::[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class RewriteResult:
    """What one rewrite did: `fired` matches rewritten; `reason` says why when it fired 0 times."""

    id: str
    fired: int
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Rewrite:
    """One graph rewrite. Subclasses set `id` and implement `apply`."""

    id: ClassVar[str] = ""

    def apply(self, gm: torch.fx.GraphModule) -> RewriteResult:
        raise NotImplementedError

    # Helpers so `apply` bodies stay short.
    def fired(self, count: int, skipped: list[str]) -> RewriteResult:
        """Result for `count` fires; when 0, the reasons collected while skipping candidates."""
        if count:
            return RewriteResult(self.id, count, None)
        reasons = list(dict.fromkeys(skipped))  # de-duplicate, keep order
        return RewriteResult(self.id, 0, "; ".join(reasons) if reasons else "no match")


class Registry:
    """Maps `namespace::name` ids to rewrite classes. Registering an id twice is an error."""

    def __init__(self) -> None:
        self._items: dict[str, type[Rewrite]] = {}

    def register(self, cls: type[Rewrite]) -> type[Rewrite]:
        if not _ID.match(cls.id):
            raise ValueError(f"rewrite id {cls.id!r} is not of the form 'namespace::name'")
        if cls.id in self._items:
            raise ValueError(f"rewrite id {cls.id!r} is already registered")
        self._items[cls.id] = cls
        return cls

    def get(self, rewrite_id: str) -> type[Rewrite]:
        if rewrite_id not in self._items:
            raise KeyError(f"unknown rewrite {rewrite_id!r}; known: {sorted(self._items)}")
        return self._items[rewrite_id]

    def __contains__(self, rewrite_id: object) -> bool:
        return rewrite_id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)


REGISTRY = Registry()

R = TypeVar("R", bound=type[Rewrite])


def register_rewrite(cls: R) -> R:
    """Class decorator: add a rewrite to the global REGISTRY."""
    REGISTRY.register(cls)
    return cls
