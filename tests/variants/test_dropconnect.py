"""DropConnectLinear: weight masks per call or per sample; mean, Gaussian, MC inference."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from droplab.masks import bernoulli_mask
from droplab.variants.dropconnect import DropConnectLinear, drop_connect_linear


def saved_shapes(fn):
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return shapes, out


def randn(*shape, seed=0):
    return torch.randn(
        *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def test_per_call_mask_is_the_numpy_mask_on_the_weight():
    x, w, b = randn(5, 4), randn(3, 4, seed=1), randn(3, seed=2)
    y = drop_connect_linear(x, w, b, 0.4, seed=6, offset=2)
    keep = torch.from_numpy(bernoulli_mask((3, 4), 0.4, seed=6, offset=2))
    assert torch.allclose(y, x @ (w * keep / 0.6).T + b, rtol=1e-14, atol=1e-14)


def test_per_sample_masks_are_consecutive_blocks_of_the_stream():
    x, w = randn(5, 4), randn(3, 4, seed=1)
    y = drop_connect_linear(x, w, None, 0.4, seed=6, per_sample=True)
    keep = torch.from_numpy(bernoulli_mask((5, 3, 4), 0.4, seed=6))
    expected = torch.stack([(w * keep[i] / 0.6) @ x[i] for i in range(5)])
    assert torch.allclose(y, expected, rtol=1e-14, atol=1e-14)


def test_leading_dims_are_flattened_into_samples():
    x, w = randn(2, 3, 4), randn(3, 4, seed=1)
    y = drop_connect_linear(x, w, None, 0.5, seed=1, per_sample=True)
    flat = drop_connect_linear(x.reshape(6, 4), w, None, 0.5, seed=1, per_sample=True)
    assert torch.equal(y, flat.reshape(2, 3, 3))


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradients_and_only_x_and_w_are_saved(per_sample):
    x, w = randn(4, 3).requires_grad_(), randn(2, 3, seed=1).requires_grad_()
    f = lambda a, b: drop_connect_linear(a, b, None, 0.4, seed=3, per_sample=per_sample)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))
    shapes, y = saved_shapes(lambda: f(x, w))
    assert sorted(shapes) == sorted([(4, 3), (2, 3)])  # x and W, no mask
    if not per_sample:
        y.sum().backward()
        keep = torch.from_numpy(bernoulli_mask((2, 3), 0.4, seed=3))
        assert bool((w.grad[~keep] == 0).all())


def test_pre_activation_moments_match_the_papers_gaussian():
    # per-sample masks on identical rows: independent draws of u = x (M * W)^T s
    p, q, n = 0.3, 0.7, 20_000
    x, w = randn(1, 6, seed=4), randn(2, 6, seed=5)
    u = drop_connect_linear(x.expand(n, 6), w, None, p, seed=8, per_sample=True)
    mean = (x @ w.T)[0]  # q s = 1 under the inverted rule
    var = (q * (1 - q) / q**2 * (x * x) @ (w * w).T)[0]
    for j in range(2):
        sample = u[:, j]
        assert abs(float(sample.mean() - mean[j])) <= 5 * math.sqrt(var[j] / n)
        m4 = float(((sample - sample.mean()) ** 4).mean())
        se_var = math.sqrt((m4 - float(sample.var()) ** 2) / n)
        assert abs(float(sample.var() - var[j])) <= 5 * se_var


def test_gaussian_inference_averages_the_activation_over_the_moment_matched_normal():
    layer = (
        DropConnectLinear(
            6,
            3,
            p=0.4,
            inference="gaussian",
            samples=40_000,
            activation=torch.relu,
            seed=2,
        )
        .double()
        .eval()
    )
    x = randn(2, 6, seed=3)
    with torch.no_grad():
        out = layer(x)
        mu = torch.nn.functional.linear(x, layer.weight, layer.bias)
        q = 0.6
        sd = torch.sqrt(
            q * (1 - q) / q**2 * torch.nn.functional.linear(x * x, layer.weight**2)
        )
    r = (mu / sd).numpy()
    exact = mu.numpy() * stats.norm.cdf(r) + sd.numpy() * stats.norm.pdf(
        r
    )  # E[relu(u)]
    # sd of relu(u) <= sd of u: five standard errors of the mean of `samples` draws
    assert (abs(out.numpy() - exact) <= 5 * sd.numpy() / math.sqrt(40_000)).all()
    assert layer.offset == 2 * 40_000 * 6


def test_mc_inference_is_the_mean_of_training_passes():
    layer = DropConnectLinear(
        4, 3, p=0.5, inference="mc", samples=5, activation=torch.tanh, seed=9
    ).double()
    x = randn(2, 4)
    train = [layer(x) for _ in range(5)]
    layer.offset = 0
    layer.eval()
    assert torch.allclose(layer(x), torch.stack(train).mean(0), rtol=0, atol=1e-15)
    assert layer.offset == 5 * 12


def test_mean_inference_is_the_weight_scaled_layer():
    layer = DropConnectLinear(4, 3, p=0.25, scale="classic").double().eval()
    x = randn(5, 4)
    assert torch.allclose(layer(x), x @ (0.75 * layer.weight).T + layer.bias)
    inverted = DropConnectLinear(4, 3, p=0.25).double().eval()
    assert torch.equal(
        inverted(x), torch.nn.functional.linear(x, inverted.weight, inverted.bias)
    )


def test_classic_training_has_no_scale():
    x, w = randn(3, 4), randn(2, 4, seed=1)
    keep = torch.from_numpy(bernoulli_mask((2, 4), 0.5, seed=0))
    y = drop_connect_linear(x, w, None, 0.5, seed=0, scale="classic")
    assert torch.allclose(y, x @ (w * keep).T)


def test_module_stream_state_dict_and_linear_compatibility():
    layer = DropConnectLinear(4, 3, p=0.5, per_sample=True, seed=31)
    x = torch.ones(2, 4)
    first = layer(x)
    assert layer.offset == 2 * 12
    state = layer.state_dict()
    second = layer(x)
    other = DropConnectLinear(4, 3, p=0.5, per_sample=True)
    other.load_state_dict(state)
    assert torch.equal(other(x), second)
    plain = torch.nn.Linear(4, 3)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == ["_extra_state"]
    assert torch.equal(plain.weight, layer.weight)
    fresh = DropConnectLinear(4, 3, p=0.5, per_sample=True, seed=31)
    fresh.load_state_dict(
        {k: v for k, v in state.items() if k != "_extra_state"}, strict=False
    )
    assert torch.equal(fresh(x), first)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: DropConnectLinear(3, 2, inference="bayes"),
            ValueError,
            r"'inference' argument of DropConnectLinear",
        ),
        (
            lambda: DropConnectLinear(3, 2, scale="realized"),
            ValueError,
            r"'scale' argument of DropConnectLinear",
        ),
        (lambda: DropConnectLinear(0, 2), ValueError, r"'in_features' argument"),
        (lambda: DropConnectLinear(3, 2, samples=0), ValueError, r"'samples' argument"),
        (
            lambda: DropConnectLinear(3, 2, activation=3),
            TypeError,
            r"'activation' argument",
        ),
        (
            lambda: drop_connect_linear(torch.ones(2, 3), torch.ones(2, 4)),
            ValueError,
            r"'weight' argument of drop_connect_linear",
        ),
        (
            lambda: drop_connect_linear(torch.ones(2, 3), torch.ones(2, 3), p=1.2),
            ValueError,
            r"'p' argument",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
