"""when-it-helps: a tiny run, and its answer on synthetic results either side of each decision."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from matplotlib.figure import Figure

from droplab.lab.experiments import when_it_helps
from droplab.lab.registry import config_for, experiment_names, get_experiment

TINY = when_it_helps.Config(
    sizes=(30, 60), widths=(8,), ps=(0.5,), seeds=2, steps=10, eval_every=5,
    val_size=100, test_size=100, compare_cell=(60, 8),
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    return when_it_helps.run(TINY)


def test_registered_with_three_presets() -> None:
    assert "when-it-helps" in experiment_names()
    module = get_experiment("when-it-helps")
    assert module is when_it_helps
    for preset in ("quick", "default", "full"):
        config = config_for(module, preset)
        size, width = config.compare_cell
        assert size in config.sizes and width in config.widths
    # No data field: the sizes are generated MNIST-1D, --data does not apply.
    assert config_for(module, "default", data="digits") == when_it_helps.Config()


def test_tiny_run_is_json_renders_and_is_deterministic(tiny: dict[str, Any]) -> None:
    assert json.loads(json.dumps(tiny, allow_nan=False)) == tiny
    assert isinstance(when_it_helps.figure(tiny), Figure)
    rows = when_it_helps.numbers(tiny)
    assert len(rows) == 2 * 4 + 3 + 3
    assert when_it_helps.answer(tiny).endswith(".")
    assert len(tiny["cells"]) == 2
    for cell in tiny["cells"]:
        assert 0.0 <= cell["none"][0] <= 1.0 and cell["best_p"] == 0.5
        assert "p_holm" in cell["benefit"]
    again = when_it_helps.run(TINY, jobs=2)
    strip = ("seconds", "run_seconds")

    def without_time(r: dict[str, Any]) -> str:
        r = copy.deepcopy(r)
        r.pop(strip[1])
        for cell in r["cells"]:
            cell.pop(strip[0])
        return json.dumps(r, sort_keys=True)

    assert without_time(again) == without_time(tiny)


def test_same_seed_same_initial_weights_across_rates() -> None:
    # The no-dropout run and the dropout run of a seed differ only in p: with
    # zero steps of learning rate they predict identically.
    config = when_it_helps.Config(
        sizes=(30,), widths=(8,), ps=(0.5,), seeds=1, steps=1, eval_every=1,
        val_size=50, test_size=50, compare_cell=(30, 8), lr=0.0,
    )  # fmt: skip
    result = when_it_helps.run(config)
    cell = result["cells"][0]
    assert cell["none"][0] == cell["dropout"][0]


def _diff(mean: float, low: float, high: float, p: float) -> dict[str, Any]:
    return {"mean": mean, "low": low, "high": high, "p_value": p, "p_holm": p, "n": 5}


HELPS = _diff(0.04, 0.02, 0.06, 0.001)
HURTS = _diff(-0.03, -0.05, -0.01, 0.002)
UNCLEAR = _diff(0.01, -0.02, 0.04, 0.4)
# Interval excludes zero but the Holm-adjusted p is not below 0.05: no claim.
HOLM_KILLS = {**_diff(0.02, 0.001, 0.039, 0.04), "p_holm": 0.12}


def synthetic(benefits: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = [300, 3000]
    widths = [64, 512]
    cells = []
    for k, benefit in enumerate(benefits):
        cells.append({
            "size": sizes[k // 2], "width": widths[k % 2], "best_p": 0.3,
            "none": [0.6, 0.58, 0.62], "dropout": [0.6 + benefit["mean"], 0.0, 1.0],
            "rates": [], "gap_none": [0.2 + 0.1 * k, 0.1, 0.3], "benefit": benefit,
            "seconds": {"0": 1.0, "0.3": 1.0}, "epochs": 10,
        })  # fmt: skip
    comparison = {
        "size": 3000, "width": 512, "p": 0.3, "max_norm": 2.0,
        "test_accuracy": {rule: [0.6, 0.58, 0.62] for rule in when_it_helps.COMPARED},
        "differences": [
            {"a": "dropout", "b": "no dropout", **HELPS},
            {"a": "dropout + max-norm", "b": "no dropout", **HELPS},
            {"a": "dropout + max-norm", "b": "dropout", **UNCLEAR},
        ],
    }  # fmt: skip
    return {
        "sizes": sizes, "widths": widths, "ps": [0.3, 0.5], "layers": 2, "seeds": 5,
        "steps": 100, "cells": cells, "comparison": comparison, "run_seconds": 1.0,
    }  # fmt: skip


def test_answer_names_where_it_helps_hurts_and_cannot_tell() -> None:
    result = synthetic([HELPS, HURTS, UNCLEAR, HOLM_KILLS])
    groups = when_it_helps.classify(result)
    assert [len(groups[k]) for k in ("helps", "hurts", "cannot_tell")] == [1, 1, 2]
    text = when_it_helps.answer(result)
    assert (
        "raises test accuracy detectably with 300 examples × width 64 (+4.00 points [+2.00, +6.00]"
        in text
    )
    assert (
        "lowers test accuracy detectably with 300 examples × width 512 (-3.00 points"
        in text
    )
    assert (
        "no difference is detectable after Holm in 2 of 4 cells (3000 examples × width 64; 3000 examples × width 512"
        in text
    )
    assert "exceeds their test accuracy by 20.0 to 50.0 points" in text
    assert "dropout is better than no dropout by 4.00 points" in text
    assert (
        "no detectable difference in test accuracy between dropout + max-norm and dropout"
        in text
    )


@pytest.mark.parametrize(
    ("benefit", "says", "not_says"),
    [
        (HELPS, "raises test accuracy detectably", "cannot tell"),
        (HURTS, "lowers test accuracy detectably", "raises"),
        (
            UNCLEAR,
            "no difference is detectable after Holm in 4 of 4",
            "detectably with",
        ),
        (
            HOLM_KILLS,
            "no difference is detectable after Holm in 4 of 4",
            "detectably with",
        ),
    ],
)
def test_each_decision_flips_with_the_interval(
    benefit: dict[str, Any], says: str, not_says: str
) -> None:
    text = when_it_helps.answer(synthetic([benefit] * 4))
    assert says in text and not_says not in text


def test_max_norm_clause_follows_its_interval() -> None:
    result = synthetic([UNCLEAR] * 4)
    result["comparison"]["differences"][2] = {
        "a": "dropout + max-norm", "b": "dropout", **_diff(0.01, 0.005, 0.015, 0.01)
    }  # fmt: skip
    text = when_it_helps.answer(result)
    assert "dropout + max-norm is better than dropout by 1.00 points" in text
    assert isinstance(when_it_helps.figure(result), Figure)


def test_fit_calls_after_step_every_step_and_max_norm_holds() -> None:
    import torch
    from torch import nn

    from droplab.lab.training import build_mlp, fit, max_norm_

    model = build_mlp(4, [16], 3, p=0.5, seed=0)
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 10
    y = torch.arange(50) % 3
    calls = []

    def project() -> None:
        calls.append(1)
        max_norm_(model, 0.5)

    fit(model, x, y, nn.CrossEntropyLoss(), epochs=3, seed=0, batch_size=16, lr=0.1,
        after_step=project)  # fmt: skip
    assert len(calls) == 3 * 4  # ceil(50 / 16) steps per epoch
    for layer in (m for m in model.modules() if isinstance(m, nn.Linear)):
        assert float(layer.weight.detach().norm(dim=1).max()) <= 0.5 + 1e-6
