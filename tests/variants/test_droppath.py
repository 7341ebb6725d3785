"""DropPath (stochastic depth): whole samples of a residual branch dropped together."""

from __future__ import annotations

import math

import pytest
import torch

from droplab.masks import bernoulli_mask
from droplab.variants.droppath import DropPath, drop_path, linear_drop_rates


def test_whole_samples_from_the_numpy_mask():
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    y = drop_path(x, 0.5, seed=3, offset=4)
    keep = torch.from_numpy(bernoulli_mask((6,), 0.5, seed=3, offset=4))
    assert torch.allclose(y, x * keep[:, None, None] * 2.0, rtol=0, atol=1e-15)


def test_keep_rate_within_binomial_bound():
    n, p = 20_000, 0.2
    y = drop_path(torch.ones(n, 3), p, seed=1)
    assert torch.equal(y.amax(1), y.amin(1))
    kept = float((y[:, 0] != 0).double().mean())
    assert abs(kept - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n)


def test_fixed_sampler_drops_exactly_round_n_p_samples():
    y = drop_path(torch.ones(10, 4, 2), 0.3, seed=2, sampler="fixed")
    assert int((y[:, 0, 0] != 0).sum()) == 7


def test_linear_decay_rule():
    assert linear_drop_rates(0.5, 4) == [0.125, 0.25, 0.375, 0.5]
    with pytest.raises(ValueError, match=r"'depth' argument of linear_drop_rates"):
        linear_drop_rates(0.5, 0)


def test_gradcheck_eval_and_classic():
    x = torch.randn(5, 3, dtype=torch.float64).requires_grad_()
    f = lambda t: drop_path(t, 0.4, seed=7)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    assert drop_path(x, 0.4, training=False) is x
    assert torch.allclose(drop_path(x, 0.4, False, scale="classic"), 0.6 * x)


def test_module_stream_and_state_dict():
    m = DropPath(0.5, seed=5)
    x = torch.ones(8, 3, 2)
    first = m(x)
    assert m.offset == 8
    state = m.state_dict()
    second = m(x)
    other = DropPath(0.5)
    other.load_state_dict(state)
    assert torch.equal(other(x), second)
    assert torch.equal(DropPath(0.5, seed=5)(x), first)
    assert repr(m) == "DropPath(p=0.5, seed=5, offset=16)"
    assert m.eval()(x) is x


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: drop_path(torch.tensor(1.0), 0.5, seed=0),
            ValueError,
            r"must have a batch dimension",
        ),
        (lambda: DropPath(-1), ValueError, r"'p' argument of DropPath"),
        (
            lambda: DropPath(0.5, sampler="poisson"),
            ValueError,
            r"'sampler' argument of DropPath",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
