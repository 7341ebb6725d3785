"""Each experiment on a tiny config: its numbers, figure, and an answer that follows the numbers.

The answer tests feed each ``answer`` function results on both sides of each of
its decisions (made by editing a real result) and check the sentence changes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from droplab.lab.experiments import averaging, expectation, gradients, masks

TINY = {
    masks: masks.Config(draws=400),
    expectation: expectation.Config(
        hidden=16, epochs=1, inputs=8, masks=300, forum_values=200, forum_repeats=30,
        widths=(4, 16), width_masks=400,
    ),
    averaging: averaging.Config(  # digits: the tiny run's intervals stay in [0, 1]
        data="digits", small_units=4, small_epochs=1, small_ks=(1, 4), mc_repeats=3,
        large_hidden=(8,), large_epochs=1, large_ks=(1, 2), seeds=2,
    ),
    gradients: gradients.Config(),
}  # fmt: skip


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    return {module.NAME: module.run(config) for module, config in TINY.items()}


@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_result_is_json_and_renders(
    module: Any, results: dict[str, dict[str, Any]]
) -> None:
    result = results[module.NAME]
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert isinstance(module.figure(result), Figure)
    rows = module.numbers(result)
    assert rows and all(
        {"quantity", "value", "low", "high", "unit"} <= set(r) for r in rows
    )
    for row in rows:
        if row["low"] is not None:
            assert (
                row["low"] <= row["value"] <= row["high"]
                or row["unit"] == "first run; range"
            )
    assert module.answer(result).endswith(".")


def test_runs_are_deterministic(results: dict[str, dict[str, Any]]) -> None:
    assert expectation.run(TINY[expectation]) == results["expectation"]
    assert averaging.run(TINY[averaging]) == results["averaging"]


# ----------------------------------------------------------------------------- masks


def test_masks_numbers(results: dict[str, dict[str, Any]]) -> None:
    r = results["masks"]
    assert r["exact_all_dropped"] == {"4": 0.0625, "100": 0.5**100}
    for per_width in r["sources"].values():
        for n in (4, 100):
            entry = per_width[str(n)]
            assert sum(entry["histogram"]) == 400 and len(entry["histogram"]) == n + 1
            assert (
                entry["gof"]["p_value"] > 1e-3
            )  # fixed seeds: a wrong sampler would fail
        _, _, low, high = per_width["4"]["all_dropped"]
        assert low <= 0.0625 <= high


def test_masks_answer_follows_the_numbers(results: dict[str, dict[str, Any]]) -> None:
    good = results["masks"]
    assert good["sources"]["torch.nn.Dropout"]["100"]["gof"]["p_value"] >= masks.ALPHA
    assert masks.answer(good).startswith("Yes:")
    bad = copy.deepcopy(good)
    bad["sources"]["torch.nn.Dropout"]["100"]["gof"]["p_value"] = 1e-5
    assert masks.answer(bad).startswith(
        "No:"
    ) and "torch.nn.Dropout at n = 100" in masks.answer(bad)
    assert "consistent with p^n" in masks.answer(good)
    assert "for n = 100 (observed 0 of 400 rows per source)" in masks.answer(good)
    off = copy.deepcopy(good)
    off["sources"]["droplab.masks"]["4"]["all_dropped"] = [200, 0.5, 0.45, 0.55]
    assert "outside its 95 % interval for droplab.masks at n = 4" in masks.answer(off)


# ----------------------------------------------------------------------------- expectation


def test_expectation_numbers(results: dict[str, dict[str, Any]]) -> None:
    r = results["expectation"]
    rules = r["network"]["rules"]
    # Var of the inverted sum is p/(1-p) sum w^2 a^2; without scaling it is (1-p)^2 times that.
    assert rules["inverted"]["variance_ratio"][0] == pytest.approx(1.0, abs=0.15)
    assert rules["none"]["variance_ratio"][0] == pytest.approx(0.25, abs=0.04)
    assert r["forum"]["r*y/keep"]["mean"][0] == pytest.approx(1.0, abs=0.05)
    assert r["forum"]["r*y"]["mean"][0] == pytest.approx(0.5, abs=0.03)
    first = r["widths"][0]
    assert first["p_both_exact"] == 0.25 and first["n"] == 4
    assert (
        first["error_if_both_exact"] < -0.5
    )  # dropping 14.1 and 13.1 of 4 units hurts
    assert r["widths"][-1]["error_if_both_exact"] > first["error_if_both_exact"]
    assert r["forum_top_half_dropped"] == pytest.approx(8.881784197001252e-16)


def test_expectation_answer_follows_the_numbers(
    results: dict[str, dict[str, Any]],
) -> None:
    base = copy.deepcopy(results["expectation"])
    rules = base["network"]["rules"]
    base["forum"]["y"]["mean"][0] = 1.0
    base["forum"]["r*y/keep"]["mean"] = [1.001, 0.99, 1.01]
    rules["inverted"]["bias"] = [0.001, -0.01, 0.01]
    rules["inverted"]["variance_ratio"] = [1.0, 0.98, 1.02]
    rules["realized"]["mse_minus_inverted"] = [-0.05, -0.07, -0.03]
    text = expectation.answer(base)
    assert text.startswith("On average, yes")
    assert "no detectable bias" in text and "matches the closed form" in text
    assert "realized) is more precise" in text

    flipped = copy.deepcopy(base)
    flipped["forum"]["r*y/keep"]["mean"] = [1.05, 1.04, 1.06]
    flipped["network"]["rules"]["inverted"]["bias"] = [0.2, 0.1, 0.3]
    flipped["network"]["rules"]["inverted"]["variance_ratio"] = [1.3, 1.2, 1.4]
    flipped["network"]["rules"]["realized"]["mse_minus_inverted"] = [0.05, 0.03, 0.07]
    text = expectation.answer(flipped)
    assert text.startswith("No: mean(r*y/keep)")
    assert "a detectable bias of 0.2" in text and "is 1.3 times the closed form" in text
    assert "realized) is less precise" in text

    flipped["network"]["rules"]["realized"]["mse_minus_inverted"] = [0.01, -0.03, 0.05]
    assert "makes no detectable difference" in expectation.answer(flipped)


# ----------------------------------------------------------------------------- averaging


def test_averaging_numbers(results: dict[str, dict[str, Any]]) -> None:
    r = results["averaging"]
    small = r["small"]
    assert small["masks"] == 2**4
    assert small["nwgm_vs_ws_max"] < 1e-12  # Baldi & Sadowski: one Linear after dropout
    assert small["nwgm_tv"] == pytest.approx(small["ws_tv"], abs=1e-12)
    assert len(r["large"]["per_seed"]) == 2 and len(r["large"]["mc_error"]) == 2
    assert all(0.0 <= v <= 1.0 for v in r["large"]["ws_error"] if v is not None)


def test_averaging_answer_follows_the_numbers(
    results: dict[str, dict[str, Any]],
) -> None:
    base = copy.deepcopy(results["averaging"])
    small, large = base["small"], base["large"]
    small["ws_tv"] = 0.1
    small["mc_tv"] = [[0.3, 0.28, 0.32], [0.05, 0.04, 0.06]]
    assert "gets detectably closer from k = 4 samples" in averaging.answer(base)
    small["mc_tv"] = [[0.3, 0.28, 0.32], [0.12, 0.09, 0.15]]
    assert "is closer than Monte-Carlo averaging with up to k = 4" in averaging.answer(
        base
    )

    large["mc_minus_ws"] = [[0.02, 0.01, 0.03], [-0.01, -0.02, -0.005]]
    assert "MC-2 beats weight scaling" in averaging.answer(base)
    large["mc_minus_ws"] = [[0.02, 0.01, 0.03], [0.01, 0.005, 0.02]]
    assert "weight scaling beats even MC-2" in averaging.answer(base)
    large["mc_minus_ws"] = [[0.02, 0.01, 0.03], [0.001, -0.01, 0.012]]
    assert "indistinguishable from weight scaling's" in averaging.answer(base)
    assert "from k = 2 on" in averaging.answer(base)
    large["mc_minus_ws"] = [[0.0, -0.01, 0.01], [0.001, -0.01, 0.012]]
    assert "from k = 1 on" in averaging.answer(base)
    large["ks"] = [1, 2, 5]
    large["mc_error"] = [[0.1, 0.09, 0.11]] * 3
    large["mc_minus_ws"] = [[0.0, -0.01, 0.01], [0.02, 0.01, 0.03], [0.0, -0.1, 0.1]]
    assert "from k = 5 on" in averaging.answer(base)  # k = 2 still differed


# ----------------------------------------------------------------------------- gradients


def test_gradients_numbers(results: dict[str, dict[str, Any]]) -> None:
    r = results["gradients"]
    assert r["masks"] == [list(m) for m in gradients.BLOG_MASKS]
    assert r["max_abs_diff_autograd"] < 1e-10
    assert r["dropped_terms_max_abs"] == 0.0 and r["dropped_terms"] == 12 * 3
    terms = np.asarray(r["f1_terms"])
    assert np.array_equal(
        terms == 0, np.asarray(r["masks"]) == 0
    )  # zero exactly where dropped
    assert np.allclose(terms.mean(axis=0), r["f1_mean"])  # averaged over all 3 samples
    (table,) = gradients.tables(r)
    assert len(table["rows"]) == 4 and table["rows"][0][1] == "dropped"


def test_gradients_sampled_masks_and_bad_choice() -> None:
    r = gradients.run(gradients.Config(masks="sampled"))
    assert r["max_abs_diff_autograd"] < 1e-10 and r["dropped_terms_max_abs"] == 0.0
    with pytest.raises(
        ValueError,
        match="The 'masks' field of the gradients Config must be 'blog' or 'sampled'",
    ):
        gradients.run(gradients.Config(masks="random"))


def test_gradients_answer_follows_the_numbers(
    results: dict[str, dict[str, Any]],
) -> None:
    good = results["gradients"]
    assert "contributes exactly 0" in gradients.answer(good)
    assert "agrees with PyTorch autograd" in gradients.answer(good)
    bad = copy.deepcopy(good)
    bad["dropped_terms_max_abs"] = 0.5
    bad["max_abs_diff_autograd"] = 1e-3
    assert "do NOT give zero gradient terms" in gradients.answer(bad)
    assert "differs from autograd by 0.001" in gradients.answer(bad)
