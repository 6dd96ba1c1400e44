"""TFLite/LiteRT benchmark, width 1.0 @ 256, one process, XNNPACK with 2 threads, median latencies.

(a) litert-torch on transformers' MobileViTV2 with only the patches needed to convert (pixel_unshuffle /
    pixel_shuffle patching, plain broadcast in the attention, GroupNorm as element-wise ops);
(b) our fp32 export; (c) our int8 (static, ai-edge-quantizer). Writes benchmarks/RESULTS-tflite.md.

    python benchmarks/bench_tflite.py [--runs 50] [--threads 2] [--no-profile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mvit2_export.bench.latency import measure_latency
from mvit2_export.exporters.base import ExportOptions
from mvit2_export.exporters.tflite import TFLiteExporter
from mvit2_export.exporters.tflite.convert import to_flatbuffer
from mvit2_export.exporters.tflite.flatbuffer import op_histogram
from mvit2_export.exporters.tflite.profile import op_profile
from mvit2_export.exporters.tflite.runner import make_interpreter
from mvit2_export.model import load_model
from mvit2_export.parity.run import run_parity

SIZE = 256
OUT = Path(__file__).with_name("RESULTS-tflite.md")


class _DecomposedGroupNorm(nn.Module):
    """One-group GroupNorm as mean/var element-wise ops (litert-torch has no GroupNorm lowering of its own)."""

    def __init__(self, gn: nn.GroupNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = gn.weight, gn.bias, gn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        d = x - mean
        y = d * torch.rsqrt((d * d).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


def patched_unfolding(self: Any, fm: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    b, c, h, w = fm.shape
    p = self.patch_height
    return F.pixel_unshuffle(fm, p).reshape(b, c, p * p, -1), (h, w)


def patched_folding(self: Any, patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    b, c, pp, _ = patches.shape
    p = self.patch_height
    return F.pixel_shuffle(patches.reshape(b, c * pp, size[0] // p, size[1] // p), p)


def patched_attention(self: Any, x: torch.Tensor) -> torch.Tensor:
    q, k, v = torch.split(self.qkv_proj(x), [1, self.embed_dim, self.embed_dim], dim=1)
    ctx = torch.sum(k * torch.softmax(q, dim=-1), dim=-1, keepdim=True)
    return self.out_proj(F.relu(v) * ctx)  # plain broadcast instead of expand_as


def minimal_patches() -> list[tuple[type, str, Any]]:
    """(class, attribute, replacement): the patches litert-torch needs on transformers' MobileViTV2."""
    from transformers.models.mobilevitv2 import modeling_mobilevitv2 as mm

    return [
        (mm.MobileViTV2Layer, "unfolding", patched_unfolding),
        (mm.MobileViTV2Layer, "folding", patched_folding),
        (mm.MobileViTV2LinearSelfAttention, "forward", patched_attention),
    ]


def decompose_group_norms(model: nn.Module) -> None:
    """Every GroupNorm in `model` replaced, in place, by its element-wise form."""
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(mod, child_name, _DecomposedGroupNorm(child))


def minimally_patched_transformers(ours: nn.Module) -> nn.Module:
    """transformers' classifier with our weights and the minimal conversion patches (module-level monkeypatch)."""
    import transformers

    for cls, attr, fn in minimal_patches():
        setattr(cls, attr, fn)
    cfg = transformers.MobileViTV2Config(
        width_multiplier=1.0, image_size=SIZE, num_labels=ours.config.num_labels
    )
    hf = transformers.MobileViTV2ForImageClassification(cfg).eval()
    hf.load_state_dict(ours.state_dict())
    decompose_group_norms(hf)

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.hf(pixel_values=pixel_values).logits

    return Logits().eval()


def latency(path: Path, threads: int, runs: int) -> float:
    it = make_interpreter(path, threads, "xnnpack")
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).random(d["shape"]).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    return measure_latency(it.invoke, "litert", threads, warmup=10, runs=runs).median_ms


def fmt_hist(h: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in h.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-tflite-"))
    model = load_model(None, "classification")
    ex = TFLiteExporter()
    paths: dict[str, Path] = {}
    conv_s: dict[str, float] = {}

    t0 = time.perf_counter()
    base = minimally_patched_transformers(model)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(base(x), model(x), atol=1e-4, rtol=1e-4), "patched transformers != reference"
    paths["a"] = work / "minimal.tflite"
    paths["a"].write_bytes(to_flatbuffer(base, "serving_default", "pixel_values", x))
    conv_s["a"] = time.perf_counter() - t0

    arts = {}
    for key, precision, backend in (("b", "fp32", {}), ("c", "int8", {"int8_mode": "static"})):
        t0 = time.perf_counter()
        opts = ExportOptions(precision=precision, image_size=SIZE, force=True, backend=backend)
        arts[key] = ex.export(model, opts, work / f"ours-{precision}.tflite")
        paths[key] = arts[key].path
        conv_s[key] = time.perf_counter() - t0

    hist = {k: op_histogram(p) for k, p in paths.items()}
    lat = {k: latency(p, args.threads, args.runs) for k, p in paths.items()}
    parity = {
        k: run_parity(
            model, ex.load_runner(arts[k].path, arts[k].to_entry(), args.threads), arts[k].precision, SIZE
        )
        for k in ("b", "c")
    }
    prof = {} if args.no_profile else {k: op_profile(paths[k], args.threads, 10) for k in ("a", "b", "c")}

    labels = {
        "a": "(a) litert-torch, minimally patched transformers",
        "b": "(b) ours fp32",
        "c": "(c) ours int8 static",
    }
    lines = [
        "# TFLite / LiteRT benchmark",
        "",
        f"MobileViTV2 classification, width 1.0, {SIZE}x{SIZE}, batch 1; ai-edge-litert Interpreter with the "
        f"XNNPACK delegate, {args.threads} threads, median of {args.runs} runs after 10 warm-up runs; "
        "one process (`python benchmarks/bench_tflite.py`). Shared 2-core machine: absolute numbers are noisy, "
        "ratios within one run are the signal.",
        "",
        "| model | median ms | ops | TRANSPOSE | BATCH_MATMUL | size MB | convert s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k in ("a", "b", "c"):
        h = hist[k]
        lines.append(
            f"| {labels[k]} | {lat[k]:.2f} | {sum(h.values())} | {h.get('TRANSPOSE', 0)} | "
            f"{h.get('BATCH_MATMUL', 0)} | {paths[k].stat().st_size / 1e6:.1f} | {conv_s[k]:.0f} |"
        )
    lines += [
        "",
        f"- ours fp32 / (a): **{lat['b'] / lat['a']:.2f}** (target <= 0.8)",
        f"- int8 speed-up over our fp32: **{lat['b'] / lat['c']:.2f}x** (target >= 2x)",
        "",
        "## Parity (PyTorch reference, 10 photos + 2 random images)",
        "",
    ]
    for k in ("b", "c"):
        m = parity[k].metrics["logits"]
        lines.append(
            f"- {labels[k]}: max_abs_rel {m.get('max_abs_rel', float('nan')):.2e}, cosine {m.get('cosine', float('nan')):.6f}, "
            f"top-1 agreement {m.get('top1', float('nan'))} (gated: {parity[k].gated})"
        )
    lines += ["", "## Op histograms", ""]
    for k in ("a", "b", "c"):
        lines.append(f"- {labels[k]}: {fmt_hist(hist[k])}")
    if prof:
        lines += [
            "",
            "## Per-op profile (each op cut out into a one-op model, XNNPACK, summed median ms by type)",
            "",
        ]
        for k in ("a", "b", "c"):
            by_type, rows = prof[k]
            total = sum(by_type.values())
            top = ", ".join(f"{t} {v:.2f}" for t, v in list(by_type.items())[:10])
            lines.append(f"- {labels[k]}: sum {total:.2f} ms (whole model {lat[k]:.2f}); {top}")
            slow = "; ".join(
                f"#{r['index']} {r['op']} {[int(d) for d in r['out_shape']]} {r['ms']:.2f}" for r in rows[:8]
            )
            lines.append(f"  - slowest ops: {slow}")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
