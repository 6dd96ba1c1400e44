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


def read_bytes(path: Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) < 8 or data[4:6] != b"ET":  # flatbuffer file identifier "ET12"-style
        raise UsageError(f"{path}: not an ExecuTorch .pte file (no ET program identifier)")
    return data


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON the exporter stored; {} for a .pte we did not write."""
    from executorch.runtime import Runtime

    data = read_bytes(path)
    try:
        program = Runtime.get().load_program(data)
        if METADATA_METHOD not in program.method_names:
            return {}
        (blob,) = program.load_method(METADATA_METHOD).execute([])
    except Exception as exc:
        raise UsageError(f"{path}: ExecuTorch cannot load the program ({first_line(exc)})") from exc
    return json.loads(bytes(blob.numpy()).decode())


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


def op_histogram(path: Path) -> dict[str, int]:
    """`delegate:<Backend>` per delegate call, `kernel:<op>` per portable-kernel call, and the XNNPACK
    node types inside XNNPACK delegates (`XNNConv2d`, `XNNStaticTranspose`, ...)."""
    from executorch.exir._serialize._program import _extract_delegate_payload

    data = read_bytes(path)
    program = _program(data)
    plan = next(p for p in program.execution_plan if p.name == "forward")
    hist: Counter[str] = Counter()
    xnnpack = 0
    for chain in plan.chains:
        for ins in chain.instructions:
            args = ins.instr_args
            kind = type(args).__name__
            if kind == "DelegateCall":
                backend = plan.delegates[args.delegate_index].id
                hist[f"delegate:{backend}"] += 1
                if backend == "XnnpackBackend":
                    hist.update(xnnpack_node_types(_extract_delegate_payload(data, "xnnpack", xnnpack)))
                    xnnpack += 1
            elif kind == "KernelCall":
                hist[f"kernel:{plan.operators[args.op_index].name}"] += 1
    return dict(hist.most_common())
