"""droplab._validation: one message template, ValueError for values, TypeError for types."""

from __future__ import annotations

import fractions

import numpy as np
import pytest

from droplab._validation import (
    SEED_LIMIT,
    check_choice,
    check_int,
    check_offset,
    check_probability,
    check_seed,
    check_shared_dims,
    fail,
)


def test_fail_builds_the_error_with_the_template_and_does_not_raise():
    error = fail("p", 1.5, "a real number in [0, 1]", owner="dropout")
    assert isinstance(error, ValueError)
    assert str(error) == (
        "The 'p' argument of dropout must be a real number in [0, 1]; got 1.5."
    )
    error = fail("x", "a", "a tensor", kind=TypeError)
    assert isinstance(error, TypeError)
    assert str(error) == "The 'x' argument must be a tensor; got 'a'."


@pytest.mark.parametrize(
    "p",
    [0, 1, 0.0, 1.0, 0.3, np.float32(0.25), np.float64(0.5), fractions.Fraction(1, 3)],
)
def test_check_probability_accepts_reals_in_the_closed_unit_interval(p):
    value = check_probability(p)
    assert isinstance(value, float)
    assert value == float(p)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf"), -1e-300])
def test_check_probability_refuses_values_outside_0_1(p):
    with pytest.raises(
        ValueError,
        match=r"The 'p' argument of f must be a real number in \[0, 1\]; got",
    ):
        check_probability(p, owner="f")


@pytest.mark.parametrize("p", [True, False, "0.5", None, 0.5j, [0.5]])
def test_check_probability_refuses_non_reals_and_booleans(p):
    with pytest.raises(
        TypeError, match=r"The 'rate' argument must be a real number in \[0, 1\]"
    ):
        check_probability(p, name="rate")


def test_check_int_bounds_are_half_open():
    assert check_int(0, "n", low=0, high=3) == 0
    assert check_int(np.int64(2), "n", low=0, high=3) == 2
    with pytest.raises(
        ValueError, match=r"The 'n' argument must be an integer in \[0, 3\); got 3\."
    ):
        check_int(3, "n", low=0, high=3)
    with pytest.raises(ValueError, match=r"an integer in \[0, inf\); got -1\."):
        check_int(-1, "n", low=0)
    with pytest.raises(TypeError, match=r"an integer in \[-inf, inf\); got 1\.0\."):
        check_int(1.0, "n")
    with pytest.raises(TypeError, match=r"got True\."):
        check_int(True, "n")


def test_check_seed_accepts_the_full_64_bit_range():
    assert check_seed(0) == 0
    assert check_seed(SEED_LIMIT - 1) == 2**64 - 1
    assert check_seed(np.uint64(2**64 - 1)) == 2**64 - 1


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70])
def test_check_seed_refuses_seeds_outside_64_bits(seed):
    with pytest.raises(
        ValueError,
        match=rf"The 'seed' argument of g must be an integer in \[0, 18446744073709551616\); got {seed}\.",
    ):
        check_seed(seed, owner="g")


@pytest.mark.parametrize("seed", [1.0, "1", None, True])
def test_check_seed_refuses_non_integers(seed):
    with pytest.raises(TypeError, match=r"The 'seed' argument must be an integer"):
        check_seed(seed)


def test_check_offset_refuses_negative_offsets():
    assert check_offset(2**64) == 2**64  # offsets count elements, four per block
    with pytest.raises(
        ValueError,
        match=r"The 'offset' argument must be an integer in \[0, \d+\); got -4\.",
    ):
        check_offset(-4)


def test_check_choice_lists_the_allowed_names():
    assert check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(
        ValueError, match=r"The 'mode' argument must be one of 'a', 'b'; got 'c'\."
    ):
        check_choice("c", "mode", ("a", "b"))
    with pytest.raises(TypeError, match=r"must be one of 'a', 'b'; got 1\."):
        check_choice(1, "mode", ("a", "b"))


def test_check_shared_dims_normalises_ints_negatives_and_order():
    assert check_shared_dims((), 0) == ()
    assert check_shared_dims(1, 3) == (1,)
    assert check_shared_dims([-1, 0], 3) == (0, 2)
    assert check_shared_dims(np.int64(-2), 2) == (0,)


@pytest.mark.parametrize("dims", [(3,), (-4,), (0, 0), (1, -2)])
def test_check_shared_dims_refuses_out_of_range_and_repeated_dims(dims):
    with pytest.raises(
        ValueError,
        match=r"must be distinct dimensions in \[-3, 2\] for a 3-d input; got",
    ):
        check_shared_dims(dims, 3)


@pytest.mark.parametrize("dims", ["0", 1.0, (0.0,), (True,), None])
def test_check_shared_dims_refuses_non_integers(dims):
    with pytest.raises(
        TypeError, match=r"The 'shared_dims' argument must be an int or a tuple of ints"
    ):
        check_shared_dims(dims, 3)


# ----------------------------------------- issue 31: sparse and nested tensors


def _layouts() -> list[tuple[str, object]]:
    import warnings

    import torch

    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():  # torch's "prototype" note, once a process
        warnings.simplefilter("ignore", UserWarning)
        nested = torch.nested.nested_tensor(
            [torch.randn(3, 8, 8), torch.randn(3, 8, 8)]
        )
    return [("sparse_coo", x.to_sparse()), ("nested", nested)]


def _every_op() -> dict[str, object]:
    """Each droplab op and module, called in training mode on a 4-d input."""
    import torch

    import droplab.functional as F
    import droplab.nn as N

    def linear(t: object, **kw: object) -> object:
        return F.drop_connect_linear(t, torch.randn(5, 8), None, 0.5, **kw)

    return {
        "dropout": lambda t: F.dropout(t, 0.5),
        "alpha_dropout": lambda t: F.alpha_dropout(t, 0.5, True),
        "feature_alpha_dropout": lambda t: F.feature_alpha_dropout(t, 0.5, True),
        "gaussian_dropout": lambda t: F.gaussian_dropout(t, 0.5),
        "concrete_dropout": lambda t: F.concrete_dropout(t, 0.2),
        "drop_block2d": lambda t: F.drop_block2d(t, 0.2, 3),
        "drop_connect_linear": linear,
        "drop_path": lambda t: F.drop_path(t, 0.5),
        "dropout2d": lambda t: F.dropout2d(t, 0.5),
        "locked_dropout": lambda t: F.locked_dropout(t, 0.5),
        "Dropout": N.Dropout(0.5),
        "AlphaDropout": N.AlphaDropout(0.5),
        "FeatureAlphaDropout": N.FeatureAlphaDropout(0.5),
        "GaussianDropout": N.GaussianDropout(0.5),
        "Dropout2d": N.Dropout2d(0.5),
        "DropPath": N.DropPath(0.5),
        "DropBlock2d": N.DropBlock2d(0.2, 3),
        "LockedDropout": N.LockedDropout(0.5),
    }


@pytest.mark.parametrize("op", list(_every_op()))
def test_every_op_refuses_sparse_and_nested_tensors_alike(op: str) -> None:
    call = _every_op()[op]
    for layout, x in _layouts():
        with pytest.raises(TypeError) as error:
            call(x)  # type: ignore[operator]
        assert "must be a dense (strided) torch.Tensor" in str(error.value)
        assert f"got a {layout} tensor" in str(error.value)
