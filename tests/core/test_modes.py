"""weight_scaled: classic dropout folded into the next layer equals classic evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from droplab.interop.weight_scaling import weight_scaled
from droplab.nn import Dropout
from droplab.variants import (
    ConcreteDropout,
    DropConnectLinear,
    Dropout2d,
    GaussianDropout,
)


def mlp(p, scale="classic"):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8),
        nn.ReLU(),
        Dropout(p, scale=scale, seed=1),
        nn.Linear(8, 8),
        nn.Tanh(),
        Dropout(p, scale=scale, seed=2),
        nn.Linear(8, 3),
    ).double()


@pytest.mark.parametrize("p", [0.5, 0.75])
def test_exactly_classic_evaluation_when_1_minus_p_is_a_power_of_two(p):
    net = mlp(p)
    x = torch.randn(20, 6, dtype=torch.float64)
    folded = weight_scaled(net)
    assert torch.equal(folded(x), net.eval()(x))
    assert not any(isinstance(m, Dropout) for m in folded.modules())


def test_close_to_classic_evaluation_for_other_rates():
    net = mlp(0.3)
    x = torch.randn(20, 6, dtype=torch.float64)
    assert torch.allclose(weight_scaled(net)(x), net.eval()(x), rtol=1e-14, atol=1e-14)


def test_the_original_is_untouched_and_the_copy_is_deterministic():
    net = mlp(0.5)
    before = [t.clone() for t in net.parameters()]
    folded = weight_scaled(net)
    assert net.training and isinstance(net[2], Dropout)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert torch.equal(folded[3].weight, 0.5 * net[3].weight)
    assert torch.equal(folded[3].bias, net[3].bias)
    x = torch.randn(4, 6, dtype=torch.float64)
    folded.train()  # no dropout left: training mode changes nothing
    assert torch.equal(folded(x), folded(x))


def test_conv_nested_and_other_dropouts():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.ReLU(),
        Dropout2d(0.5, scale="classic", seed=0),
        nn.Sequential(
            nn.Conv2d(4, 4, 3),
            nn.Dropout(0.3),
            nn.Flatten(),
            Dropout(0.5, scale="classic", seed=1),
            nn.Flatten(),
            nn.Linear(16, 3),
        ),
        GaussianDropout(0.2, seed=3),
    ).double()
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    folded = weight_scaled(net)
    assert torch.equal(folded(x), net.eval()(x))
    kinds = {type(m) for m in folded.modules()}
    assert not kinds & {Dropout, Dropout2d, GaussianDropout, nn.Dropout}


def test_concrete_dropout_becomes_its_layer():
    torch.manual_seed(0)
    net = nn.Sequential(ConcreteDropout(nn.Linear(3, 2), seed=0))
    folded = weight_scaled(net)
    assert isinstance(folded[0], nn.Linear)
    x = torch.randn(4, 3)
    assert torch.equal(folded(x), net.eval()(x))


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        (
            nn.Sequential(nn.Linear(3, 3), Dropout(0.5, scale="classic")),
            ValueError,
            r"cannot fold the 'classic' dropout '1'",
        ),
        (
            nn.Sequential(Dropout(0.5, scale="classic"), nn.ReLU(), nn.Linear(3, 3)),
            ValueError,
            r"needs a Linear or Conv layer right after it",
        ),
        (
            nn.ModuleDict({"drop": Dropout(0.5, scale="classic")}),
            ValueError,
            r"not inside an nn.Sequential",
        ),
        (
            nn.Sequential(DropConnectLinear(3, 2, inference="mc")),
            ValueError,
            r"inference='mc'",
        ),
        ("not a model", TypeError, r"'model' argument of weight_scaled"),
    ],
)
def test_errors(model, error, match):
    with pytest.raises(error, match=match):
        weight_scaled(model)
