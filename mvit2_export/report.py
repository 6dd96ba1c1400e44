"""`OUT/report.md` and `OUT/report.png`: every artifact's parity and latency, and latency by backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def parity_summary(entry: dict[str, Any]) -> dict[str, Any]:
    parity = entry.get("parity") or {}
    metrics = parity.get("metrics") or {}
    primary = next(iter(metrics.values()), {})
    status = "not checked"
    if parity:
        status = parity.get("status") or ("pass" if parity.get("passed") else "FAIL")
        if parity.get("error"):
            status = "error"
        elif status != "degenerate" and not parity.get("gated", True):
            status = "reported (ungated)"
    return {
        "status": status,
        "max_abs_rel": primary.get("max_abs_rel"),
        "cosine": primary.get("cosine"),
        "top1": primary.get("top1", primary.get("pixel_agreement")),
        "runtime": parity.get("runtime", entry.get("runtime")),
    }


def device_latency_lines(manifest: dict[str, Any]) -> list[str]:
    """`bench --device android|mac` results: a row per artifact and device setting (times in ms)."""
    rows = []
    for a in manifest["artifacts"]:
        dev = a.get("device_latency") or {}
        if r := dev.get("android"):
            s, mem = r.get("inference") or {}, (r.get("memory_mb") or {}).get("overall")
            ms = lambda key, s=s: _fmt(None if s.get(key) is None else s[key] / 1e3, ".2f")  # noqa: E731
            rows.append(
                f"| `{a['path']}` | {r.get('device')} (Android {r.get('android_version')}) "
                f"| benchmark_model, {r['delegate']}, {r['threads']} threads "
                f"| {r['inference_avg_us'] / 1e3:.2f} avg, std {ms('std')}, min {ms('min')}, max {ms('max')} "
                f"| init {r['init_us'] / 1e3:.1f} | {_fmt(mem)} |"
            )
        mac = dev.get("mac") or {}
        for units, r in (mac.get("compute_units") or {}).items():
            rows.append(
                f"| `{a['path']}` | {mac.get('device')} | MLModel.predict, {units} "
                f"| {r['median_ms']:.2f} median, p90 {r['p90_ms']:.2f} | load {r['load_s'] * 1e3:.0f} | - |"
            )
    if not rows:
        return []
    header = "| artifact | device | runtime | latency (ms) | init / load (ms) | memory (MB) |"
    return ["", "## On-device latency", "", header, "|---|---|---|---|---|---|", *rows]


def render_markdown(manifest: dict[str, Any]) -> str:
    m = manifest["model"]
    lines = [
        "# mvit2-export report",
        "",
        f"Model: MobileViTV2 width {m['width_multiplier']:g}, {m['task']}, {m['image_size']}x{m['image_size']}, "
        f"source `{m.get('checkpoint_source')}`"
        + (" (**untrained: random weights**)" if m.get("untrained") else ""),
        "",
        "| artifact | target | precision | runtime | parity | max abs / scale | cosine | top-1 / pixel agr. "
        "| latency median (ms) | audit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in manifest["artifacts"]:
        s = parity_summary(a)
        lat = (a.get("latency") or {}).get("median_ms")
        audit = (
            "ok"
            if (a.get("audit") or {}).get("elementwise_attention")
            else f"violations {a.get('audit', {}).get('violations')}"
        )
        lines.append(
            f"| `{a['path']}` | {a['target']} | {a['precision']} | {s['runtime']} | {s['status']} "
            f"| {_fmt(s['max_abs_rel'])} | {_fmt(s['cosine'], '.6f')} | {_fmt(s['top1'])} | {_fmt(lat, '.2f')} | {audit} |"
        )
    ref = manifest.get("reference_latency")
    if ref:
        lines += [
            "",
            f"PyTorch eager reference: {ref['median_ms']:.2f} ms median ({ref['threads']} threads).",
            "",
            "Threading: each runtime measured at its best configuration on this host (thread counts and "
            "runtime wait policies searched unless `bench --threads` pinned them):",
            "",
            *[
                f"- `{a['path']}`: {_threading(a['latency'])}"
                for a in manifest["artifacts"]
                if (a.get("latency") or {}).get("median_ms") is not None
            ],
            f"- PyTorch eager: {_threading(ref)}",
        ]
        host = manifest.get("host")
        if host:
            lines += [
                "",
                f"Host: {host.get('cpu')}; ISA {', '.join(host.get('isa') or []) or '-'}; "
                f"{host.get('usable_cores')} usable cores.",
            ]
    lines += device_latency_lines(manifest)
    lines += [
        "",
        "Thresholds: fp32 max abs <= 1e-4 x max|ref|; fp16 cosine >= 0.9999 and top-1 100%; "
        "int8 top-1 >= 99% (gated on trained weights only).",
        "",
    ]
    return "\n".join(lines)


def _threading(lat: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in (lat.get("settings") or {}).items())
    tried = len(lat.get("tried") or [])
    return (
        f"{lat.get('threads')} threads"
        + (f", {settings}" if settings else "")
        + (f" (best of {tried} tried)" if tried > 1 else "")
    )


def render_plot(manifest: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, colors = [], [], []
    palette = {"onnx": "#4C72B0", "coreml": "#55A868", "tflite": "#C44E52", "pytorch": "#8C8C8C"}
    ref = manifest.get("reference_latency")
    if ref:
        labels.append("pytorch fp32")
        values.append(ref["median_ms"])
        colors.append(palette["pytorch"])
    for a in manifest["artifacts"]:
        lat = (a.get("latency") or {}).get("median_ms")
        if lat is not None:
            labels.append(f"{a['target']} {a['precision']}")
            values.append(lat)
            colors.append(palette.get(a["target"], "#333333"))
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(labels), 2) + 1.2))
    if values:
        ax.barh(labels, values, color=colors)
        ax.set_xlabel("median latency (ms), batch 1, this host")
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no latency measured yet: run `mvit2-export bench OUT`", ha="center", va="center")
        ax.set_axis_off()
    m = manifest["model"]
    ax.set_title(f"MobileViTV2 {m['width_multiplier']:g} {m['task']} @ {m['image_size']}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_report(out_dir: Path, manifest: dict[str, Any]) -> None:
    md = out_dir / "report.md"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text(render_markdown(manifest))
    tmp.replace(md)
    render_plot(manifest, out_dir / "report.png")
