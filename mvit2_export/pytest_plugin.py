"""pytest plugin (registered through the `pytest11` entry point): assert parity of exported artifacts.

In a user's test suite:

    def test_exported_models_still_match(mvit2_check):
        mvit2_check("exported/")                      # every artifact in the manifest
        mvit2_check("exported/model-fp16.onnx")      # or one artifact

or with no code at all: `pytest --mvit2-out exported/` adds one test per artifact listed there.
Each check verifies the artifact's sha256 and re-runs parity against the PyTorch reference.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mvit2-export")
    group.addoption(
        "--mvit2-out",
        action="append",
        default=[],
        metavar="DIR",
        help="mvit2-export output directory whose artifacts must pass parity (repeatable)",
    )
    group.addoption(
        "--mvit2-checkpoint", default=None, help="checkpoint to compare against (default: the manifest's)"
    )


@pytest.fixture
def mvit2_check(request: pytest.FixtureRequest) -> Callable[..., list[Any]]:
    """Call with an output directory or an artifact path; fails the test with the one-line reason."""
    default_checkpoint = request.config.getoption("--mvit2-checkpoint")

    def run(path: str | Path, checkpoint: str | None = None) -> list[Any]:
        from mvit2_export.check import check, raise_on_failure
        from mvit2_export.errors import Mvit2ExportError

        try:
            results = check(path, checkpoint or default_checkpoint)
            raise_on_failure(results)
            return results
        except Mvit2ExportError as exc:
            pytest.fail(exc.message, pytrace=False)

    return run


class ArtifactItem(pytest.Item):
    def __init__(self, *, out: Path, entry_path: str, checkpoint: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out, self.entry_path, self.checkpoint = out, entry_path, checkpoint

    def runtest(self) -> None:
        from mvit2_export.check import check, raise_on_failure
        from mvit2_export.errors import Mvit2ExportError

        try:
            raise_on_failure(check(self.out / self.entry_path, self.checkpoint))
        except Mvit2ExportError as exc:
            raise ArtifactFailure(exc.message) from None

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ArtifactFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.out, 0, f"mvit2 parity: {self.entry_path}"


class ArtifactFailure(Exception):
    pass


class ManifestCollector(pytest.File):
    checkpoint: str | None = None

    def collect(self) -> Any:
        from mvit2_export.manifest import read_manifest

        out = self.path.parent
        for entry in read_manifest(out).artifacts:
            yield ArtifactItem.from_parent(
                self, name=entry.path, out=out, entry_path=entry.path, checkpoint=self.checkpoint
            )


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for out in config.getoption("--mvit2-out"):
        collector = ManifestCollector.from_parent(session, path=Path(out).resolve() / "manifest.json")
        collector.checkpoint = config.getoption("--mvit2-checkpoint")
        items.extend(collector.collect())
