"""Accuracy-aware mixed precision, the same loop for every target: quantize everything, and while the
held-out gate is missed keep the most sensitive layer groups in float, one more group each step (then
two), until the gate holds; the configuration kept is the first that holds it (the fewest float layers,
so the fastest: every float group adds work and Q/DQ pairs; each trial's latency is measured and kept).

Sensitivity is measured, one group at a time: the model with only that group int8 (the rest float), its
outputs against the fp32 artifact's on calibration-band images (never the gate's held-out images, so
the ranking is not tuned on what it is gated on), as SQNR in dB; the lowest SQNR is the most sensitive.
Groups are contiguous runs of the quantizable ops in execution order (`GROUPS`).

Measured on the trained 128 px fixture (ONNX, 500 held-out crops; all-int8 0.976): ranking single
tensors by onnxruntime's QDQ debugging helper (qdq_loss_debug, local SQNR before/after each Q/DQ) found
nothing: with 112 of 224 tensors float, agreement was 0.986. The group ablation found the stem and first
stage (high resolution, small channel counts) and one float group of 12 met 0.99.

Why a hand-written loop and not one library's: NNCF's `quantize_with_accuracy_control` (ONNX backend,
nncf 3.4) covers ONNX only, measured the same all-int8 agreement as onnxruntime's quantizer (97.2% vs
97.4% of 500 held-out crops, 64 px fixture), and its ranking re-validates per item; aimet-onnx 2.42
requires torch 2.14 with a CUDA build (it cannot install beside torch 2.13); neural-compressor 3.x moved
its ONNX path out of the package. ai-edge-quantizer (per-op recipes) and coremltools.optimize (op
selection) select ops but have no search. The backends' own quantizers do every quantization.

A backend may offer a second recipe, searched the same way only when every configuration of its own
misses (`search_in_turn`). Every target offers the same one (`search_recipes`): convolutions-only
int8, when its quantizer's full recipe, which also quantizes the element-wise ops, cannot reach the
gate with half its groups float.

Where building an artifact is what costs (ExecuTorch: an int8 lowering is ~90 s), the search judges
configurations on a cheaper stand-in of the same quantization (`runner_for` may return any Runner, e.g.
PT2E's simulated int8 in torch) and `confirm` builds the configuration that met the gate for real and
gates it in its own runtime; a miss there sends the search on to the next configuration.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GateNotMetError
from ..progress import step
from .base import Gate, GateVerdict, Runner

GROUPS = 12  # layer groups the search ranks and keeps float (a group of ~5-25 ops at these widths)
MAX_FLOAT_GROUPS = 6  # beyond half the layers in float, int8 has lost what it is for
RANK_IMAGES = 16  # calibration-band images the ranking runs per group
CONVS_ONLY = "convolutions only (element-wise ops float)"  # every target's second recipe (search_recipes)


@dataclass
class Sensitivity:
    """One layer (or tensor) the search can keep in float: the backend node names that keeps float,
    and its score (lower = more sensitive: SQNR in dB of the outputs with only this group int8)."""

    name: str
    nodes: list[str]
    score: float
    measure: str = "SQNR dB"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": round(float(self.score), 3), "measure": self.measure}


@dataclass
class Trial:
    float_layers: list[str]
    verdict: GateVerdict  # the held-out gate's result on this configuration (parity/gate.py GateResult)
    latency_ms: float | None  # None: judged on a stand-in whose speed says nothing about the artifact's
    judge: str = "artifact"  # what ran the held-out images: the artifact, or a stand-in (say which)
    recipe: str = ""  # which quantization recipe ("" = the backend's full one; see search_in_turn)

    @property
    def agreement(self) -> float:
        return self.verdict.agreement

    @property
    def met(self) -> bool:
        return self.verdict.met

    @property
    def gate(self) -> dict[str, Any]:
        return self.verdict.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "float_groups": len(self.float_layers),
            "names": self.float_layers,
            "agreement": self.agreement,
            "lowest_half": self.gate.get("lowest_half", self.agreement),
            **({"lower_bound": self.gate["lower_bound"]} if self.gate.get("lower_bound") is not None else {}),
            "met": self.met,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "min_agreement": self.gate.get("min_agreement"),
            "n_images": self.gate.get("n_images"),
            # the gate stopped at n_images of this many: a half could no longer meet it (parity/gate.py)
            **(
                {"stopped_early_of": self.gate["stopped_early_of"]} if "stopped_early_of" in self.gate else {}
            ),
            "judge": self.judge,
            **({"recipe": self.recipe} if self.recipe else {}),
        }


@dataclass
class SearchResult:
    path: Any  # the chosen artifact (a file), or what `confirm` returned for it
    trials: list[Trial]
    sensitivity: list[Sensitivity] = field(default_factory=list)
    chosen: int = 0  # index into trials

    def float_nodes(self) -> list[str]:
        """The backend node names the chosen configuration keeps float (beyond the backend's own)."""
        chosen = set(self.trials[self.chosen].float_layers)
        return [n for s in self.sensitivity if s.name in chosen for n in s.nodes]

    def to_dict(self) -> dict[str, Any]:
        chosen = self.trials[self.chosen]
        why = (
            "all-int8 met the held-out gate"
            if not chosen.float_layers
            else f"the {len(chosen.float_layers)} most sensitive layer group(s) (output "
            f"{self.sensitivity[0].measure} with only that group int8) kept float: the fewest that "
            "meet the held-out gate"
        )
        if chosen.recipe:
            why = f"{chosen.recipe}: {why}"
        return {
            "float_groups": chosen.float_layers,
            "why": why,
            "trials": [t.to_dict() for t in self.trials],
            "chosen": self.chosen,
            "sensitivity": [s.to_dict() for s in self.sensitivity],
        }


def latency_ms(runner: Runner, sample: np.ndarray, budget_s: float = 0.6, max_runs: int = 30) -> float:
    """Median batch-1 latency over a short budget (after one warm-up): a comparison between the trials of
    one search on one host, not a benchmark (benchmarks/ measures those)."""
    runner.run(sample)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        runner.run(sample)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def groups_of(nodes: list[str], n: int = GROUPS) -> list[tuple[str, list[str]]]:
    """`nodes` (quantizable, execution order) in n contiguous groups, named by position."""
    n = max(1, min(n, len(nodes)))
    out = []
    for i in range(n):
        chunk = nodes[i * len(nodes) // n : (i + 1) * len(nodes) // n]
        if chunk:
            out.append((f"group {i + 1}/{n} ({chunk[0]} .. {chunk[-1]}, {len(chunk)} ops)", chunk))
    return out


def output_sqnr(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Signal-to-noise of all outputs in dB (inf when identical)."""
    sig = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    noise = sum(float(np.sum((r.astype(np.float64) - g) ** 2)) for r, g in zip(ref, got, strict=True))
    if not np.isfinite(noise):
        return -math.inf
    return math.inf if noise == 0 else 10 * math.log10(max(sig, 1e-30) / noise)


def discard(candidate: Any) -> None:
    """Delete a candidate that is a file or a package folder; in-memory candidates go out of scope."""
    if isinstance(candidate, Path):
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)


def rank_groups(
    groups: list[tuple[str, list[str]]],
    quantize: Callable[[list[str]], Any],
    runner_for: Callable[[Any], Runner],
    reference: list[np.ndarray],
    images: np.ndarray,
) -> list[Sensitivity]:
    """Each group alone in int8 (every other group float), most harmful first."""
    ranked = []
    everything = [n for _, nodes in groups for n in nodes]
    for name, nodes in groups:
        own = set(nodes)
        candidate = quantize([n for n in everything if n not in own])
        got = runner_for(candidate).run(images)
        ranked.append(Sensitivity(name, nodes, output_sqnr(reference, got)))
        discard(candidate)
    return sorted(ranked, key=lambda s: s.score)


Confirm = Callable[[list[str]], tuple[Any, Runner]]


def search(
    quantize: Callable[[list[str]], Any],
    runner_for: Callable[[Any], Runner],
    nodes: list[str],
    fp32: Runner,
    rank_images: np.ndarray,
    gate: Gate,
    label: str,
    confirm: Confirm | None = None,
    judge: str = "artifact",
    timed: bool = True,
    recipe: str = "",
) -> SearchResult:
    """The first configuration (all-int8, then the 1, 2, 3, 4, 6 most sensitive groups in float) whose
    held-out numbers meet the gate. Raises GateNotMetError when none does and the gate is enforced; when
    it is not (untrained weights) all-int8 is kept and its numbers reported. `fp32` runs the float
    artifact (the ranking's reference); `quantize(float_nodes)` builds a candidate (a new file each
    call, or an in-memory stand-in) that `runner_for` runs.

    With `confirm`, the candidates are a stand-in named by `judge` (their latency is not recorded): a
    configuration that meets the gate there is built for real by `confirm(float_nodes)` -> (artifact,
    its runner) and gated again on its own runtime, and only that verdict counts. `timed=False`: the
    candidates' runner is not the artifact's runtime on a device (Core ML's MIL interpreter off macOS),
    so its speed is not recorded either. `recipe` names the quantization recipe in every trial and in
    the refusal ("" for the backend's own; `search_in_turn` runs several)."""
    trials: list[Trial] = []
    sample = rank_images[:1]

    def gated(names: list[str], runner: Runner, clock: bool, by: str) -> Trial:
        verdict = gate(runner, stop_early=True)  # a miss costs only the images that prove it
        ms = latency_ms(runner, sample) if clock else None
        trials.append(Trial(names, verdict, ms, by, recipe))
        return trials[-1]

    def trial(names: list[str], float_nodes: list[str]) -> tuple[Any, bool]:
        """(the artifact, whether it holds the gate)."""
        candidate = quantize(float_nodes)
        met = gated(names, runner_for(candidate), timed and confirm is None, judge).met
        if confirm is None or not (met or not gate.active):
            return candidate, met
        discard(candidate)
        step(f"int8 held-out gate of the chosen configuration, in {label}'s runtime")
        artifact, runner = confirm(float_nodes)
        return artifact, gated(names, runner, timed, "artifact").met

    step("int8 held-out gate: all layers int8")
    path, met = trial([], [])
    if met or not gate.active:
        return SearchResult(path, trials, chosen=len(trials) - 1)
    discard(path)
    groups = groups_of(nodes)
    step(f"int8 sensitivity of {len(groups)} layer groups")
    images = rank_images[:RANK_IMAGES]
    ranked = rank_groups(groups, quantize, runner_for, fp32.run(images), images)
    for k in (1, 2, 3, 4, 6):
        if k > min(MAX_FLOAT_GROUPS, len(ranked)):
            break
        chosen = ranked[:k]
        step(f"int8 held-out gate: {k} most sensitive group(s) float")
        path, met = trial([s.name for s in chosen], [n for s in chosen for n in s.nodes])
        if met:
            return SearchResult(path, trials, ranked, len(trials) - 1)
        discard(path)
    tried = " | ".join(
        f"{len(t.float_layers)} float: {t.agreement:.4f} (lowest half {t.gate.get('lowest_half', t.agreement):.4f}"
        + (f", 95% lower bound {t.gate['lower_bound']:.4f}" if t.gate.get("bound_applies") else "")
        + (
            f", first {t.gate['n_images']} of {t.gate['stopped_early_of']} images"
            if "stopped_early_of" in t.gate
            else ""
        )
        + ")"
        + ("" if t.judge == "artifact" else f" ({t.judge})")
        for t in trials
    )
    needs = trials[0].gate.get("min_agreement")
    bound = " and as its 95% lower bound" if trials[0].gate.get("bound_applies") else ""
    error = GateNotMetError(
        f"{label}: int8{f' ({recipe})' if recipe else ''} misses the held-out gate (agreement >= {needs} "
        f"on each half{bound}) even with the {len(trials[-1].float_layers)} most sensitive of {len(ranked)} layer "
        f"groups in float; tried {tried} (groups float: agreement); no int8 artifact written"
    )
    error.trials = trials
    raise error


def search_in_turn(searches: list[Callable[[], SearchResult]]) -> SearchResult:
    """Run `searches` (each a `search` with its own recipe, fastest recipe first) until one finds a
    configuration that holds the gate; its result carries every trial of the searches before it. When
    all miss, one GateNotMetError names what each tried."""
    missed: list[GateNotMetError] = []
    for run in searches:
        try:
            result = run()
        except GateNotMetError as exc:
            missed.append(exc)
            continue
        earlier = [t for exc in missed for t in exc.trials]
        result.trials[:0] = earlier
        result.chosen += len(earlier)
        return result
    if len(missed) == 1:
        raise missed[0]
    tail = "; no int8 artifact written"
    error = GateNotMetError("; then ".join(str(e).removesuffix(tail) for e in missed) + tail)
    error.trials = [t for exc in missed for t in exc.trials]
    raise error


ConfirmRecipe = Callable[[list[str], str], tuple[Any, Runner]]  # (float_nodes, recipe name) -> confirm


def search_recipes(
    quantize: Callable[[list[str]], Any],
    runner_for: Callable[[Any], Runner],
    every: list[str],
    convs: list[str],
    fp32: Runner,
    rank_images: np.ndarray,
    gate: Gate,
    label: str,
    confirm: ConfirmRecipe | None = None,
    judge: str = "artifact",
    timed: bool = True,
) -> tuple[SearchResult, list[str]]:
    """`search` on the backend's full recipe (every quantizable node in `every` int8); only when every
    configuration of it misses, on the CONVS_ONLY recipe (only `convs` int8, the other nodes of `every`
    float). Returns the result and the nodes the kept recipe itself keeps float, beyond the search's
    float groups (none for the full recipe). `confirm(float_nodes, recipe)`: see `search`.

    The second recipe runs only where it differs from the first and has something to search: `every`
    (a user's int8_op_types, say) with no convolution, or nothing but convolutions, searches one recipe.
    Measured on a classifier fixture trained on an AVX2 host (width 0.5 @ 128, gate on each half of
    1000 held-out crops): the full recipe topped out at 0.985 (TFLite) and 0.988 (ONNX) with 6 of 12
    groups float; convolutions-only met the gate at 0.998 and 0.992. Under the 95% lower bound
    (parity/gate.py) Core ML W8A8's full recipe topped out at 0.994 (bound 0.988) and
    convolutions-only met it at 0.997 with 6 groups float."""
    rest = [n for n in every if n not in set(convs)]

    def recipe(nodes: list[str], also_float: list[str], name: str) -> Callable[[], SearchResult]:
        confirmed = (
            None if confirm is None else lambda float_nodes: confirm([*float_nodes, *also_float], name)
        )
        return lambda: search(
            lambda float_nodes: quantize([*float_nodes, *also_float]),
            runner_for,
            nodes,
            fp32,
            rank_images,
            gate,
            label,
            confirm=confirmed,
            judge=judge,
            timed=timed,
            recipe=name,
        )

    searches = [recipe(every, [], "")]
    if convs and rest:
        searches.append(recipe(convs, rest, CONVS_ONLY))
    result = search_in_turn(searches)
    return result, (rest if result.trials[result.chosen].recipe else [])
