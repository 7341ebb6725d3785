"""Alpha dropout: SELU's mean and variance kept; torch.nn.AlphaDropout's statistics."""

from __future__ import annotations

import math

import pytest
import torch

from droplab.masks import bernoulli_mask
from droplab.variants.alpha import (
    SELU_SATURATION,
    AlphaDropout,
    FeatureAlphaDropout,
    alpha_dropout,
    alpha_dropout_affine,
    feature_alpha_dropout,
)


def saved_bytes(fn):
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


def normal(n, seed=0):
    return torch.randn(
        n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def moments_within(y, mean, var, k=5.0):
    """Sample mean and variance of ``y`` against (mean, var), k standard errors."""
    n = y.numel()
    centred = y - y.mean()
    m4 = float((centred**4).mean())
    se_mean = math.sqrt(var / n)
    se_var = math.sqrt(max(m4 - float(y.var()) ** 2, 0.0) / n)
    assert abs(float(y.mean()) - mean) <= k * se_mean
    assert abs(float(y.var()) - var) <= k * se_var


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_standard_normal_input_keeps_mean_zero_and_variance_one(p):
    y = alpha_dropout(normal(400_000), p, True, seed=1)
    moments_within(y, 0.0, 1.0)


def test_exact_values_on_the_numpy_mask():
    x = normal(1000)
    y = alpha_dropout(x, 0.3, True, seed=8, offset=5)
    keep = torch.from_numpy(bernoulli_mask((1000,), 0.3, seed=8, offset=5))
    a, b = alpha_dropout_affine(0.3)
    expected = torch.where(
        keep, a * x + b, torch.tensor(a * SELU_SATURATION + b, dtype=torch.float64)
    )
    assert torch.allclose(y, expected, rtol=0, atol=1e-14)


def test_agrees_with_torch_alpha_dropout():
    p, n = 0.2, 200_000
    x = normal(n, seed=2)
    torch.manual_seed(0)
    ours = alpha_dropout(x, p, True, seed=3)
    theirs = torch.nn.functional.alpha_dropout(x, p, True)
    a, b = alpha_dropout_affine(p)
    # the same two kinds of values: a x + b (kept) and one constant (dropped)
    dropped_theirs = ~torch.isclose(theirs, a * x + b, rtol=0, atol=1e-12)
    dropped_ours = ~torch.isclose(ours, a * x + b, rtol=0, atol=1e-12)
    assert torch.allclose(
        theirs[dropped_theirs],
        torch.tensor(a * SELU_SATURATION + b, dtype=torch.float64),
    )
    assert torch.allclose(ours[dropped_ours], theirs[dropped_theirs][0])
    # drop rates of both within two-sample binomial bounds
    diff = dropped_ours.double().mean() - dropped_theirs.double().mean()
    assert abs(float(diff)) <= 5 * math.sqrt(2 * p * (1 - p) / n)
    moments_within(theirs, 0.0, 1.0)
    assert abs(float(ours.mean() - theirs.mean())) <= 5 * math.sqrt(2 / n)


def test_feature_alpha_dropout_drops_whole_channels():
    x = torch.zeros(50, 20, 3, 3, dtype=torch.float64)
    y = feature_alpha_dropout(x, 0.4, True, seed=6)
    assert torch.equal(y.amax(dim=(2, 3)), y.amin(dim=(2, 3)))
    keep = torch.from_numpy(bernoulli_mask((50, 20), 0.4, seed=6))
    a, b = alpha_dropout_affine(0.4)
    assert torch.allclose(
        y[:, :, 0, 0], torch.where(keep, b, a * SELU_SATURATION + b).double()
    )
    # per-channel drop rate within the binomial bound
    rate = float((~keep).double().mean())
    assert abs(rate - 0.4) <= 5 * math.sqrt(0.4 * 0.6 / 1000)


def test_feature_alpha_dropout_keeps_channel_moments():
    x = torch.randn(
        2000, 100, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    y = feature_alpha_dropout(x, 0.1, True, seed=2)
    assert abs(float(y.mean())) <= 0.02 and abs(float(y.var()) - 1) <= 0.03


def test_gradient_is_a_on_kept_units_and_nothing_saved():
    x = normal(30).reshape(5, 6).requires_grad_()
    f = lambda t: alpha_dropout(t, 0.3, True, seed=4)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    g = lambda t: feature_alpha_dropout(t, 0.3, True, seed=4)  # noqa: E731
    assert torch.autograd.gradcheck(g, (x.reshape(5, 3, 2).detach().requires_grad_(),))
    nbytes, y = saved_bytes(lambda: f(x))
    assert nbytes == 0
    y.sum().backward()
    keep = torch.from_numpy(bernoulli_mask((5, 6), 0.3, seed=4))
    assert torch.allclose(x.grad, keep.double() * alpha_dropout_affine(0.3)[0])


def test_edges_p_zero_p_one_and_eval():
    x = normal(10)
    assert alpha_dropout(x, 0.0, True, seed=1) is x
    assert alpha_dropout(x, 0.5) is x  # training defaults to False, as torch
    assert torch.equal(alpha_dropout(x, 1.0, True, seed=1), torch.zeros_like(x))
    assert torch.equal(
        torch.nn.functional.alpha_dropout(x, 1.0, True), torch.zeros_like(x)
    )
    m = AlphaDropout(0.5, seed=3).eval()
    assert m(x) is x and m.offset == 0


def test_modules_stream_and_state_dict():
    m = FeatureAlphaDropout(0.3, seed=10)
    x = torch.zeros(4, 5, 6)
    first = m(x)
    assert m.offset == 20
    state = m.state_dict()
    second = m(x)
    other = FeatureAlphaDropout(0.3)
    other.load_state_dict(state)
    assert torch.equal(other(x), second)
    assert torch.equal(FeatureAlphaDropout(0.3, seed=10)(x), first)
    a = AlphaDropout(0.3, seed=10)
    a(x)
    assert a.offset == 120
    assert repr(a) == "AlphaDropout(p=0.3, inplace=False, seed=10, offset=120)"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: alpha_dropout(torch.ones(3), -0.1, True),
            ValueError,
            r"'p' argument of alpha_dropout",
        ),
        (
            lambda: feature_alpha_dropout(torch.ones(3), 0.5, True),
            ValueError,
            r"feature_alpha_dropout must have at least 2 dimensions",
        ),
        (
            lambda: alpha_dropout(torch.ones(3, 2), 0.5, True, shared_dims=(2,)),
            ValueError,
            r"'shared_dims' argument",
        ),
        (lambda: AlphaDropout(2.0), ValueError, r"'p' argument of AlphaDropout"),
        (
            lambda: alpha_dropout(torch.ones(3, dtype=torch.int32), 0.5, True),
            TypeError,
            r"'x' argument of alpha_dropout",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
