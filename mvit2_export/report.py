"""`OUT/report.md` and `OUT/report.png`: every artifact's parity and latency, and latency by backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import ArtifactEntry, Manifest


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def parity_summary(entry: ArtifactEntry) -> dict[str, Any]:
    parity = entry.parity or {}
    metrics = parity.get("metrics") or {}
    primary = next(iter(metrics.values()), {})
    status = "not checked"
    if parity:
        status = parity.get("status") or ("pass" if parity.get("passed") else "FAIL")
        if parity.get("error"):
            status = "error"
        elif status != "degenerate" and not parity.get("gated", True):
            status = "reported (ungated)"
    heldout = parity.get("heldout") or {}
    return {
        "status": status,
        "heldout": heldout.get("agreement"),  # the int8 gate's number (held-out images)
        "max_abs_rel": primary.get("max_abs_rel"),
        "cosine": primary.get("cosine"),
        "top1": primary.get("top1", primary.get("pixel_agreement")),
        "runtime": parity.get("runtime", entry.runtime),
    }


def device_latency_lines(manifest: Manifest) -> list[str]:
    """`bench --device android|mac` results: a row per artifact and device setting (times in ms)."""
    rows = []
    for a in manifest.artifacts:
        dev = a.device_latency or {}
        if r := dev.get("android"):
            s, mem = r.get("inference") or {}, (r.get("memory_mb") or {}).get("overall")
            ms = lambda key, s=s: _fmt(None if s.get(key) is None else s[key] / 1e3, ".2f")  # noqa: E731
            rows.append(
                f"| `{a.path}` | {r.get('device')} (Android {r.get('android_version')}) "
                f"| benchmark_model, {r['delegate']}, {r['threads']} threads "
                f"| {r['inference_avg_us'] / 1e3:.2f} avg, std {ms('std')}, min {ms('min')}, max {ms('max')} "
                f"| init {r['init_us'] / 1e3:.1f} | {_fmt(mem)} |"
            )
        mac = dev.get("mac") or {}
        for units, r in (mac.get("compute_units") or {}).items():
            rows.append(
                f"| `{a.path}` | {mac.get('device')} | MLModel.predict, {units} "
                f"| {r['median_ms']:.2f} median, p90 {r['p90_ms']:.2f} | load {r['load_s'] * 1e3:.0f} | - |"
            )
    if not rows:
        return []
    header = "| artifact | device | runtime | latency (ms) | init / load (ms) | memory (MB) |"
    return ["", "## On-device latency", "", header, "|---|---|---|---|---|---|", *rows]


def render_markdown(manifest: Manifest) -> str:
    m = manifest.model
    lines = [
        "# mvit2-export report",
        "",
        f"Model: MobileViTV2 width {width_label(m['width_multiplier'])}, {m['task']}, {m['image_size']}x{m['image_size']}, "
        f"source `{m.get('checkpoint_source')}`"
        + (" (**untrained: random weights**)" if m.get("untrained") else ""),
        *_parameter_line(m),
        "",
        "| artifact | target | precision | runtime | parity | max abs / scale | cosine | top-1 / pixel agr. "
        "| held-out agr. | latency median (ms) | size (MB) | audit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in manifest.artifacts:
        s = parity_summary(a)
        lat = (a.latency or {}).get("median_ms")
        audit = (
            "ok"
            if (a.audit or {}).get("elementwise_attention")
            else f"violations {(a.audit or {}).get('violations')}"
        )
        lines.append(
            f"| `{a.path}` | {a.target} | {a.precision} | {s['runtime']} | {s['status']} "
            f"| {_fmt(s['max_abs_rel'])} | {_fmt(s['cosine'], '.6f')} | {_fmt(s['top1'])} "
            f"| {_fmt(s['heldout'], '.4f')} | {_fmt(lat, '.2f')} | {_size_mb(a)} | {audit} |"
        )
    lines += int8_lines(manifest)
    ref = manifest.reference_latency
    if ref:
        lines += [
            "",
            f"PyTorch eager reference: {ref['median_ms']:.2f} ms median ({ref['threads']} threads).",
            "",
            "Threading: each runtime measured at its best configuration on this host (thread counts and "
            "runtime wait policies searched unless `bench --threads` pinned them):",
            "",
            *[
                f"- `{a.path}`: {_threading(a.latency)}"
                for a in manifest.artifacts
                if (a.latency or {}).get("median_ms") is not None
            ],
            f"- PyTorch eager: {_threading(ref)}",
        ]
        host = manifest.host
        if host:
            lines += [
                "",
                f"Host: {host.get('cpu')}; ISA {', '.join(host.get('isa') or []) or '-'}; "
                f"{host.get('usable_cores')} usable cores.",
            ]
    lines += device_latency_lines(manifest)
    lines += [
        "",
        "Thresholds: fp32 max abs <= 1e-4 x max|ref|; fp16 cosine >= 0.9999 and top-1 100% (parity "
        "photos); int8: the held-out gate below (gated on trained weights only; parity-photo numbers "
        "are reported).",
        "",
    ]
    return "\n".join(lines)


def int8_lines(manifest: Manifest) -> list[str]:
    """The held-out gate, and per int8 artifact the configurations its search tried and the layer
    groups' sensitivity (exporters/int8_search.py)."""
    gate = manifest.model.get("int8_gate")
    if not gate:
        return []
    lines = [
        "",
        "## int8 accuracy gate",
        "",
        f"Held-out images: {gate.get('source') or 'not run (--no-check)'}. Gate: agreement with the "
        f"fp32 reference >= {gate['min_agreement']:g} on each half of them (alternate images) and, for "
        "a classifier or segmenter on enough images (a segmenter's counted in mosaics), with 95% "
        "confidence (its lower bound)"
        + (f", accuracy drop <= {gate['max_accuracy_drop']:g}" if gate.get("validation_images") else "")
        + ("" if gate.get("enforced") else " (reported, not enforced: untrained weights)")
        + f"; int8 ISA {gate.get('int8_isa')}.",
    ]
    calibration = manifest.model.get("int8_calibration")
    if calibration:
        skipped = calibration.get("skipped_files")
        lines += [
            "",
            f"Calibration images: {calibration['source']}, {calibration['images']} used"
            + (f", {skipped} file(s) skipped (not an image or unreadable)" if skipped else "")
            + ".",
        ]
    for a in manifest.artifacts:
        search = (a.options or {}).get("int8_search")
        if not search:
            continue
        lines += [
            "",
            f"### `{a.path}`: {search['why']}",
            "",
            "| configuration | held-out agreement | lowest half | 95% lower bound | meets gate | judged by "
            "| latency (ms, this host, batch 1) |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, t in enumerate(search["trials"]):
            name = "all int8" if not t["float_groups"] else f"{t['float_groups']} group(s) float"
            name = f"{t['recipe']}: {name}" if t.get("recipe") else name
            mark = " (chosen)" if i == search["chosen"] else ""
            ms = "–" if t.get("latency_ms") is None else f"{t['latency_ms']:.2f}"
            # a trial the gate stopped once a half could no longer meet it: numbers of the images run
            part = f" (first {t['n_images']} of {t['stopped_early_of']})" if t.get("stopped_early_of") else ""
            bound = "–" if t.get("lower_bound") is None else f"{t['lower_bound']:.4f}"
            lines.append(
                f"| {name}{mark} | {t['agreement']:.4f}{part} | {t.get('lowest_half', t['agreement']):.4f} "
                f"| {bound} | {'yes' if t['met'] else 'no'} "
                f"| {t.get('judge', 'artifact')} | {ms} |"
            )
        if search.get("sensitivity"):
            lines += [
                "",
                "Sensitivity (only this group int8, the rest float; output SQNR vs fp32 on calibration-band "
                "images; lowest first):",
                "",
                "| layer group | SQNR (dB) | kept float |",
                "|---|---|---|",
            ]
            chosen = set(search["float_groups"])
            lines += [
                f"| {g['name']} | {g['score']:.1f} | {'yes' if g['name'] in chosen else ''} |"
                for g in search["sensitivity"]
            ]
    return lines


def _parameter_line(model: dict[str, Any]) -> list[str]:
    n = model.get("parameters")
    return [] if not n else ["", f"Parameters: {n:,} (at 4 bytes each, fp32: {4 * n / 1e6:.2f} MB)."]


def _size_mb(entry: ArtifactEntry) -> str:
    size = entry.size_bytes
    return "-" if size is None else f"{size / 1e6:.2f}"


def _threading(lat: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in (lat.get("settings") or {}).items())
    tried = len(lat.get("tried") or [])
    return (
        f"{lat.get('threads')} threads"
        + (f", {settings}" if settings else "")
        + (f" (best of {tried} tried)" if tried > 1 else "")
    )


def width_label(width: float) -> str:
    """1.0 -> "1.0", 0.75 -> "0.75": the way MobileViTV2 widths are published (mobilevitv2-1.0-...)."""
    text = f"{width:g}"
    return text if "." in text else f"{text}.0"


@dataclass
class PlotPoint:
    label: str
    target: str
    latency_ms: float | None
    quality: float | None  # top-1 / pixel agreement with the reference, or cosine for a backbone
    status: str
    reference: bool = False


def quality_metric(task: str) -> str:
    return {"backbone": "cosine with PyTorch", "segmentation": "pixel agreement with PyTorch"}.get(
        task, "top-1 agreement with PyTorch"
    )


def plot_points(manifest: Manifest) -> list[PlotPoint]:
    """One point per artifact (latency None when not timed on this host) and the PyTorch reference."""
    backbone = manifest.model["task"] == "backbone"
    points = []
    ref = manifest.reference_latency
    if ref:
        points.append(PlotPoint("PyTorch eager fp32 (reference)", "pytorch", ref["median_ms"], 1.0, "", True))
    for a in manifest.artifacts:
        s = parity_summary(a)
        quality = s["heldout"] if s["heldout"] is not None else (s["cosine"] if backbone else s["top1"])
        latency = (a.latency or {}).get("median_ms")
        points.append(PlotPoint(f"{a.target} {a.precision}", a.target, latency, quality, s["status"]))
    return points


REFERENCE_COLOR = "#333333"


def target_color(target: str) -> str:
    """The color its exporter declares (a manifest may name a target this install does not register)."""
    from .exporters import registered

    cls = registered().get(target)
    return cls.color if cls else "#777777"


STATUS_COLORS = {"pass": "#55A868", "FAIL": "#C44E52", "error": "#C44E52", "degenerate": "#DD8452"}


def build_figure(manifest: Manifest):
    """report.png: parity against latency (log scale: one slow runner does not squash the rest), one
    point per timed artifact with the reference marked, beside every artifact's parity as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    m = manifest.model
    metric = quality_metric(m["task"])
    points = plot_points(manifest)
    timed = [p for p in points if p.latency_ms is not None and p.quality is not None]
    artifacts = [p for p in points if not p.reference]
    rows = max(len(artifacts), 2)
    searches = [
        (a, a.options["int8_search"]) for a in manifest.artifacts if (a.options or {}).get("int8_search")
    ]
    panels = (2 if timed else 1) + bool(searches)
    fig, axes = plt.subplots(
        1, panels, figsize=(6 * panels if timed else 7 + 5 * bool(searches), 0.45 * rows + 2.2), squeeze=False
    )
    if searches:
        _plot_searches(axes[0][panels - 1], searches, metric)
    known = [p.quality for p in points if p.quality is not None]
    low = min(known, default=1.0)
    lower = max(0.0, low - max(0.1 * (1.0 - low), 0.005))
    if timed:
        ax = axes[0][0]
        same_row: dict[float, int] = {}  # labels of points at one quality alternate above and below
        for p in sorted(timed, key=lambda p: p.latency_ms):
            i = same_row[round(p.quality, 3)] = same_row.get(round(p.quality, 3), -1) + 1
            failed = p.status in ("FAIL", "error", "degenerate")
            color = REFERENCE_COLOR if p.reference else target_color(p.target)
            ax.scatter(
                p.latency_ms,
                p.quality,
                s=180 if p.reference else 70,
                marker="*" if p.reference else ("X" if failed else "o"),
                facecolors="none" if p.status == "reported (ungated)" else color,
                edgecolors=color,
                linewidths=1.5,
                zorder=3,
            )
            ax.annotate(
                p.label,
                (p.latency_ms, p.quality),
                textcoords="offset points",
                xytext=(-8, 6) if p.reference else (6, 5 if i % 2 == 0 else -11),
                ha="right" if p.reference else "left",
                fontsize=8,
            )
        ref = next((p for p in timed if p.reference), None)
        if ref:
            ax.axvline(ref.latency_ms, color=REFERENCE_COLOR, linestyle="--", linewidth=0.8)
        fastest, slowest = min(p.latency_ms for p in timed), max(p.latency_ms for p in timed)
        ax.set_xlim(fastest / 1.4, slowest * 1.4)
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        if slowest / fastest < 10:  # within a decade the minor ticks are the only labels
            ax.xaxis.set_minor_formatter(plain)
            ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("median latency (ms, log scale), batch 1, this host")
        ax.set_ylabel(metric)
        ax.set_ylim(lower, 1.0 + (1.0 - lower) * 0.08)
        ax.grid(True, which="both", alpha=0.3)
        untimed = [p.label for p in artifacts if p.latency_ms is None]
        if untimed:
            ax.text(
                0.01,
                0.01,
                "not timed on this host: " + ", ".join(untimed),
                transform=ax.transAxes,
                fontsize=7,
            )
        ax.set_title("parity against latency (x: failed, hollow: not gated)")
    ax = axes[0][1 if timed else 0]
    if artifacts:
        values = [p.quality if p.quality is not None else lower for p in artifacts]
        ax.barh(
            [p.label for p in artifacts],
            [v - lower for v in values],
            left=lower,
            color=[STATUS_COLORS.get(p.status, "#8C8C8C") for p in artifacts],
        )
        for i, (p, v) in enumerate(zip(artifacts, values, strict=True)):
            text = "-" if p.quality is None else f"{p.quality:.4f}"
            ax.text(v, i, f" {text} {p.status}", va="center", fontsize=8)
        ax.set_xlim(lower, 1.0 + (1.0 - lower) * 0.35)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
    else:
        ax.set_axis_off()
    ax.set_title("parity per artifact" + ("" if timed else " (latency: run `mvit2-export bench OUT`)"))
    fig.suptitle(f"MobileViTV2 {width_label(m['width_multiplier'])} {m['task']} @ {m['image_size']}")
    fig.tight_layout()
    return fig


def _plot_searches(ax: Any, searches: list[tuple[ArtifactEntry, dict[str, Any]]], metric: str) -> None:
    """The int8 configurations each mixed-precision search tried: held-out agreement against the quick
    latency measured during the export, the gate as a line, the chosen one filled."""
    for entry, search in searches:
        color = target_color(entry.target)
        # trials judged on a stand-in (simulated int8, the MIL interpreter) have no latency to plot
        timed = [(i, t) for i, t in enumerate(search["trials"]) if t.get("latency_ms") is not None]
        xs = [t["latency_ms"] for _, t in timed]
        ys = [t["agreement"] for _, t in timed]
        ax.plot(xs, ys, color=color, alpha=0.4, linewidth=1)
        for i, t in timed:
            chosen = i == search["chosen"] and t["met"]
            ax.scatter(
                t["latency_ms"], t["agreement"], s=60, color=color, facecolors=color if chosen else "none"
            )
            ax.annotate(  # "*": the gate stopped once a half missed; agreement of the images run
                f"{t['float_groups']}f" + ("*" if t.get("stopped_early_of") else ""),
                (t["latency_ms"], t["agreement"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        gate = search["trials"][0].get("min_agreement")
        if gate is not None:
            ax.axhline(gate, color="#555555", linestyle=":", linewidth=0.8)
    ax.set_xlabel("latency (ms, quick timing during export)")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title("int8 search: layer groups float (Nf; *: stopped early), filled = chosen")
    ax.grid(True, alpha=0.3)


def render_plot(manifest: Manifest, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = build_figure(manifest)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_report(out_dir: Path, manifest: Manifest) -> None:
    md = out_dir / "report.md"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text(render_markdown(manifest))
    tmp.replace(md)
    render_plot(manifest, out_dir / "report.png")
