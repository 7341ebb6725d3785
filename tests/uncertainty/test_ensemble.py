"""The exact 2^n-subnetwork average, weight scaling, NWGM and MC-k."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import droplab.nn as dnn
from droplab.masks import SAMPLERS, fixed_keep_count
from droplab.scaling import SCALES
from droplab.uncertainty.ensemble import (
    averaging_errors,
    exact_average,
    mask_probabilities,
    mc_logits,
    split_at_dropout,
    tv_distance,
    weight_scaling,
)


def _net(n: int, dropout: nn.Module, *, deep_tail: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    tail = (
        [nn.Linear(n, 5), nn.ReLU(), nn.Linear(5, 3)]
        if deep_tail
        else [nn.Linear(n, 3)]
    )
    model = nn.Sequential(nn.Linear(4, n), nn.ReLU(), dropout, *tail).double()
    x = torch.randn(6, 4, dtype=torch.float64) * 2
    return model, x


def _brute_force(model, x, p, scale, sampler):
    """One forward pass per mask, probabilities from the definition."""
    site = next(i for i, m in enumerate(model) if "Dropout" in type(m).__name__)
    h = model[:site](x)
    n = h.shape[1]
    k_fixed = fixed_keep_count(n, p)
    moments = np.zeros((4, x.shape[0], 3))
    total = 0.0
    for bits in itertools.product((0, 1), repeat=n):
        kept = sum(bits)
        if sampler == "fixed":
            weight = (kept == k_fixed) / math.comb(n, k_fixed)
        else:
            weight = (1 - p) ** kept * p ** (n - kept)
        factor = {"inverted": 1 / (1 - p) if p < 1 else 0.0, "classic": 1.0, "none": 1.0,
                  "realized": n / kept if kept else 0.0}[scale]  # fmt: skip
        mask = torch.tensor(bits, dtype=torch.float64) * factor
        z = model[site + 1 :](h * mask)
        prob = torch.softmax(z, dim=1)
        for row, value in enumerate((z, z**2, prob, prob**2)):
            moments[row] += weight * value.detach().numpy()
        total += weight
    assert total == pytest.approx(1.0, abs=1e-12)
    return moments


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize(("n", "p"), [(3, 0.5), (5, 0.3)])
def test_exact_average_equals_brute_force(scale, sampler, n, p):
    model, x = _net(n, dnn.Dropout(p, scale=scale, sampler=sampler))
    avg = exact_average(model, x, chunk_rows=7)  # many small chunks
    z1, z2, p1, p2 = _brute_force(model, x, p, scale, sampler)
    np.testing.assert_allclose(avg.mean_logits, z1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(avg.mean_probs, p1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(avg.var_logits, z2 - z1**2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(avg.var_probs, p2 - p1**2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        avg.nwgm, torch.softmax(torch.from_numpy(z1), 1), atol=1e-14
    )
    assert avg.n_units == n
    assert avg.n_masks == (
        math.comb(n, fixed_keep_count(n, p)) if sampler == "fixed" else 2**n
    )


@pytest.mark.parametrize("n", [1, 4, 9])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_mask_probabilities_sum_to_one(n, p, sampler):
    probs = mask_probabilities(n, p, sampler)
    assert probs.shape == (2**n,) and (probs >= 0).all()
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("dropout", "p"),
    [
        (nn.Dropout(0.5), 0.5),
        (nn.Dropout(0.2), 0.2),
        (dnn.Dropout(0.3, scale="classic"), 0.3),
        (dnn.Dropout(0.25, scale="realized", sampler="fixed"), 0.25),  # E[m n/k] = 1
    ],
)
def test_linear_after_dropout_exact_average_is_weight_scaling(dropout, p):
    """Baldi & Sadowski: E[z] = weight-scaled logits, so NWGM = softmax of them."""
    model, x = _net(8, dropout, deep_tail=False, seed=3)
    avg = exact_average(model, x)
    ws_logits, ws_probs = weight_scaling(model, x)
    np.testing.assert_allclose(avg.mean_logits, ws_logits, rtol=0, atol=1e-12)
    np.testing.assert_allclose(avg.nwgm, ws_probs, rtol=0, atol=1e-12)
    # the arithmetic mean of the softmax is a different thing
    assert np.abs(avg.mean_probs - ws_probs).max() > 1e-3
    if isinstance(dropout, nn.Dropout):  # inverted: weight scaling is model.eval()
        with torch.no_grad():
            plain = model.eval()(x).numpy()
        np.testing.assert_array_equal(ws_logits, plain)


def test_nonlinear_tail_breaks_the_identity():
    model, x = _net(8, nn.Dropout(0.5), deep_tail=True, seed=3)
    avg = exact_average(model, x)
    ws_logits, _ = weight_scaling(model, x)
    assert np.abs(avg.mean_logits - ws_logits).max() > 1e-3


def test_p_zero_is_the_plain_network():
    model, x = _net(6, nn.Dropout(0.0))
    avg = exact_average(model, x)
    with torch.no_grad():
        plain = model.eval()(x)
    assert avg.n_masks == 1
    np.testing.assert_array_equal(avg.mean_logits, plain.numpy())
    np.testing.assert_array_equal(avg.var_probs, 0.0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_mc_converges_to_exact_within_six_sigma(sampler):
    model, x = _net(8, dnn.Dropout(0.5, sampler=sampler), seed=1)
    avg = exact_average(model, x)
    z = mc_logits(model, x, 20000, seed=2024)
    probs = torch.softmax(torch.from_numpy(z), dim=-1).numpy()
    errors = []
    for k in (10, 200, 20000):
        mc = probs[:k].mean(axis=0)
        # passes are i.i.d. draws of the mask: Var(MC-k mean) = var_probs / k
        bound = 6 * np.sqrt(avg.var_probs / k) + 1e-12
        assert (np.abs(mc - avg.mean_probs) <= bound).all()
        errors.append(tv_distance(mc, avg.mean_probs).mean())
    assert errors[2] < errors[0] / 5


def test_mc_logits_match_droplab_dropout_module_in_training():
    drop = dnn.Dropout(0.4, seed=77)
    model, x = _net(7, drop, seed=2)
    z = mc_logits(model, x, 5, seed=77, chunk_rows=13)
    model.train()
    with torch.no_grad():
        passes = np.stack([model(x).numpy() for _ in range(5)])
    np.testing.assert_allclose(z, passes, rtol=0, atol=1e-13)
    assert drop.offset == 5 * x.shape[0] * 7
    again = mc_logits(model, x, 2, seed=77, offset=3 * x.shape[0] * 7)
    np.testing.assert_array_equal(again, z[3:])


def test_averaging_errors():
    model, x = _net(6, nn.Dropout(0.5), deep_tail=False, seed=4)
    res = averaging_errors(model, x, [1, 10, 1000], seed=5)
    assert res.ks == [1, 10, 1000] and len(res.mc) == len(res.mc_geometric) == 3
    assert res.nwgm == pytest.approx(res.weight_scaling, abs=1e-12)  # linear tail
    assert res.mc[2] < res.mc[0]
    assert res.mc[2] < res.weight_scaling  # MC-1000 beats the deterministic proxy
    assert res.mc_geometric[2] == pytest.approx(res.nwgm, abs=0.02)
    np.testing.assert_array_equal(
        res.exact.mean_probs, exact_average(model, x).mean_probs
    )


def test_modes_are_restored_even_after_an_error():
    model, x = _net(4, nn.Dropout(0.5))
    model.train()
    model[0].eval()
    exact_average(model, x)
    assert model.training and not model[0].training and model[2].training
    with pytest.raises(RuntimeError):
        weight_scaling(model, torch.ones(2, 9, dtype=torch.float64))
    assert model.training and not model[0].training and torch.is_grad_enabled()


def test_cap_and_bad_arguments():
    model, x = _net(17, nn.Dropout(0.5))
    with pytest.raises(
        ValueError,
        match=r"'model'.*at most max_units=16 units.*has 17 units'",
    ):
        exact_average(model, x)
    small, xs = _net(3, nn.Dropout(0.5))
    with pytest.raises(ValueError, match=r"'max_units'.*\[1, 31\)"):
        exact_average(small, xs, max_units=40)
    with pytest.raises(
        TypeError, match=r"'model' argument of split_at_dropout.*nn.Sequential"
    ):
        split_at_dropout(nn.Linear(2, 2))
    two = nn.Sequential(nn.Dropout(), nn.Linear(2, 2), nn.Dropout())
    with pytest.raises(
        ValueError, match=r"exactly one dropout layer; got 'a Sequential with 2"
    ):
        split_at_dropout(two)
    with pytest.raises(
        ValueError, match=r"exactly one dropout layer; got 'a Sequential with 0"
    ):
        split_at_dropout(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(
        ValueError, match=r"is torch.nn.Dropout or droplab.nn.Dropout.*Dropout1d layer'"
    ):
        split_at_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout1d()))
    with pytest.raises(ValueError, match=r"'scale'.*'inverted'"):
        exact_average(small, xs, scale="inverse")
    with pytest.raises(ValueError, match=r"'k' argument of mc_logits"):
        mc_logits(small, xs, 0, seed=1)
    with pytest.raises(ValueError, match=r"'seed'"):
        mc_logits(small, xs, 3, seed=-1)
    with pytest.raises(TypeError, match=r"'ks'.*non-empty sequence"):
        averaging_errors(small, xs, [], seed=0)
    with pytest.raises(
        ValueError, match=r"'x'.*as \(batch, units\); got .*shape \(2, 3, 3\)"
    ):
        exact_average(small, torch.ones(2, 3, 4, dtype=torch.float64))


def test_inputs_follow_the_model_dtype():
    model, x = _net(5, nn.Dropout(0.5))
    x32 = x.numpy().astype(np.float32)  # an array, in another dtype
    from_array = exact_average(model, x32)
    from_tensor = exact_average(model, torch.from_numpy(x32.astype(np.float64)))
    np.testing.assert_array_equal(from_array.mean_probs, from_tensor.mean_probs)
    np.testing.assert_array_equal(
        weight_scaling(model, x32)[0], weight_scaling(model, x32.astype(np.float64))[0]
    )
