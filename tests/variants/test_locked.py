"""LockedDropout: one mask per sequence, reused at every time step."""

from __future__ import annotations

import math

import pytest
import torch

from droplab.masks import bernoulli_mask
from droplab.variants.locked import LockedDropout, locked_dropout


def randn(*shape):
    return torch.randn(
        *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )


def test_one_mask_for_every_time_step_from_the_numpy_mask():
    x = randn(7, 3, 5)  # (T, N, H)
    y = locked_dropout(x, 0.4, seed=12, offset=1)
    keep = torch.from_numpy(bernoulli_mask((3, 1, 5), 0.4, seed=12, offset=1))[
        :, 0
    ]  # (N, H)
    for t in range(7):
        assert torch.allclose(y[t], x[t] * keep / 0.6, rtol=0, atol=1e-15)


def test_batch_first_is_the_same_mask_on_the_transposed_input():
    x = randn(7, 3, 5)
    a = locked_dropout(x, 0.5, seed=4)
    b = locked_dropout(x.transpose(0, 1).contiguous(), 0.5, seed=4, batch_first=True)
    assert torch.equal(a, b.transpose(0, 1))


def test_keep_rate_within_binomial_bound():
    n, h, p = 200, 100, 0.25
    y = locked_dropout(torch.ones(4, n, h), p, seed=2)
    kept = float((y[0] != 0).double().mean())
    assert abs(kept - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / (n * h))
    assert torch.equal(y[0], y[3])


def test_fixed_sampler_rows_are_sequences():
    y = locked_dropout(torch.ones(3, 4, 10), 0.3, seed=1, sampler="fixed")
    assert ((y[0] != 0).sum(-1) == 7).all()


def test_gradcheck_and_eval():
    x = randn(4, 2, 3).requires_grad_()
    f = lambda t: locked_dropout(t, 0.5, seed=5)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    assert locked_dropout(x, 0.5, training=False) is x
    assert torch.allclose(locked_dropout(x, 0.5, False, scale="classic"), 0.5 * x)


def test_module_stream_and_state_dict():
    m = LockedDropout(0.5, seed=8)
    x = torch.ones(6, 2, 3)
    first = m(x)
    assert m.offset == 6  # N * H, whatever T is
    state = m.state_dict()
    second = m(x)
    other = LockedDropout(0.5)
    other.load_state_dict(state)
    assert torch.equal(other(x), second)
    assert torch.equal(LockedDropout(0.5, seed=8)(x), first)
    assert repr(m) == "LockedDropout(p=0.5, seed=8, offset=12)"
    m.eval()
    assert m(x) is x


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: locked_dropout(torch.ones(5), 0.5, seed=0),
            ValueError,
            r"sequence batch \(T, N, \.\.\.\)",
        ),
        (
            lambda: LockedDropout(0.5, batch_first=True)(torch.ones(5)),
            ValueError,
            r"\(N, T, \.\.\.\)",
        ),
        (lambda: LockedDropout(1.5), ValueError, r"'p' argument of LockedDropout"),
        (
            lambda: LockedDropout(0.5, batch_first="yes"),
            TypeError,
            r"'batch_first' argument",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
