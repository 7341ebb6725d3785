"""The training experiments: tiny runs, result shapes, figures, and answer sentences.

Each experiment runs once on a tiny config (seconds); its result must be plain
JSON, its figure must build, its numbers rows must be well-formed. Each answer
function is then fed the same result with its decisive numbers set to either
side of the decision, and the sentence must follow.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

import numpy as np
import pytest
import torch

from droplab.lab import compare
from droplab.lab.curves import cross_entropy, load_cached, train_with_curves
from droplab.lab.experiments import (
    convergence,
    data_size,
    exact_count,
    features,
    rate,
    smaller_network,
    uncertainty_toy,
    variants,
)
from droplab.lab.registry import config_for, experiment_names, get_experiment
from droplab.lab.training import build_mlp

TINY: dict[str, Any] = {
    "exact-count": exact_count.Config(widths=(8, 16), seeds=2, epochs=1, mask_rows=200),
    "rate": rate.Config(
        ps=(0.0, 0.5), width=16, kept=8, layers=1, seeds=2, epochs=2, bootstrap=50
    ),
    "smaller-network": smaller_network.Config(
        width=16, steps=2, layers=1, seeds=2, epochs=2
    ),
    "convergence": convergence.Config(hidden=(16,), seeds=2, epochs=3),
    "data-size": data_size.Config(sizes=(20, 40), hidden=(16,), seeds=2, steps=4),
    "features": features.Config(units=16, seeds=2, epochs=2, shown=8),
    "uncertainty": uncertainty_toy.Config(
        toy_samples=40,
        toy_hidden=(16,),
        toy_epochs=3,
        hidden=(16,),
        epochs=2,
        samples=5,
        seeds=2,
    ),
}
TINY["variants"] = variants.Config(hidden=8, seeds=2, epochs=1)
MODULES = {
    "exact-count": exact_count,
    "rate": rate,
    "smaller-network": smaller_network,
    "convergence": convergence,
    "data-size": data_size,
    "features": features,
    "uncertainty": uncertainty_toy,
    "variants": variants,
}
TIMING_KEYS = {"seconds", "epoch_seconds", "seconds_ratio", "epoch_seconds_ratio",
               "train_seconds"}  # fmt: skip

_cache: dict[str, dict[str, Any]] = {}


def result_of(name: str) -> dict[str, Any]:
    """The tiny run of experiment ``name`` (computed once per test session)."""
    if name not in _cache:
        _cache[name] = MODULES[name].run(TINY[name], jobs=1)
    return copy.deepcopy(_cache[name])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_registered_with_presets(name: str) -> None:
    assert name in experiment_names()
    module = get_experiment(name)
    assert module is MODULES[name]
    for preset in ("quick", "default", "full"):
        config = config_for(module, preset)
        assert isinstance(config, module.Config)
    assert config_for(module, "quick", data="mnist1d").data == "mnist1d"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_tiny_run_json_figure_numbers_answer(name: str) -> None:
    module = MODULES[name]
    result = result_of(name)
    text = json.dumps(result, allow_nan=False)  # plain JSON, no NaN
    assert json.loads(text) == result
    fig = module.figure(result)
    assert len(fig.axes) >= 2
    rows = module.numbers(result)
    assert rows
    for row in rows:
        assert set(row) == {"quantity", "value", "low", "high", "unit"}
        assert isinstance(row["quantity"], str) and row["quantity"]
        assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"])
        if row["low"] is not None:
            assert row["low"] <= row["value"] + 1e-12 <= row["high"] + 2e-12
    sentence = module.answer(result)
    assert isinstance(sentence, str) and sentence.endswith(".")
    for attr in ("NAME", "QUESTION", "METHOD"):
        assert isinstance(getattr(module, attr), str)


def _strip_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    return value


def test_same_numbers_for_one_and_two_jobs() -> None:
    config = TINY["rate"]
    assert rate.run(config, jobs=2) == result_of("rate")


def test_same_numbers_again_apart_from_timing() -> None:
    config = TINY["smaller-network"]
    again = smaller_network.run(config, jobs=1)
    assert _strip_timing(again) == _strip_timing(result_of("smaller-network"))


# ---- helpers ---------------------------------------------------------------


def test_paired_difference_and_holm() -> None:
    d = compare.paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 1.5, 2.0, 3.5])
    diffs = np.array([1.0, 0.5, 1.0, 0.5])
    half = 3.182446305284263 * diffs.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert d["mean"] == pytest.approx(0.75)
    assert d["low"] == pytest.approx(0.75 - half)
    assert d["high"] == pytest.approx(0.75 + half)
    assert compare.detectable(d)
    with pytest.raises(ValueError, match="'a, b' argument of paired_difference"):
        compare.paired_difference([1.0], [1.0, 2.0])
    assert compare.holm([0.01, 0.02, 0.5]) == pytest.approx([0.03, 0.04, 0.5])
    # All pairs differ by the same amount: a sign test decides, not a zero-width t.
    assert not compare.detectable(compare.paired_difference([2, 3], [1, 2]))
    assert compare.detectable(compare.paired_difference([2] * 6, [1] * 6))


def test_verdict_both_sides() -> None:
    better = {"mean": -0.02, "low": -0.03, "high": -0.01}
    text = compare.verdict(
        "A", "B", better, quantity="test error", higher_is_better=False
    )
    assert text.startswith("A is better than B by 2.00 points")
    assert "[1.00, 3.00]" in text
    worse = {"mean": 0.02, "low": 0.01, "high": 0.03}
    text = compare.verdict(
        "A", "B", worse, quantity="test error", higher_is_better=False
    )
    assert text.startswith("B is better than A by 2.00 points")
    none = {"mean": 0.02, "low": -0.01, "high": 0.05}
    assert compare.verdict(
        "A", "B", none, quantity="test error", higher_is_better=False
    ).startswith("no detectable difference")
    # An unadjusted interval that excludes 0 is never called "no detectable
    # difference": the sentence names Holm and the adjusted p-value instead.
    text = compare.verdict(
        "A", "B", worse, quantity="x", higher_is_better=False, adjusted_p=0.2,
        family="over 4 sizes",
    )  # fmt: skip
    assert "no detectable difference" not in text
    assert text == (
        "B is ahead of A by 2.00 points of x before correction (95 % interval of the "
        "difference [1.00, 3.00]), but not detectably after Holm over 4 sizes "
        "(adjusted p = 0.2)"
    )
    # A point interval (every pair differs alike) is a sign test, not an interval.
    point = {"mean": 0.02, "low": 0.02, "high": 0.02}
    assert compare.verdict(
        "A", "B", point, quantity="x", higher_is_better=False, adjusted_p=0.5
    ).startswith("no detectable difference")


def test_train_with_curves_records_every_epoch() -> None:
    data = load_cached("digits", 0)
    model = build_mlp(data.n_features, [8], data.n_classes, p=0.5, seed=1)
    rows = np.arange(50)
    curves = train_with_curves(
        model, data, epochs=2, seed=2, batch_size=16, train_rows=rows, track_test=True
    )
    for key in ("train_loss", "train_error", "val_error", "val_loss", "epoch_seconds",
                "test_error_curve"):  # fmt: skip
        assert len(curves[key]) == 2
    assert curves["test_error"] == curves["test_error_curve"][-1]
    assert 0.0 <= curves["test_error"] <= 1.0
    assert cross_entropy([[0.0, 0.0, 0.0]], [2]) == pytest.approx(math.log(3))


# ---- answers on both sides of their decisions --------------------------------

NULL = {"mean": 0.001, "low": -0.01, "high": 0.012, "p_value": 0.8, "p_holm": 1.0}


def _set(diff: dict[str, Any], **values: float) -> None:
    diff.update(values)


def test_exact_count_answer_follows_the_intervals() -> None:
    result = result_of("exact-count")
    for c in result["comparisons"]:
        _set(c, **NULL)
    text = exact_count.answer(result)
    assert text.startswith("No detectable difference in test accuracy")
    assert "Test loss shows no detectable difference either." in text
    target = next(
        c for c in result["comparisons"]
        if c["metric"] == "accuracy" and c["rule"] == "realized" and c["width"] == 8
    )  # fmt: skip
    _set(target, mean=0.02, low=0.01, high=0.03, p_value=0.001, p_holm=0.004)
    text = exact_count.answer(result)
    assert text.startswith("A detectable difference in test accuracy appears")
    assert "realized is better than inverted by 2.00 points" in text
    assert "At widths 16 no accuracy difference is detectable." in text
    assert "In theory (no accuracy effect detectable here)" in text
    _set(target, mean=-0.02, low=-0.03, high=-0.01)
    text = exact_count.answer(result)
    assert "inverted is better than realized by 2.00 points" in text
    assert "A likely reason: at n = 8 a unit's multiplier has variance 1.361" in text
    # Interval excludes zero but the Holm-adjusted p does not: no claim.
    _set(target, mean=0.02, low=0.01, high=0.03, p_holm=0.2)
    assert exact_count.answer(result).startswith("No detectable difference")


def test_rate_answer_follows_the_intervals() -> None:
    result = result_of("rate")
    for scheme in rate.SCHEMES:
        s = result["schemes"][scheme]
        s["best"].update(p=0.5, index=1, not_worse=[0.5])
        s["best_vs_no_dropout_test"] = {"mean": -0.02, "low": -0.03, "high": -0.01,
                                        "p_value": 0.01}  # fmt: skip
    text = rate.answer(result)
    assert "validation error is lowest at p = 0.5" in text
    assert "every other p is detectably worse on validation" in text
    assert "p = 0.5 is better than no dropout by 2.00 points of test error" in text
    for scheme in rate.SCHEMES:
        s = result["schemes"][scheme]
        s["best"]["not_worse"] = [0.0, 0.5]
        s["best_vs_no_dropout_test"] = dict(NULL)
    text = rate.answer(result)
    assert "p in {0, 0.5} are not detectably worse" in text
    assert (
        "no detectable difference in test error between p = 0.5 and no dropout" in text
    )


def test_best_by_validation_picks_the_lowest_mean() -> None:
    errors = np.array(
        [[0.20, 0.22, 0.21, 0.25], [0.10, 0.11, 0.13, 0.12], [0.30, 0.31, 0.35, 0.33]]
    )
    best = rate.best_by_validation(errors, [0.0, 0.5, 0.8], resamples=100, seed=0)
    assert best["p"] == 0.5 and best["bootstrap"] == [0.5, 0.5]
    assert best["not_worse"] == [0.5]
    noisy = np.array([[0.10, 0.30, 0.20], [0.12, 0.28, 0.19]])
    assert rate.best_by_validation(noisy, [0.0, 0.5], resamples=100, seed=0)[
        "not_worse"
    ] == [0.0, 0.5]


def test_smaller_network_answer_follows_the_intervals() -> None:
    result = result_of("smaller-network")
    for d in result["dropout_minus_plain"]:
        _set(d, **NULL)
    text = smaller_network.answer(result)
    assert "no detectable difference in test error" in text
    assert "No width from 8 to 16 without dropout differs detectably" in text
    for d in result["dropout_minus_plain"]:
        _set(d, mean=-0.05, low=-0.07, high=-0.03, p_value=0.001, p_holm=0.002)
    text = smaller_network.answer(result)
    assert "with dropout (p = 0.5) is better than width" in text
    assert "detectably better than no dropout at widths 8, 16" in text
    _set(result["dropout_minus_plain"][0], mean=0.05, low=0.03, high=0.07)
    assert "detectably worse than no dropout at widths 8" in smaller_network.answer(
        result
    )


def _ratio(value: float, low: float, high: float, p: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high, "p_value": p}


def test_convergence_answer_follows_the_intervals() -> None:
    result = result_of("convergence")
    result["epochs_ratio"] = _ratio(2.0, 1.6, 2.5, 0.001)
    result["seconds_ratio"] = _ratio(2.2, 1.7, 2.9, 0.001)
    result["epoch_seconds_ratio"] = _ratio(1.1, 1.05, 1.2, 0.01)
    text = convergence.answer(result)
    assert "is 2.00x [1.60, 2.50], detectably above 1" in text
    assert "the claim that an epoch is cheaper with dropout does not hold" in text
    result["epochs_ratio"] = _ratio(1.1, 0.8, 1.5, 0.4)
    result["epoch_seconds_ratio"] = _ratio(0.9, 0.8, 1.05, 0.1)
    text = convergence.answer(result)
    assert "is 1.10x [0.80, 1.50], not detectably different from 1" in text
    assert "no difference in the cost of an epoch is detectable" in text
    result["epoch_seconds_ratio"] = _ratio(0.8, 0.7, 0.9, 0.01)
    assert "an epoch is indeed cheaper" in convergence.answer(result)
    # A point interval from two identical pairs is not evidence (sign test p = 0.5).
    result["epochs_ratio"] = _ratio(1.5, 1.5, 1.5, 0.5)
    assert "1.50x [1.50, 1.50], not detectably" in convergence.answer(result)


def test_convergence_reach_counts_unreached_runs_at_the_horizon() -> None:
    assert convergence.reach([0.3, 0.1], [1.0, 2.0], 0.2) == {
        "epochs": 2, "seconds": 3.0, "reached": True,
    }  # fmt: skip
    assert not convergence.reach([0.3, 0.3], [1.0, 2.0], 0.2)["reached"]


def test_data_size_answer_follows_the_intervals() -> None:
    result = result_of("data-size")
    for s in result["sizes"]:
        _set(s["difference"], **NULL)
    text = data_size.answer(result)
    assert "no difference is detectable after Holm with 20, 40" in text
    # The case: the unadjusted interval excludes 0, Holm does not.
    _set(result["sizes"][0]["difference"], mean=-0.0396, low=-0.0647, high=-0.0145,
         p_value=0.02, p_holm=0.08)  # fmt: skip
    text = data_size.answer(result)
    assert "no detectable difference" not in text
    assert (
        "20 (-3.96 points, unadjusted 95 % interval [-6.47, -1.45] excludes 0, but "
        "Holm-adjusted p = 0.08)" in text
    )
    assert "but not detectably after Holm over 2 sizes (adjusted p = 0.08)" in text
    _set(result["sizes"][0]["difference"], mean=0.04, low=0.02, high=0.06, p_holm=0.01)
    _set(
        result["sizes"][1]["difference"], mean=-0.03, low=-0.05, high=-0.01, p_holm=0.01
    )
    text = data_size.answer(result)
    assert "dropout lowers test error detectably with 40 examples" in text
    assert "it raises test error detectably with 20" in text
    assert "best showing is at 40 examples: dropout is better than no dropout" in text


def test_features_answer_follows_the_intervals() -> None:
    result = result_of("features")
    for d in result["difference"].values():
        _set(d, **NULL)
    text = features.answer(result)
    assert text.count("no detectable difference") == 4
    _set(
        result["difference"]["mean_activation"],
        mean=-0.2,
        low=-0.3,
        high=-0.1,
        p_value=0.01,
    )
    _set(
        result["difference"]["zero_fraction"],
        mean=0.1,
        low=0.05,
        high=0.15,
        p_value=0.01,
    )
    text = features.answer(result)
    assert (
        "dropout is sparser than no dropout by 0.200 in the mean hidden activation"
        in text
    )
    assert (
        "dropout is sparser than no dropout by 0.100 in the fraction of activations"
        in text
    )


def test_uncertainty_answer_follows_the_intervals() -> None:
    result = result_of("uncertainty")
    for key in ("gap_minus_data", "beyond_minus_data"):
        _set(result[key], **NULL)
    for d in result["entropy_shift"].values():
        _set(d, **NULL)
    text = uncertainty_toy.answer(result)
    assert "no detectable difference in MC standard deviation between the gap" in text
    assert "no detectable difference in predictive entropy between noise inputs" in text
    _set(result["gap_minus_data"], mean=0.3, low=0.2, high=0.4, p_value=0.01)
    _set(result["entropy_shift"]["noise"], mean=1.0, low=0.8, high=1.2, p_value=0.01)
    text = uncertainty_toy.answer(result)
    assert "the gap has a larger spread than the training range by 0.300" in text
    assert "noise inputs have a higher entropy than test inputs by 1.000 nats" in text


def test_unit_scale_variance_matches_simulation() -> None:
    from droplab.masks import bernoulli_mask

    n, p = 8, 0.5
    kept = bernoulli_mask((200_000, n), p, seed=11)
    scale = kept * (n / np.maximum(kept.sum(axis=1, keepdims=True), 1))
    exact = exact_count.unit_scale_variance(n, p, "realized")
    # 6 standard errors of a sample variance: E[X^4] <= 8^2 E[X^2] (X <= 8), and
    # counting rows, not units (units of a row are dependent).
    bound = 6 * math.sqrt(64 * (exact + 1) / 200_000)
    assert (
        abs(scale.var() - exact) < bound < exact - 1.0
    )  # also tells it from 'inverted'

    assert exact_count.unit_scale_variance(n, p, "inverted") == 1.0
    assert exact_count.unit_scale_variance(n, p, "fixed") == pytest.approx(1.0)


def test_kept_fraction_spread_matches_theory() -> None:
    spread = exact_count.kept_fraction_spread((8, 64), 0.5, rows=4000, seed=3)
    assert spread["theory"] == pytest.approx(
        [math.sqrt(0.25 / 8), math.sqrt(0.25 / 64)]
    )
    # The sample sd of 4000 rows is within 6 standard errors (sd / sqrt(2(rows-1))).
    for theory, measured in zip(spread["theory"], spread["measured"], strict=True):
        assert abs(measured - theory) < 6 * theory / math.sqrt(2 * 3999)


def test_variants_answer_follows_the_intervals() -> None:
    result = result_of("variants")
    for d in result["minus_dropout"].values():
        _set(d, **NULL)
    text = variants.answer(result)
    assert (
        "no dropout, classic, gaussian, alpha, dropconnect, concrete show no difference "
        "from standard dropout detectable after Holm" in text
    )
    # Unadjusted interval excluding 0, Holm not: said as such, with the numbers.
    _set(result["minus_dropout"]["alpha"], mean=-0.05, low=-0.08, high=-0.02,
         p_value=0.01, p_holm=0.06)  # fmt: skip
    assert (
        "alpha (-5.00 points, unadjusted 95 % interval [-8.00, -2.00] excludes 0, "
        "but Holm-adjusted p = 0.06)" in variants.answer(result)
    )
    _set(result["minus_dropout"]["alpha"], **NULL)
    _set(
        result["minus_dropout"]["gaussian"], mean=0.02, low=0.01, high=0.03, p_holm=0.01
    )
    _set(
        result["minus_dropout"]["none"], mean=-0.03, low=-0.05, high=-0.01, p_holm=0.01
    )
    text = variants.answer(result)
    assert "gaussian is better than standard dropout by 2.00 points" in text
    assert "standard dropout is better than no dropout by 3.00 points" in text
    assert "classic, alpha, dropconnect, concrete show no difference" in text
    # one name takes the verb's singular; a bare "none" never names a variant
    for v in ("classic", "alpha", "dropconnect", "concrete"):
        _set(result["minus_dropout"][v], mean=-0.03, low=-0.05, high=-0.01,
             p_holm=0.01)  # fmt: skip
    text = variants.answer(result)
    assert "; gaussian is better" in text or "gaussian is better" in text
    _set(result["minus_dropout"]["gaussian"], **NULL)
    text = variants.answer(result)
    assert "gaussian shows no difference from standard dropout" in text
    assert not re.search(r"\bnone\b", text)
    # classic detectably worse: the page says why, in one sentence
    assert "differ only in where the factor 0.5 sits" in text


def test_every_variant_builds_and_rejects_unknown_names() -> None:
    config = variants.Config(hidden=4)
    x = torch.zeros(2, 3)
    for name in variants.VARIANTS:
        model = variants.build(name, 3, 2, config, seed=0, n_train=10)
        assert model.eval()(x).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown variant 'spatial'"):
        variants.build("spatial", 3, 2, config, seed=0, n_train=10)


def test_regression_data_is_refused_with_the_experiment_named() -> None:
    import dataclasses

    config = dataclasses.replace(TINY["convergence"], data="toy")
    with pytest.raises(
        ValueError, match="'data' argument of convergence must be a classification"
    ):
        convergence.run(config)
