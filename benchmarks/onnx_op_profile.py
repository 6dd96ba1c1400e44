"""Where onnxruntime spends the time: per-op-type kernel time of our fp32 export and of the plain dynamo export.

    python benchmarks/onnx_op_profile.py [--threads 2] [--runs 60] [--out benchmarks/RESULTS-onnx-profile.md]

Width 1.0 at 256, batch 1, onnxruntime's own profiler (SessionOptions.enable_profiling), both sessions
in one process taking turns. The op types both graphs run with the same kernels on the same shapes (the
64 convolutions, SiLU fused to QuickGelu, the NCHWc reorders around them) are what a rewrite of the
attention cannot remove: (plain's shared kernel time / plain's total) is the best ratio to the plain
export such a rewrite could reach, if everything else cost nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
from bench_onnx import export_plain, hf_model

from mvit2_export import export, load_model

# Same kernels, same shapes in both graphs (ORT's fusions included): what a graph rewrite cannot remove.
SHARED = ("Conv", "QuickGelu", "ReorderInput", "ReorderOutput")


def profile(
    paths: dict[str, Path], threads: int, runs: int, work: Path
) -> dict[str, tuple[Counter, Counter]]:
    """Kernel microseconds per run and node count per op type, from onnxruntime's profiler. The sessions
    take turns run by run, so a slow spell of this shared machine hits both alike."""
    sessions = {}
    for name, path in paths.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.enable_profiling, so.profile_file_prefix = True, str(work / name)
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sessions[name] = (
            sess,
            {sess.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, 256, 256), np.float32)},
        )
    for _ in range(runs + 5):  # the profile covers the 5 warm-up runs too: dropped below by count
        for sess, feed in sessions.values():
            sess.run(None, feed)
    out = {}
    for name, (sess, _) in sessions.items():
        events = json.loads(Path(sess.end_profiling()).read_text())
        per_run: Counter[str] = Counter()
        nodes: Counter[str] = Counter()
        seen: Counter[str] = Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                op = e["args"]["op_name"]
                seen[e["name"]] += 1
                if seen[e["name"]] > 5:  # skip each node's warm-up calls
                    per_run[op] += e["dur"] / runs
                if seen[e["name"]] == 1:
                    nodes[op] += 1
        out[name] = (per_run, nodes)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-onnx-profile.md"))
    args = ap.parse_args()
    model = load_model(None, "classification")
    work = Path(tempfile.mkdtemp(prefix="onnx-profile-"))
    paths = {"plain": export_plain(hf_model(model.config), 256, work / "plain.onnx")}
    manifest = export(model, "onnx", work / "ours", "fp32", check=False)
    paths["ours"] = work / "ours" / manifest.artifacts[0].path
    prof = profile(paths, args.threads, args.runs, work)
    total = {k: sum(v[0].values()) / 1e3 for k, v in prof.items()}
    shared = {k: sum(v[0][op] for op in SHARED) / 1e3 for k, v in prof.items()}
    ops = sorted(
        set(prof["plain"][0]) | set(prof["ours"][0]), key=lambda o: -max(p[0][o] for p in prof.values())
    )
    lines = [
        "# onnxruntime per-op profile: our fp32 export vs the plain dynamo export (width 1.0, 256, batch 1)",
        "",
        f"onnxruntime {ort.__version__}, CPU, {args.threads} threads, {args.runs} runs after 5 warm-up, the two "
        f"sessions taking turns; "
        f"{platform.processor() or platform.machine()}. Kernel time per run, summed per op type.",
        "",
        "| op type | plain ms | plain nodes | ours ms | ours nodes |",
        "|---|---:|---:|---:|---:|",
    ]
    for op in ops:
        cells = [f"{prof[k][0][op] / 1e3:.2f} | {prof[k][1][op]}" for k in ("plain", "ours")]
        lines.append(f"| {op}{' (shared)' if op in SHARED else ''} | {' | '.join(cells)} |")
    lines += [
        f"| **total** | **{total['plain']:.2f}** | | **{total['ours']:.2f}** | |",
        "",
        f"- ours / plain, kernel time: {total['ours'] / total['plain']:.3f}",
        f"- shared kernels ({', '.join(SHARED)}): plain {shared['plain']:.2f} ms, ours {shared['ours']:.2f} ms",
        f"- best ratio a rewrite of the rest could reach = plain's shared kernels / plain's total: "
        f"**{shared['plain'] / total['plain']:.3f}** (the issue's target is 0.90)",
        f"- everything else in plain (what a rewrite can remove): {total['plain'] - shared['plain']:.2f} ms; "
        f"in ours: {total['ours'] - shared['ours']:.2f} ms",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
