"""Dropout1d/2d/3d and Keras' noise_shape: whole channels, PyTorch's input rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import droplab.nn
from droplab.functional import dropout
from droplab.masks import bernoulli_mask
from droplab.variants.channel import (
    Dropout1d,
    Dropout2d,
    Dropout3d,
    dropout1d,
    dropout2d,
    dropout3d,
    shared_dims_from_noise_shape,
)


def saved_bytes(fn):
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("op", "shape"),
    [(dropout1d, (6, 5, 7)), (dropout2d, (6, 5, 3, 4)), (dropout3d, (6, 5, 2, 3, 2))],
)
def test_whole_channels_match_the_numpy_mask(op, shape):
    x = randn(*shape)
    y = op(x, 0.4, seed=11, offset=3)
    keep = bernoulli_mask(shape[:2], 0.4, seed=11, offset=3)  # one draw per (n, c)
    expected = (
        x * torch.from_numpy(keep).reshape(*shape[:2], *[1] * (len(shape) - 2)) / 0.6
    )
    assert torch.allclose(y, expected, rtol=0, atol=1e-15)
    flat = y.reshape(*shape[:2], -1)
    dropped = (flat == 0).all(-1)
    assert torch.equal(~dropped, torch.from_numpy(keep))


def test_channel_keep_rate_within_binomial_bound():
    n, c, p = 400, 50, 0.3
    y = dropout2d(torch.ones(n, c, 2, 2), p, seed=5)
    kept = (y[:, :, 0, 0] != 0).double().mean().item()
    assert abs(kept - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / (n * c))
    # whole channels: every pixel of a channel shares its fate
    assert torch.equal(y.amax(dim=(2, 3)), y.amin(dim=(2, 3)))


@pytest.mark.parametrize(
    ("op", "unbatched"), [(dropout1d, (5, 7)), (dropout3d, (5, 2, 3, 2))]
)
def test_unbatched_equals_a_batch_of_one(op, unbatched):
    x = randn(*unbatched)
    assert torch.equal(op(x, 0.5, seed=2), op(x.unsqueeze(0), 0.5, seed=2)[0])


def test_dropout1d_refuses_other_ranks():
    with pytest.raises(ValueError, match=r"dropout1d must be a 2-d \(C, L\) or 3-d"):
        dropout1d(torch.ones(2, 3, 4, 5), 0.5, seed=0)
    # torch's phrase, which torch's own test (test/nn/test_dropout.py) matches
    # as a RuntimeError
    for shape, ndim in [((1, 2, 2, 2), 4), ((2,), 1)]:
        with pytest.raises(
            RuntimeError, match=f"Expected 2D or 3D input, but received a {ndim}D input"
        ):
            droplab.nn.Dropout1d(p=0.5)(torch.rand(shape))


def test_dropout2d_on_3d_input_warns_and_reads_n_c_l_as_torch():
    x = randn(4, 6, 5)
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout"):
        y = dropout2d(x, 0.5, seed=9)
    assert torch.equal(y, dropout1d(x, 0.5, seed=9))


@pytest.mark.parametrize(
    ("op", "shape"), [(dropout2d, (2, 3, 4, 5, 6)), (dropout3d, (3, 4, 5))]
)
def test_other_ranks_warn_as_torch(op, shape):
    with pytest.warns(UserWarning, match="which is deprecated"):
        y = op(torch.ones(shape), 0.5, seed=0)
    assert y.shape == shape


def test_torch_gives_the_same_warnings():
    # the positive control for the two tests above
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout"):
        torch.nn.functional.dropout2d(torch.ones(2, 3, 4))
    with pytest.warns(UserWarning, match="which is deprecated"):
        torch.nn.functional.dropout3d(torch.ones(3, 4, 5))


def test_eval_is_identity_and_classic_scales():
    x = randn(2, 3, 4)
    assert dropout1d(x, 0.5, training=False) is x
    assert torch.allclose(dropout1d(x, 0.25, False, scale="classic"), 0.75 * x)


def test_gradients_on_a_fixed_mask_and_nothing_saved():
    x = randn(3, 4, 5).requires_grad_()
    f = lambda t: dropout1d(t, 0.5, seed=7)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    nbytes, _ = saved_bytes(
        lambda: dropout2d(randn(8, 16, 6, 6).requires_grad_(), 0.5, seed=1)
    )
    assert nbytes == 0


def test_fixed_sampler_keeps_exactly_round_c_channels_per_sample():
    y = dropout2d(torch.ones(10, 20, 3, 3), 0.3, seed=4, sampler="fixed")
    assert ((y[:, :, 0, 0] != 0).sum(1) == 14).all()


def test_module_stream_and_state_dict_replay():
    m = Dropout2d(0.5, seed=123)
    x = torch.ones(3, 4, 2, 2)
    first = m(x)
    assert m.offset == 12
    state = m.state_dict()
    second = m(x)
    assert not torch.equal(first, second)
    fresh = Dropout2d(0.5)
    fresh.load_state_dict(state)
    assert (fresh.seed, fresh.offset) == (123, 12)
    assert torch.equal(fresh(x), second)
    assert torch.equal(Dropout2d(0.5, seed=123)(x), first)  # same seed, same output
    assert repr(m) == "Dropout2d(p=0.5, inplace=False, seed=123, offset=24)"


def test_module_seed_none_follows_torch_manual_seed():
    x = torch.ones(4, 8, 3)
    torch.manual_seed(0)
    a = Dropout1d(0.5)(x)
    torch.manual_seed(0)
    assert torch.equal(a, Dropout1d(0.5)(x))


def test_eval_module_is_identity_and_keeps_offset():
    m = Dropout3d(0.5, seed=1).eval()
    x = torch.ones(2, 3, 2, 2, 2)
    assert torch.equal(m(x), x) and m.offset == 0


def test_inplace_writes_into_the_input():
    x = torch.ones(2, 6, 3)
    y = dropout1d(x, 0.5, seed=3, inplace=True)
    assert y is x and torch.equal(x, dropout1d(torch.ones(2, 6, 3), 0.5, seed=3))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: dropout2d(torch.ones(2, 3, 4, 4), 1.5),
            ValueError,
            r"'p' argument of dropout2d",
        ),
        (
            lambda: Dropout1d(0.5, scale="inverse"),
            ValueError,
            r"'scale' argument of Dropout1d",
        ),
        (lambda: Dropout3d(0.5, seed=-1), ValueError, r"'seed' argument of Dropout3d"),
        (
            lambda: dropout1d(torch.ones(2, 3, dtype=torch.int64)),
            TypeError,
            r"'x' argument of dropout1d",
        ),
        (lambda: Dropout2d(0.5, inplace=1), TypeError, r"'inplace' argument"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_noise_shape_maps_to_shared_dims():
    shape = (8, 5, 5, 16)  # Keras channels-last images
    assert shared_dims_from_noise_shape((8, 1, 1, 16), shape) == (1, 2)
    assert shared_dims_from_noise_shape((None, 1, 1, None), shape) == (1, 2)
    assert shared_dims_from_noise_shape(shape, shape) == ()
    y = dropout(
        torch.ones(shape),
        0.5,
        seed=0,
        shared_dims=shared_dims_from_noise_shape((None, 1, 1, None), shape),
    )
    assert torch.equal(y.amax(dim=(1, 2)), y.amin(dim=(1, 2)))
    expected = bernoulli_mask((8, 1, 1, 16), 0.5, seed=0)
    assert np.array_equal(y[:, :1, :1, :].numpy() != 0, expected)


@pytest.mark.parametrize(
    ("noise_shape", "match"),
    [
        ((8, 1, 1), r"a sequence of 4 entries"),
        ((8, 2, 1, 16), r"1, None or the input's size"),
    ],
)
def test_noise_shape_errors(noise_shape, match):
    with pytest.raises(ValueError, match=match):
        shared_dims_from_noise_shape(noise_shape, (8, 5, 5, 16))
    with pytest.raises(TypeError, match="'noise_shape' argument"):
        shared_dims_from_noise_shape(3, (8,))


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 5),
    length=st.integers(1, 4),
    p=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    dtype=st.sampled_from(
        [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    ),
)
def test_property_shape_dtype_and_values(n, c, length, p, dtype):
    x = (
        torch.arange(1, n * c * length + 1, dtype=torch.float64)
        .reshape(n, c, length)
        .to(dtype)
    )
    y = dropout1d(x, p, seed=1)
    assert y.shape == x.shape and y.dtype == dtype
    scale = 0.0 if p == 1 else 1 / (1 - p)
    expected = (x.float() * torch.tensor(scale, dtype=torch.float32)).to(dtype)
    assert bool(((y == 0) | (y == expected)).all())
    if p == 0:
        assert torch.equal(y, x)
