"""The mixed-precision search's recipes in turn (exporters/int8_search.py: search_in_turn and the
search_recipes every exporter calls), on a stand-in backend whose agreement is a known function of the
layers kept float: the second recipe runs only when the first misses in every configuration, the kept
configuration carries its recipe and its own float nodes, and a refusal names what both tried."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from mvit2_export.errors import GateNotMetError
from mvit2_export.exporters import int8_search
from mvit2_export.exporters.int8_search import CONVS_ONLY, search, search_in_turn, search_recipes

NODES = ["conv_a", "mul_b", "conv_c", "add_d"]
IMAGES = np.zeros((4, 8, 8, 3), np.uint8)


@dataclass
class Verdict:
    agreement: float
    met: bool
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"agreement": self.agreement, "met": self.met, "min_agreement": 0.99}


class Runner:
    runtime = "stand-in"

    def __init__(self, int8: frozenset[str]) -> None:
        self.int8 = int8

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        # each int8 node adds its own error, the convolutions the least
        noise = sum(0.01 if n.startswith("conv") else 0.1 for n in self.int8)
        return [np.ones((len(images), 3), np.float32) + noise]


class Gate:
    """Agreement = base + step per float layer: a recipe's ceiling is base + step x layers."""

    active = True

    def __init__(self, base: float, step: float) -> None:
        self.base, self.step = base, step

    def __call__(self, runner: Runner, stop_early: bool = False) -> Verdict:
        floats = len(NODES) - len(runner.int8)
        agreement = round(self.base + self.step * floats, 4)
        return Verdict(agreement, agreement >= 0.99, agreement >= 0.99)


def run_recipe(gate: Gate, name: str, nodes: list[str], also_float: list[str]) -> Any:
    def quantize(float_nodes: list[str]) -> frozenset[str]:
        return frozenset(NODES) - set(float_nodes) - set(also_float)

    return lambda: search(
        quantize, Runner, nodes, Runner(frozenset()), IMAGES, gate, "stand-in", recipe=name, timed=False
    )


CONVS = [n for n in NODES if n.startswith("conv")]
OTHERS = [n for n in NODES if n not in CONVS]


def test_the_second_recipe_runs_only_when_the_first_misses_everywhere():
    # every op int8 never gets there (0.90 + 0.01 per float layer, 4 layers: 0.94 at most); convolutions
    # only (2 layers already float: 0.97) meets 0.99 with both convolution groups float
    first, then = (
        run_recipe(Gate(0.90, 0.01), "", NODES, []),
        run_recipe(Gate(0.95, 0.01), "convs only", CONVS, OTHERS),
    )
    result = search_in_turn([first, then])
    recipes = [t.recipe for t in result.trials]
    assert recipes == [""] * 5 + ["convs only"] * 3  # all-int8 and 1-4 groups float; then 0, 1, 2
    chosen = result.trials[result.chosen]
    assert result.chosen == len(result.trials) - 1 and chosen.met and chosen.recipe == "convs only"
    assert not any(t.met for t in result.trials[: result.chosen])
    summary = result.to_dict()
    assert summary["why"].startswith("convs only: the 2 most sensitive")
    assert summary["trials"][result.chosen]["recipe"] == "convs only" and "recipe" not in summary["trials"][0]
    # the ranking and the float nodes are the kept recipe's: its convolution groups
    assert sorted(n for s in result.sensitivity for n in s.nodes) == sorted(CONVS)
    assert sorted(result.float_nodes()) == sorted(CONVS)

    # a first recipe that meets the gate is kept, and the second never runs
    never = pytest.fail
    result = search_in_turn([run_recipe(Gate(0.99, 0.0), "", NODES, []), never])
    assert [t.recipe for t in result.trials] == [""] and result.chosen == 0


def test_a_refusal_names_what_every_recipe_tried():
    hopeless = Gate(0.80, 0.01)
    with pytest.raises(GateNotMetError) as caught:
        search_in_turn(
            [run_recipe(hopeless, "", NODES, []), run_recipe(hopeless, "convs only", CONVS, OTHERS)]
        )
    message = str(caught.value)
    assert message.count("misses the held-out gate") == 2 and "; then " in message
    assert "int8 (convs only) misses" in message and message.endswith("no int8 artifact written")
    assert message.count("no int8 artifact written") == 1
    assert [t.recipe for t in caught.value.trials] == [""] * 5 + ["convs only"] * 3


class CostGate(Gate):
    """Agreement = 1 - 0.004 per int8 convolution - 0.01 per other int8 node: only a configuration
    with every non-convolution float meets 0.99."""

    def __init__(self) -> None:
        pass

    def __call__(self, runner: Runner, stop_early: bool = False) -> Verdict:
        agreement = round(1 - sum(0.004 if n.startswith("conv") else 0.01 for n in runner.int8), 4)
        return Verdict(agreement, agreement >= 0.99, agreement >= 0.99)


def recipes(every: list[str], convs: list[str]) -> tuple[Any, list[str]]:
    return search_recipes(
        lambda float_nodes: frozenset(every) - set(float_nodes),
        Runner,
        every,
        convs,
        Runner(frozenset()),
        IMAGES,
        CostGate(),
        "stand-in",
    )


def test_search_recipes_keeps_the_second_recipe_with_its_own_float_nodes(monkeypatch):
    # at most one group float: the full recipe gets to 0.982 (all-int8 0.972, then the most sensitive
    # non-convolution float); convolutions-only meets the gate at 0.992 with no group float
    monkeypatch.setattr(int8_search, "MAX_FLOAT_GROUPS", 1)
    result, recipe_floats = recipes(NODES, CONVS)
    assert [(t.recipe, t.agreement) for t in result.trials] == [
        ("", 0.972),
        ("", 0.982),
        (CONVS_ONLY, 0.992),
    ]
    assert result.trials[result.chosen].recipe == CONVS_ONLY and result.float_nodes() == []
    assert recipe_floats == OTHERS  # what the manifest must list as float beyond the search's groups

    # with room for two groups the full recipe holds the gate, and nothing is float for the recipe
    monkeypatch.setattr(int8_search, "MAX_FLOAT_GROUPS", 2)
    result, recipe_floats = recipes(NODES, CONVS)
    assert {t.recipe for t in result.trials} == {""} and recipe_floats == []
    assert sorted(result.float_nodes()) == sorted(OTHERS)


@pytest.mark.parametrize("every", [OTHERS, CONVS], ids=["no convolution", "only convolutions"])
def test_search_recipes_searches_one_recipe_where_the_second_adds_nothing(monkeypatch, every):
    monkeypatch.setattr(int8_search, "MAX_FLOAT_GROUPS", 0)  # all-int8 only: a miss is a refusal
    convs = [n for n in every if n.startswith("conv")]
    try:
        result, _ = recipes(every, convs)
    except GateNotMetError as exc:
        trials = exc.trials
        assert "; then " not in str(exc)
    else:
        trials = result.trials
    assert [t.recipe for t in trials] == [""]
