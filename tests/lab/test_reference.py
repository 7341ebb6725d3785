"""The NumPy reference network: autograd agreement, exact zeros, SGD, the blog's net."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from droplab.lab.reference import ReferenceMLP, Trace
from droplab.masks import SAMPLERS, fixed_keep_count, make_mask
from droplab.scaling import SCALES

WIDTHS = [(3, 4, 2), (4, 3), (5, 7, 6, 3), (6, 8, 8, 8, 4)]


def _data(net: ReferenceMLP, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, net.widths[0]))
    return x, rng.integers(0, net.widths[-1], size=batch)


def _torch_losses(net: ReferenceMLP, trace: Trace, x: np.ndarray, y: np.ndarray):
    """Per-sample losses of the same network in torch, masks applied explicitly."""
    model = net.to_torch()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    h = torch.from_numpy(x)
    for k, linear in enumerate(linears):
        if k:
            h = torch.relu(h)
        if trace.masks[k] is not None:
            factor = trace.masks[k] * trace.scales[k]  # the same NumPy mask
            h = h * torch.from_numpy(factor)
        elif not trace.training and net.scale == "classic" and net.rates[k] > 0:
            h = h * (1.0 - net.rates[k])
        h = linear(h)
    losses = torch.nn.functional.cross_entropy(h, torch.from_numpy(y), reduction="none")
    return h, losses, linears


def _autograd(net, trace, x, y):
    logits, losses, linears = _torch_losses(net, trace, x, y)
    params = [p for m in linears for p in (m.weight, m.bias)]
    per_sample = [
        torch.autograd.grad(loss, params, retain_graph=True) for loss in losses
    ]
    mean = torch.autograd.grad(losses.mean(), params)
    return logits.detach().numpy(), per_sample, mean


@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_gradients_equal_autograd(widths, scale, sampler):
    net = ReferenceMLP(
        widths, p=0.4, p_input=0.25, seed=11, scale=scale, sampler=sampler
    )
    x, y = _data(net, batch=5, seed=len(widths))
    trace = net.forward(x)
    grads = net.backward(trace, y)
    logits, per_sample, mean = _autograd(net, trace, x, y)
    np.testing.assert_allclose(trace.logits, logits, rtol=0, atol=1e-12)
    for k in range(len(net.weights)):
        np.testing.assert_allclose(grads.weights[k], mean[2 * k], rtol=0, atol=1e-10)
        np.testing.assert_allclose(grads.biases[k], mean[2 * k + 1], rtol=0, atol=1e-10)
        for i, terms in enumerate(per_sample):
            np.testing.assert_allclose(
                grads.per_sample_weights[k][i], terms[2 * k], rtol=0, atol=1e-10
            )
            np.testing.assert_allclose(
                grads.per_sample_biases[k][i], terms[2 * k + 1], rtol=0, atol=1e-10
            )


@pytest.mark.parametrize("scale", SCALES)
def test_evaluation_gradients_equal_autograd(scale):
    net = ReferenceMLP((5, 7, 6, 3), p=0.3, p_input=0.2, seed=4, scale=scale)
    x, y = _data(net, batch=4, seed=0)
    trace = net.forward(x, training=False)
    assert all(m is None for m in trace.masks)
    grads = net.backward(trace, y)
    logits, _, mean = _autograd(net, trace, x, y)
    np.testing.assert_allclose(trace.logits, logits, rtol=0, atol=1e-12)
    for k in range(len(net.weights)):
        np.testing.assert_allclose(grads.weights[k], mean[2 * k], rtol=0, atol=1e-10)


def _assert_dropped_give_zero(net: ReferenceMLP, trace: Trace, grads) -> int:
    checked = 0
    for k, mask in enumerate(trace.masks):
        if mask is None:
            continue
        for i, j in zip(*np.nonzero(~mask), strict=True):
            # outgoing weights of unit j of site k, for sample i alone
            assert (grads.per_sample_weights[k][i][:, j] == 0.0).all()
            if k:  # incoming weights and bias of hidden unit j
                assert (grads.per_sample_weights[k - 1][i][j, :] == 0.0).all()
                assert grads.per_sample_biases[k - 1][i][j] == 0.0
            checked += 1
    return checked


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("scale", SCALES)
def test_dropped_units_contribute_exactly_zero(sampler, scale):
    net = ReferenceMLP(
        (6, 8, 8, 3), p=0.5, p_input=0.3, seed=3, scale=scale, sampler=sampler
    )
    x, y = _data(net, batch=6, seed=1)
    trace = net.forward(x)
    grads = net.backward(trace, y)
    assert _assert_dropped_give_zero(net, trace, grads) > 20
    # ... while kept, active hidden units do get a non-zero term somewhere
    # (the last hidden layer: the output's error signal is never zero)
    kept_active = trace.masks[2] & (trace.activations[2] > 0)
    assert (grads.per_sample_weights[2].any(axis=1) == kept_active).all()


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**64 - 1),
    scale=st.sampled_from(SCALES),
    sampler=st.sampled_from(SAMPLERS),
)
def test_property_dropped_units_zero_and_average(widths, p, seed, scale, sampler):
    net = ReferenceMLP(
        widths, p=p, p_input=p / 2, seed=seed, scale=scale, sampler=sampler
    )
    x, y = _data(net, batch=3, seed=0)
    trace = net.forward(x)
    grads = net.backward(trace, y)
    _assert_dropped_give_zero(net, trace, grads)
    for k in range(len(net.weights)):
        assert np.isfinite(grads.per_sample_weights[k]).all()
        np.testing.assert_array_equal(
            grads.weights[k], grads.per_sample_weights[k].mean(axis=0)
        )


def test_step_applies_the_mean_of_per_sample_terms():
    net = ReferenceMLP((5, 7, 3), p=0.5, seed=8, offset=100)
    x, y = _data(net, batch=4, seed=2)
    twin = copy.deepcopy(net)
    grads = twin.backward(twin.forward(x), y)  # the masks step will draw
    before = [w.copy() for w in net.weights]
    used = net.step(x, y, lr=0.3)
    assert net.offset == twin.offset == 100 + 4 * 7
    for k in range(2):
        np.testing.assert_array_equal(used.weights[k], grads.weights[k])
        np.testing.assert_array_equal(
            net.weights[k], before[k] - 0.3 * grads.per_sample_weights[k].mean(axis=0)
        )


def test_blog_network_on_a_batch_of_three():
    """3 inputs, 4 hidden units, p = 0.5, a mini-batch of 3: one subnetwork each."""
    net = ReferenceMLP((3, 4, 2), p=0.5, seed=12)
    x = np.ones((3, 3))
    trace = net.forward(x)
    assert [a.shape for a in trace.activations] == [(3, 3), (3, 4)]
    assert trace.masks[0] is None and trace.masks[1].shape == (3, 4)
    assert trace.offsets == [None, 0] and net.offset == 12
    np.testing.assert_array_equal(trace.masks[1], make_mask((3, 4), 0.5, seed=12))
    np.testing.assert_array_equal(trace.scales[1], np.full((3, 1), 2.0))
    grads = net.backward(trace, np.array([0, 1, 1]))
    assert [g.shape for g in grads.per_sample_weights] == [(3, 4, 3), (3, 2, 4)]
    assert [g.shape for g in grads.weights] == [(4, 3), (2, 4)]
    again = net.forward(x)  # the stream moved on: fresh masks
    assert again.offsets == [None, 12]
    np.testing.assert_array_equal(
        again.masks[1], make_mask((3, 4), 0.5, seed=12, offset=12)
    )


def test_sgd_on_blog_network_reduces_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=60)
    x = rng.normal(size=(60, 3)) + np.where(y[:, None] == 1, 1.5, -1.5)
    net = ReferenceMLP((3, 4, 2), p=0.5, seed=5)
    start_loss, _ = net.evaluate(x, y)
    for _ in range(30):
        for b in range(0, 60, 3):
            net.step(x[b : b + 3], y[b : b + 3], lr=0.1)
    end_loss, accuracy = net.evaluate(x, y)
    assert end_loss < 0.5 * start_loss
    assert accuracy >= 0.9
    np.testing.assert_array_equal(net.predict(x), net.predict_proba(x).argmax(axis=1))


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        net = ReferenceMLP((4, 6, 3), p=0.5, seed=21, sampler="fixed")
        x, y = _data(net, batch=5, seed=3)
        losses = [net.step(x, y, lr=0.2).loss for _ in range(5)]
        runs.append((losses, net.weights[0].copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_samplers_and_scales_per_sample():
    net = ReferenceMLP(
        (4, 10, 10, 2), p=(0.3, 0.6), seed=9, sampler="fixed", scale="realized"
    )
    trace = net.forward(np.ones((7, 4)))
    for k, p in ((1, 0.3), (2, 0.6)):
        kept = trace.masks[k].sum(axis=1)
        assert (kept == fixed_keep_count(10, p)).all()
        np.testing.assert_array_equal(trace.scales[k][:, 0], 10 / kept)
    bern = ReferenceMLP((4, 10, 2), p=0.5, seed=9, scale="realized").forward(
        np.ones((50, 4))
    )
    kept = bern.masks[1].sum(axis=1)
    assert len(set(kept.tolist())) > 1  # bernoulli: counts vary, so does the scale
    np.testing.assert_array_equal(
        bern.scales[1][:, 0], np.where(kept > 0, 10 / np.maximum(kept, 1), 0)
    )


def test_p_one_drops_everything_with_finite_zero_gradients():
    net = ReferenceMLP((3, 5, 2), p=1.0, seed=0)
    x, y = _data(net, batch=4, seed=0)
    grads = net.backward(net.forward(x), y)
    assert not net.forward(x).masks[1].any()
    assert (grads.per_sample_weights[0] == 0.0).all()
    assert (grads.per_sample_weights[1] == 0.0).all()
    assert np.isfinite(grads.biases[1]).all()


def test_evaluation_rules():
    x, _ = _data(ReferenceMLP((5, 6, 6, 3)), batch=4, seed=5)
    plain = ReferenceMLP((5, 6, 6, 3), p=0.0, seed=2)
    for scale in ("inverted", "realized", "none"):
        net = ReferenceMLP((5, 6, 6, 3), p=0.4, p_input=0.2, seed=2, scale=scale)
        np.testing.assert_array_equal(
            net.forward(x, training=False).logits,
            plain.forward(x, training=False).logits,
        )
    classic = ReferenceMLP((5, 6, 6, 3), p=0.4, p_input=0.2, seed=2, scale="classic")
    scaled = copy.deepcopy(plain)  # classic evaluation = weights times (1 - p)
    for k, keep in enumerate((0.8, 0.6, 0.6)):
        scaled.weights[k] = plain.weights[k] * keep
    np.testing.assert_allclose(
        classic.forward(x, training=False).logits,
        scaled.forward(x, training=False).logits,
        rtol=0,
        atol=1e-14,
    )
    assert classic.offset == 0  # evaluation draws nothing


def test_explicit_masks_do_not_use_the_stream():
    net = ReferenceMLP((3, 4, 2), p=0.5, seed=1, offset=5)
    masks = [None, np.array([[1, 0, 1, 1], [0, 0, 0, 1]], bool)]
    trace = net.forward(np.ones((2, 3)), masks=masks)
    assert net.offset == 5 and trace.offsets == [None, None]
    np.testing.assert_array_equal(trace.dropped[1][masks[1] == 0], 0.0)


def test_torch_round_trip():
    net = ReferenceMLP((4, 6, 5, 3), p=0.5, seed=2)
    model = net.to_torch()
    x, _ = _data(net, batch=3, seed=0)
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, net.forward(x, training=False).logits, atol=1e-13)
    layers = list(model)
    with_dropout = torch.nn.Sequential(
        torch.nn.Dropout(0.1), layers[0], layers[1], torch.nn.Dropout(0.3),
        layers[2], torch.nn.Dropout(0.2), layers[3], layers[4],
    )  # fmt: skip
    back = ReferenceMLP.from_torch(with_dropout, seed=7, scale="classic")
    assert back.widths == (4, 6, 5, 3) and back.rates == (0.1, 0.3, 0.2)
    assert back.scale == "classic" and back.seed == 7
    for k in range(3):
        np.testing.assert_array_equal(back.weights[k], net.weights[k])
        np.testing.assert_array_equal(back.biases[k], net.biases[k])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"widths": (3,)}, ValueError, r"'widths' argument of ReferenceMLP must be at least"),
        ({"widths": "34"}, TypeError, r"'widths'.*sequence of positive integers"),
        ({"widths": (3, 0, 2)}, ValueError, r"'widths'.*integer in \[1, inf\)"),
        ({"widths": (3, 4, 2), "p": 1.5}, ValueError, r"'p'.*\[0, 1\]; got 1.5"),
        ({"widths": (3, 4, 2), "p": (0.1, 0.2)}, ValueError, r"'p'.*a sequence of 1 \(one per hidden"),
        ({"widths": (3, 4, 2), "p_input": -0.1}, ValueError, r"'p_input'"),
        ({"widths": (3, 4, 2), "scale": "inverse"}, ValueError, r"'scale'.*'inverted'"),
        ({"widths": (3, 4, 2), "sampler": "exact"}, ValueError, r"'sampler'.*'fixed'"),
        ({"widths": (3, 4, 2), "seed": -1}, ValueError, r"'seed'"),
        ({"widths": (3, 2), "weights": [np.zeros((3, 2))], "biases": [np.zeros(2)]},
         ValueError, r"'weights'.*shapes \[\(2, 3\)\]"),
    ],
)  # fmt: skip
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ReferenceMLP(**kwargs)


def test_bad_call_arguments():
    net = ReferenceMLP((3, 4, 2), seed=0)
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"'x'.*shape \(batch, 3\)"):
        net.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"'masks'.*2 masks"):
        net.forward(x, masks=[None])
    with pytest.raises(ValueError, match=r"'masks'.*shape \(2, 4\)"):
        net.forward(x, masks=[None, np.ones((2, 5), bool)])
    with pytest.raises(ValueError, match=r"'y'.*2 labels in \[0, 2\)"):
        net.backward(net.forward(x), np.array([0, 2]))
    with pytest.raises(TypeError, match=r"'y'.*integer class labels"):
        net.backward(net.forward(x), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"'lr'.*positive real number"):
        net.step(x, np.array([0, 1]), lr=0.0)
    with pytest.raises(TypeError, match=r"'model'.*Sequential of Linear"):
        ReferenceMLP.from_torch(
            torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
        )
    with pytest.raises(ValueError, match=r"'model'.*before a Linear"):
        ReferenceMLP.from_torch(
            torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout())
        )


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_masks_and_gradients_as_droplab_functional_dropout(scale, sampler):
    """droplab.functional.dropout with the trace's (seed, offset) drops the same units."""
    from droplab.functional import dropout

    net = ReferenceMLP(
        (5, 9, 7, 3), p=0.4, p_input=0.2, seed=31, scale=scale, sampler=sampler
    )
    x, y = _data(net, batch=4, seed=6)
    trace = net.forward(x)
    grads = net.backward(trace, y)
    linears = [m for m in net.to_torch() if isinstance(m, torch.nn.Linear)]
    h = torch.from_numpy(x)
    for k, linear in enumerate(linears):
        if k:
            h = torch.relu(h)
        h = dropout(
            h,
            net.rates[k],
            seed=net.seed,
            offset=trace.offsets[k],
            scale=scale,
            sampler=sampler,
        )
        np.testing.assert_allclose(
            h.detach().numpy(), trace.dropped[k], rtol=1e-15, atol=0
        )
        h = linear(h)
    torch.nn.functional.cross_entropy(h, torch.from_numpy(y)).backward()
    for k, linear in enumerate(linears):
        np.testing.assert_allclose(
            grads.weights[k], linear.weight.grad, rtol=0, atol=1e-10
        )
        np.testing.assert_allclose(
            grads.biases[k], linear.bias.grad, rtol=0, atol=1e-10
        )
