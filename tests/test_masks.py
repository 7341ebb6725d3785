"""droplab.masks: which units are kept, with statistics checked against derived bounds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from droplab.masks import (
    bernoulli_mask,
    fixed_count_mask,
    fixed_keep_count,
    keep_threshold,
    make_mask,
    mask_shape,
    mask_words,
    row_count,
)
from droplab.rng import random_words

SIGMAS = 6  # every statistical bound below is 6 standard deviations wide


def test_keep_threshold_edges_and_rounding():
    assert keep_threshold(0.0) == 2**32  # every word is below: keep all
    assert keep_threshold(1.0) == 0  # no word is below: drop all
    assert keep_threshold(0.5) == 2**31
    assert keep_threshold(0.1) == math.floor(0.9 * 2**32 + 0.5)
    assert keep_threshold(1e-12) == 2**32  # rounds to "keep all"
    assert keep_threshold(1 - 1e-12) == 0


def test_bernoulli_rule_is_word_below_threshold():
    shape, p, seed, offset = (3, 7), 0.37, 11, 5
    words = random_words(seed, offset, 21).reshape(shape).astype(np.int64)
    expected = words < keep_threshold(p)
    np.testing.assert_array_equal(
        bernoulli_mask(shape, p, seed=seed, offset=offset), expected
    )


def test_first_mask_matches_the_known_answer_words():
    # Words 6627e8d5 e169c58d bc57ac4c 9b00dbd8: only the first is below 2**31.
    np.testing.assert_array_equal(
        bernoulli_mask((4,), 0.5, seed=0), [True, False, False, False]
    )


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_6_sigma_at_a_million(p):
    n = 10**6
    kept = np.count_nonzero(bernoulli_mask((n,), p, seed=12345))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < SIGMAS * sigma


def test_dropped_counts_per_row_follow_the_binomial():
    rows, n, p = 4000, 40, 0.3
    mask = bernoulli_mask((rows, n), p, seed=99)
    dropped = n - mask.sum(axis=1)
    observed = np.bincount(dropped, minlength=n + 1).astype(float)
    expected = rows * stats.binom.pmf(np.arange(n + 1), n, p)
    # Pool the tails so every cell expects at least 5 rows (the chi-square rule).
    low = np.argmax(np.cumsum(expected) >= 5)
    high = n - np.argmax(np.cumsum(expected[::-1]) >= 5)
    obs = np.concatenate(
        [[observed[: low + 1].sum()], observed[low + 1 : high], [observed[high:].sum()]]
    )
    exp = np.concatenate(
        [[expected[: low + 1].sum()], expected[low + 1 : high], [expected[high:].sum()]]
    )
    assert exp.min() >= 5
    result = stats.chisquare(obs, exp * obs.sum() / exp.sum())
    assert result.pvalue > 1e-3


@pytest.mark.parametrize("sampler", ["bernoulli", "fixed"])
def test_p_zero_keeps_all_and_p_one_drops_all(sampler):
    assert make_mask((5, 9), 0.0, seed=3, sampler=sampler).all()
    assert not make_mask((5, 9), 1.0, seed=3, sampler=sampler).any()


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    rows=st.integers(1, 6),
    n=st.integers(0, 30),
    p=st.floats(0, 1),
    seed=st.integers(0, 2**64 - 1),
    offset=st.integers(0, 2**36),
)
def test_fixed_rows_keep_exactly_round_n_times_keep(rows, n, p, seed, offset):
    mask = fixed_count_mask((rows, n), p, seed=seed, offset=offset)
    k = math.floor(n * (1 - p) + 0.5)
    assert fixed_keep_count(n, p) == k
    assert mask.sum(axis=1).tolist() == [k] * rows


def test_fixed_keeps_the_k_smallest_words_ties_to_the_lower_index():
    shape, p = (6, 11), 0.45
    words = mask_words(shape, seed=5, offset=2).astype(np.int64)
    k = fixed_keep_count(11, p)
    # Rank of each word in its row, ties broken by position (lower index first).
    position = np.arange(11)
    smaller = (words[:, None, :] < words[:, :, None]) | (
        (words[:, None, :] == words[:, :, None])
        & (position[None, :] < position[:, None])
    )
    rank = smaller.sum(axis=2)
    np.testing.assert_array_equal(
        fixed_count_mask(shape, p, seed=5, offset=2), rank < k
    )


def test_fixed_count_subsets_are_uniform():
    rows, n, p = 20000, 5, 0.6  # keep k = 2 of 5: ten subsets, equally likely
    mask = fixed_count_mask((rows, n), p, seed=2718)
    subsets = list(itertools.combinations(range(n), 2))
    index = {s: i for i, s in enumerate(subsets)}
    codes = [index[tuple(np.flatnonzero(row))] for row in mask]
    counts = np.bincount(codes, minlength=len(subsets))
    assert stats.chisquare(counts).pvalue > 1e-3
    # Each position is kept with probability k/n: within 6 sigma of the binomial.
    frequency = mask.mean(axis=0)
    bound = SIGMAS * math.sqrt(0.4 * 0.6 / rows)
    assert np.all(np.abs(frequency - 0.4) < bound)


def test_shared_dims_drop_whole_channels_from_the_reduced_stream():
    shape = (4, 3, 5, 5)
    mask = bernoulli_mask(shape, 0.5, seed=8, offset=3, shared_dims=(2, 3))
    assert mask.shape == (4, 3, 1, 1)
    # The shared mask is the plain mask of the reduced shape: 12 stream elements.
    np.testing.assert_array_equal(
        mask, bernoulli_mask((4, 3, 1, 1), 0.5, seed=8, offset=3)
    )
    full = np.broadcast_to(mask, shape)
    per_channel = full.reshape(12, 25)
    assert np.all(per_channel.all(axis=1) | ~per_channel.any(axis=1))
    # Time-wise dropout: one draw per (batch, feature), shared over time (dim 1).
    assert bernoulli_mask((2, 7, 3), 0.5, seed=1, shared_dims=-2).shape == (2, 1, 3)


def test_shared_first_dimension_makes_one_row():
    mask = fixed_count_mask((6, 10), 0.5, seed=4, shared_dims=0)
    assert mask.shape == (1, 10)
    assert mask.sum() == 5


def test_consecutive_offsets_continue_the_same_stream():
    whole = bernoulli_mask((2, 5), 0.4, seed=21, offset=3)
    np.testing.assert_array_equal(
        whole[1], bernoulli_mask((5,), 0.4, seed=21, offset=8)
    )


def test_empty_and_scalar_shapes():
    assert bernoulli_mask((0, 4), 0.5, seed=1).shape == (0, 4)
    assert fixed_count_mask((3, 0), 0.5, seed=1).shape == (3, 0)
    assert np.shape(bernoulli_mask((), 0.5, seed=1)) == ()
    assert np.shape(fixed_count_mask((), 0.0, seed=1)) == ()


def test_mask_shape_and_row_count():
    assert mask_shape((8, 16, 5, 5), (2, 3)) == (8, 16, 1, 1)
    assert mask_shape((8, 16), ()) == (8, 16)
    assert row_count((8, 16, 1, 1)) == (8, 16)
    assert row_count((10,)) == (1, 10)
    assert row_count(()) == (1, 1)


def test_mask_errors_name_the_argument():
    with pytest.raises(
        ValueError,
        match=r"The 'p' argument of bernoulli_mask must be a real number in \[0, 1\]; got 1\.5\.",
    ):
        bernoulli_mask((3,), 1.5, seed=0)
    with pytest.raises(
        ValueError,
        match=r"The 'shape' argument of fixed_count_mask must be a sequence of non-negative integers; got \(3, -1\)\.",
    ):
        fixed_count_mask((3, -1), 0.5, seed=0)
    with pytest.raises(
        TypeError,
        match=r"The 'shape' argument of bernoulli_mask must be a sequence of integers; got 3\.",
    ):
        bernoulli_mask(3, 0.5, seed=0)
    with pytest.raises(
        ValueError,
        match=r"The 'seed' argument of bernoulli_mask must be an integer in \[0, 18446744073709551616\); got -1\.",
    ):
        bernoulli_mask((3,), 0.5, seed=-1)
    with pytest.raises(
        ValueError,
        match=r"The 'offset' argument of fixed_count_mask must be an integer in \[0, \d+\); got -1\.",
    ):
        fixed_count_mask((3,), 0.5, seed=0, offset=-1)
    with pytest.raises(
        ValueError,
        match=r"The 'sampler' argument of make_mask must be one of 'bernoulli', 'fixed'; got 'uniform'\.",
    ):
        make_mask((3,), 0.5, seed=0, sampler="uniform")
    with pytest.raises(
        ValueError,
        match=r"The 'shared_dims' argument must be distinct dimensions in \[-2, 1\] for a 2-d input; got \(2,\)\.",
    ):
        bernoulli_mask((3, 4), 0.5, seed=0, shared_dims=(2,))
