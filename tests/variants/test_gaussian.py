"""Gaussian dropout: noise N(1, p/(1-p)) from the Philox stream by Box-Muller."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from droplab.rng import random_words
from droplab.variants.gaussian import GaussianDropout, gaussian_dropout


def saved_bytes(fn):
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_noise_has_mean_one_and_variance_p_over_1_minus_p(p):
    n = 200_000
    y = gaussian_dropout(torch.ones(n, dtype=torch.float64), p, seed=3).numpy()
    var = p / (1 - p)
    # the sample mean has sd sqrt(var / n); the sample variance of a normal has
    # sd var * sqrt(2 / (n - 1)): five of each
    assert abs(y.mean() - 1) <= 5 * math.sqrt(var / n)
    assert abs(y.var(ddof=1) - var) <= 5 * var * math.sqrt(2 / (n - 1))
    z = (y - 1) / math.sqrt(var)
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_box_muller_from_two_words_per_element():
    p, n = 0.3, 10
    y = gaussian_dropout(
        torch.full((n,), 2.0, dtype=torch.float64), p, seed=42, offset=6
    )
    u = (random_words(42, 6, 2 * n).astype(np.float64) + 0.5) / 2**32
    z = np.sqrt(-2 * np.log(u[0::2])) * np.cos(2 * np.pi * u[1::2])
    assert np.allclose(
        y.numpy(), 2 * (1 + math.sqrt(p / (1 - p)) * z), rtol=1e-15, atol=0
    )


def test_offsets_address_the_stream_by_element():
    x = torch.ones(12, dtype=torch.float64)
    whole = gaussian_dropout(x, 0.5, seed=1)
    tail = gaussian_dropout(x[:8], 0.5, seed=1, offset=2 * 4)
    assert torch.equal(whole[4:], tail)


def test_gradient_is_the_noise_and_nothing_is_saved():
    x = torch.randn(
        4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    x.requires_grad_()
    f = lambda t: gaussian_dropout(t, 0.4, seed=9)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    nbytes, y = saved_bytes(lambda: f(x))
    assert nbytes == 0
    y.sum().backward()
    assert torch.allclose(x.grad, gaussian_dropout(torch.ones_like(x), 0.4, seed=9))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_rounds_the_float64_result(dtype):
    x = torch.linspace(-2, 2, 50, dtype=dtype)
    y = gaussian_dropout(x, 0.2, seed=5)
    noise = gaussian_dropout(torch.ones(50, dtype=torch.float64), 0.2, seed=5).float()
    assert y.dtype == dtype
    assert torch.equal(y, (x.float() * noise).to(dtype))


def test_eval_and_p_zero_are_identity():
    x = torch.randn(3, 3)
    assert gaussian_dropout(x, 0.5, training=False) is x
    assert gaussian_dropout(x, 0.0, seed=1) is x
    m = GaussianDropout(0.5, seed=1).eval()
    assert m(x) is x and m.offset == 0


def test_module_stream_state_dict_and_same_seed():
    m = GaussianDropout(0.3, seed=77)
    x = torch.ones(4, 6)
    first = m(x)
    assert m.offset == 48
    state = m.state_dict()
    second = m(x)
    other = GaussianDropout(0.3)
    other.load_state_dict(state)
    assert torch.equal(other(x), second)
    assert torch.equal(GaussianDropout(0.3, seed=77)(x), first)
    assert repr(m) == "GaussianDropout(p=0.3, seed=77, offset=96)"


def test_seed_none_follows_torch_manual_seed():
    torch.manual_seed(3)
    a = gaussian_dropout(torch.ones(5), 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, gaussian_dropout(torch.ones(5), 0.5))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: gaussian_dropout(torch.ones(2), 1.0),
            ValueError,
            r"'p' argument of gaussian_dropout must be a real number in \[0, 1\)",
        ),
        (lambda: GaussianDropout(-0.1), ValueError, r"'p' argument of GaussianDropout"),
        (
            lambda: gaussian_dropout(torch.ones(2), 0.5, seed=2**64),
            ValueError,
            r"'seed' argument",
        ),
        (
            lambda: gaussian_dropout([1.0], 0.5),
            TypeError,
            r"'x' argument of gaussian_dropout",
        ),
        (
            lambda: gaussian_dropout(torch.ones(2), 0.5, training=1),
            TypeError,
            r"'training' argument",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
