"""The package's structure as the next engineer relies on it: targets are data (no code outside
`exporters/<target>/` and `rewrites/` compares against a target name), and every registered target's
class loads without its backend installed (help, `--target all` and the missing-backend error work)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import mvit2_export

PACKAGE = Path(mvit2_export.__file__).parent
TARGET_NAME = re.compile(r"[\"'](onnx|coreml|tflite|executorch)[\"']")


def test_no_code_outside_the_target_packages_names_a_target():
    exempt = (
        "exporters/onnx/",
        "exporters/coreml/",
        "exporters/tflite/",
        "exporters/executorch/",
        "rewrites/",
    )
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(exempt):
            continue
        hits += [
            f"{rel}:{i}: {line.strip()}"
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if TARGET_NAME.search(line)
        ]
    # Allowed: the list of built-in exporter packages and the API docstring's example.
    assert len(hits) <= 3, "\n".join(hits)


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved), wherever the import sits."""
    import ast

    package = ".".join(("mvit2_export", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            names.add(".".join([*base, node.module] if node.module else base))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_layers_run_one_way():
    """cli -> api -> exporters -> rewrites/model; parity and bench read runners. No exporter imports
    parity or bench; nothing below the CLI imports it."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        imported = _imports(path)
        if rel.startswith("exporters/"):
            bad = {m for m in imported if m.startswith(("mvit2_export.parity", "mvit2_export.bench"))}
            assert not bad, f"{rel} imports {bad}"
        if not rel.startswith("cli/"):
            assert not {m for m in imported if m.startswith("mvit2_export.cli")}, rel
        if rel.startswith(("model/", "rewrites/", "data/")):
            upward = (
                "mvit2_export.exporters",
                "mvit2_export.parity",
                "mvit2_export.api",
                "mvit2_export.bench",
            )
            assert not {m for m in imported if m.startswith(upward)}, rel


BLOCK_BACKENDS = """
import sys
for name in ("onnx", "onnxruntime", "onnxscript", "onnxslim", "coremltools", "litert_torch", "ai_edge_litert",
             "ai_edge_quantizer", "tensorflow", "executorch"):
    sys.modules[name] = None  # import fails as if not installed
from mvit2_export.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _without_backends(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_BACKENDS, *args], capture_output=True, text=True, timeout=300
    )


def test_help_and_the_missing_backend_error_need_no_backend():
    helped = _without_backends("--help")
    assert helped.returncode == 0, helped.stderr
    assert "onnx, coreml, tflite, executorch or all" in helped.stdout and "--opset" in helped.stdout
    assert "--executorch-backend" in helped.stdout
    for target, extra in (
        ("onnx", "onnx"),
        ("coreml", "coreml"),
        ("tflite", "tflite"),
        ("executorch", "executorch"),
    ):
        proc = _without_backends(
            "--target", target, "--width", "0.5", "--image-size", "64", "--out", "/nonexistent/x"
        )
        assert proc.returncode == 3, (target, proc.stderr)
        assert f"mvit2-export[{extra}]" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
