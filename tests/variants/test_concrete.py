"""ConcreteDropout: relaxed Bernoulli, learned bounded rate, the regulariser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from droplab.rng import random_words
from droplab.variants.concrete import ConcreteDropout, concrete_dropout


def test_exact_relaxed_mask_from_the_stream():
    p, t = 0.3, 0.5
    y = concrete_dropout(torch.ones(10, dtype=torch.float64), p, t, seed=5, offset=3)
    u = (random_words(5, 3, 10).astype(np.float64) + 0.5) / 2**32
    drop = 1 / (
        1 + np.exp(-(np.log(p) - np.log(1 - p) + np.log(u) - np.log(1 - u)) / t)
    )
    assert np.allclose(y.numpy(), (1 - drop) / (1 - p), rtol=1e-13, atol=0)


def test_low_temperature_drops_a_fraction_p_and_keeps_the_mean():
    n, p = 100_000, 0.25
    y = concrete_dropout(torch.ones(n, dtype=torch.float64), p, 0.01, seed=1)
    dropped = float((y < 0.5 / (1 - p)).double().mean())
    assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert abs(float(y.mean()) - 1) <= 5 * math.sqrt(p / (1 - p) / n) + 1e-3


def test_gradients_in_x_and_p():
    x = torch.randn(6, 3, dtype=torch.float64).requires_grad_()
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    f = lambda a, b: concrete_dropout(a, b, 0.2, seed=8)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, p))
    assert torch.autograd.gradgradcheck(f, (x, p))
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t
    ):
        f(x, p)
    assert sorted(shapes) == [(), (6, 3)]  # p and x; the noise is regenerated


def test_rate_is_visible_and_bounded():
    m = ConcreteDropout(init_p=0.2, p_min=0.05, p_max=0.5)
    assert m.p == pytest.approx(0.2)
    with torch.no_grad():
        m.p_logit.fill_(50.0)
    assert 0.05 < m.p <= 0.5
    with torch.no_grad():
        m.p_logit.fill_(-50.0)
    assert 0.05 <= m.p < 0.5


def test_regularizer_value_and_its_pull_towards_half():
    layer = nn.Linear(4, 2)
    m = ConcreteDropout(
        layer, init_p=0.2, weight_regularizer=1e-2, dropout_regularizer=1e-1
    )
    m(torch.ones(3, 4))
    p = m.p_tensor()
    squares = sum((w**2).sum() for w in layer.parameters())
    expected = 1e-2 * squares / (1 - p) + 1e-1 * 4 * (
        p * torch.log(p) + (1 - p) * torch.log(1 - p)
    )
    assert torch.allclose(m.regularizer(), expected)
    bare = ConcreteDropout(init_p=0.2, dropout_regularizer=1.0)
    bare(torch.ones(2, 5))
    bare.regularizer().backward()
    assert float(bare.p_logit.grad) < 0  # descent raises p towards 0.5 (max entropy)


def test_learning_the_rate_moves_p():
    torch.manual_seed(0)
    m = ConcreteDropout(nn.Linear(3, 1), init_p=0.1, dropout_regularizer=1e-2, seed=1)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    start = m.p
    for _ in range(20):
        opt.zero_grad()
        m(torch.ones(8, 3)).pow(2).mean().add(m.regularizer()).backward()
        opt.step()
    assert m.p != start and m.p_min < m.p < m.p_max


def test_eval_stream_and_state_dict():
    layer = nn.Linear(3, 2)
    m = ConcreteDropout(layer, init_p=0.3, seed=4)
    x = torch.ones(2, 3)
    first = m(x)
    assert m.offset == 6
    state = m.state_dict()
    second = m(x)
    other = ConcreteDropout(nn.Linear(3, 2), init_p=0.1)
    other.load_state_dict(state)
    assert other.p == pytest.approx(m.p)
    assert torch.equal(other(x), second)
    assert not torch.equal(first, second)
    m.eval()
    assert torch.equal(m(x), layer(x))
    assert concrete_dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: ConcreteDropout(init_p=0.95),
            ValueError,
            r"'init_p' argument of ConcreteDropout must be in the open interval",
        ),
        (
            lambda: ConcreteDropout(p_min=0.5, p_max=0.4),
            ValueError,
            r"'p_max' argument",
        ),
        (
            lambda: ConcreteDropout(temperature=0.0),
            ValueError,
            r"'temperature' argument",
        ),
        (
            lambda: ConcreteDropout(weight_regularizer=-1.0),
            ValueError,
            r"'weight_regularizer' argument",
        ),
        (lambda: ConcreteDropout(layer=3), TypeError, r"'layer' argument"),
        (
            lambda: ConcreteDropout().regularizer(),
            RuntimeError,
            r"call the module on a batch first",
        ),
        (
            lambda: concrete_dropout(torch.ones(2), 1.0, seed=0),
            ValueError,
            r"open interval \(0, 1\)",
        ),
        (
            lambda: concrete_dropout(torch.ones(2), torch.ones(2), seed=0),
            TypeError,
            r"0-d floating tensor",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
