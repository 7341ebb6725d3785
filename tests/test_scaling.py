"""droplab.scaling: the factor of each rule in training and at evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from droplab.scaling import SCALES, eval_scale, realized_row_scale, train_scale


def test_the_four_rules_are_named():
    assert SCALES == ("inverted", "classic", "realized", "none")


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_train_scale_of_each_rule(p):
    assert train_scale(p, "inverted") == 1 / (1 - p)
    assert train_scale(p, "classic") == 1.0
    assert train_scale(p, "none") == 1.0
    assert math.isnan(train_scale(p, "realized"))  # per row: see realized_row_scale


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_eval_scale_is_keep_probability_for_classic_only(p):
    assert eval_scale(p, "classic") == 1 - p
    for rule in ("inverted", "realized", "none"):
        assert eval_scale(p, rule) == 1.0


def test_p_one_gives_scale_zero_not_a_division_by_zero():
    assert train_scale(1.0, "inverted") == 0.0
    assert eval_scale(1.0, "classic") == 0.0
    np.testing.assert_array_equal(realized_row_scale([0, 0], 7), [0.0, 0.0])


def test_realized_row_scale_is_n_over_k():
    kept = np.array([1, 2, 3, 6, 0])
    np.testing.assert_array_equal(
        realized_row_scale(kept, 6), [6.0, 3.0, 2.0, 1.0, 0.0]
    )
    # Kept units times n/k sum to the row's n: exact compensation of the count.
    assert np.all(realized_row_scale(kept[:4], 6) * kept[:4] == 6)


def test_scale_errors_name_the_argument():
    with pytest.raises(
        ValueError,
        match=r"The 'scale' argument of train_scale must be one of 'inverted', 'classic', 'realized', 'none'; got 'inverse'\.",
    ):
        train_scale(0.5, "inverse")
    with pytest.raises(
        ValueError,
        match=r"The 'p' argument of eval_scale must be a real number in \[0, 1\]; got -0\.5\.",
    ):
        eval_scale(-0.5, "classic")
    with pytest.raises(
        TypeError,
        match=r"The 'scale' argument of eval_scale must be one of .*; got None\.",
    ):
        eval_scale(0.5, None)
