"""Reading a .pte: the tool's metadata (a constant method), and the op histogram as the runtime sees it
(per instruction of the `forward` plan: delegate calls by backend, kernel calls by operator; inside an
XNNPACK delegate, every XNNPACK node by type)."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ...errors import UsageError, first_line
from .lower import METADATA_METHOD


def _program(data: bytes) -> Any:
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        return deserialize_pte_binary(data).program
    except Exception as exc:
        raise UsageError(f"not a readable ExecuTorch program ({type(exc).__name__})") from exc


def _read(path: Path, size: int = -1) -> bytes:
    """The file's first `size` bytes (all by default), after checking it is an ExecuTorch program."""
    try:
        with open(path, "rb") as f:
            data = f.read(size)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) < 8 or data[4:6] != b"ET":  # flatbuffer file identifier "ET12"-style
        raise UsageError(f"{path}: not an ExecuTorch .pte file (no ET program identifier)")
    return data


def read_bytes(path: Path) -> bytes:
    return _read(path)


def load_program(path: Path) -> Any:
    """The program loaded by this host's ExecuTorch runtime (methods are loaded on demand)."""
    from executorch.runtime import Runtime

    _read(path, 8)  # a file that is not a program fails here, in one line
    try:
        return Runtime.get().load_program(str(path))  # from the path: mapped, not copied
    except Exception as exc:
        raise UsageError(f"{path}: ExecuTorch cannot load the program ({first_line(exc)})") from exc


def metadata_of(program: Any, path: Path) -> dict[str, Any]:
    """The JSON the exporter stored in a loaded program; {} for a .pte we did not write."""
    if METADATA_METHOD not in program.method_names:
        return {}
    try:
        (blob,) = program.load_method(METADATA_METHOD).execute([])
    except Exception as exc:
        raise UsageError(f"{path}: ExecuTorch cannot read the metadata ({first_line(exc)})") from exc
    return json.loads(bytes(blob.numpy()).decode())


def read_metadata(path: Path) -> dict[str, Any]:
    return metadata_of(load_program(path), path)


def xnnpack_node_types(payload: bytes) -> Counter[str]:
    """XNNPACK node types in a delegate payload (its XNNGraph flatbuffer, decoded with the flatc that
    ships with executorch against the XNNPACK schema; there is no Python reader for it)."""
    from executorch.backends.xnnpack.serialization import xnnpack_graph_serialize as xs
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    header = xs.XNNHeader.from_bytes(payload[: xs.XNNHeader.EXPECTED_LENGTH])
    graph = payload[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "schema.fbs").write_bytes(xs._get_schema_bytes())
        (Path(d) / "graph.bin").write_bytes(graph)
        flatc = [_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "-o", d]
        proc = subprocess.run(
            [*flatc, f"{d}/schema.fbs", "--", f"{d}/graph.bin"], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise UsageError(f"cannot decode the XNNPACK graph: {proc.stderr.strip()[:200]}")
        text = (Path(d) / "graph.json").read_text()
    text = re.sub(r"(:\s*)(-?)inf\b", r"\1\2Infinity", text)  # flatc writes inf, JSON needs Infinity
    return Counter(n["xnode_union_type"] for n in json.loads(text)["xnodes"])


def instruction_histogram(data: bytes) -> Counter[str]:
    """The `forward` plan's instructions: `delegate:<Backend>` per delegate call, `kernel:<op>` per
    portable-kernel call."""
    plan = next(p for p in _program(data).execution_plan if p.name == "forward")
    hist: Counter[str] = Counter()
    for chain in plan.chains:
        for ins in chain.instructions:
            args = ins.instr_args
            kind = type(args).__name__
            if kind == "DelegateCall":
                hist[f"delegate:{plan.delegates[args.delegate_index].id}"] += 1
            elif kind == "KernelCall":
                hist[f"kernel:{plan.operators[args.op_index].name}"] += 1
    return hist


def op_histogram(path: Path) -> dict[str, int]:
    """`instruction_histogram`, plus the XNNPACK node types inside XNNPACK delegates (`XNNConv2d`,
    `XNNStaticTranspose`, ...)."""
    from executorch.exir._serialize._program import _extract_delegate_payload

    data = read_bytes(path)
    hist = instruction_histogram(data)
    for i in range(hist["delegate:XnnpackBackend"]):
        hist.update(xnnpack_node_types(_extract_delegate_payload(data, "xnnpack", i)))
    return dict(hist.most_common())
