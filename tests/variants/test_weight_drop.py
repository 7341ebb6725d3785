"""WeightDropLSTM: DropConnect on weight_hh (one mask per forward) + locked dropout."""

from __future__ import annotations

import pytest
import torch

from droplab.masks import bernoulli_mask
from droplab.variants.weight_drop import WeightDropLSTM


def randn(*shape, seed=0):
    return torch.randn(
        *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def torch_lstm_like(m):
    """A torch.nn.LSTM(num_layers) holding the raw weights of m's layers."""
    ref = torch.nn.LSTM(
        m.input_size, m.hidden_size, m.num_layers, batch_first=m.batch_first
    ).double()
    with torch.no_grad():
        for i, layer in enumerate(m.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{i}").copy_(getattr(layer, f"{name}_l0"))
    return ref


def test_without_dropout_it_is_torch_lstm():
    torch.manual_seed(0)
    m = WeightDropLSTM(3, 4, num_layers=2, weight_p=0.0).double()
    ref = torch_lstm_like(m)
    x, h0, c0 = randn(6, 2, 3), randn(2, 2, 4, seed=1), randn(2, 2, 4, seed=2)
    out, (h, c) = m(x, (h0, c0))
    out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    assert torch.allclose(out, out_ref, atol=1e-12)
    assert torch.allclose(h, h_ref, atol=1e-12) and torch.allclose(c, c_ref, atol=1e-12)
    m.eval()  # the raw weights at evaluation (inverted rule)
    m.weight_p = 0.5
    assert torch.allclose(m(x, (h0, c0))[0], out_ref, atol=1e-12)


def test_one_weight_mask_per_forward_pass_at_every_time_step():
    torch.manual_seed(0)
    m = WeightDropLSTM(3, 4, weight_p=0.5, seed=21).double()
    x = randn(8, 2, 3)
    out, _ = m(x)
    # stream: input mask (N * 3 = 6 elements, p = 0), then weight_hh (16 x 4)
    keep = torch.from_numpy(bernoulli_mask((16, 4), 0.5, seed=21, offset=6))
    ref = torch_lstm_like(m)
    with torch.no_grad():
        ref.weight_hh_l0.mul_(keep * 2.0)
    assert torch.allclose(out, ref(x)[0], atol=1e-12)
    assert m.offset == 6 + 64 + 8


def test_gradient_of_dropped_recurrent_weights_is_zero():
    m = WeightDropLSTM(2, 3, weight_p=0.5, seed=4).double()
    out, _ = m(randn(5, 1, 2))
    out.sum().backward()
    keep = torch.from_numpy(bernoulli_mask((12, 3), 0.5, seed=4, offset=2))
    grad = m.layers[0].weight_hh_l0.grad
    assert bool((grad[~keep] == 0).all()) and bool((grad[keep] != 0).any())


def test_gradcheck_with_a_fixed_stream():
    m = WeightDropLSTM(
        2,
        2,
        num_layers=2,
        weight_p=0.3,
        input_p=0.2,
        hidden_p=0.2,
        output_p=0.2,
        seed=3,
    ).double()

    def f(x):
        m.offset = 0  # the same masks on every call
        return m(x)[0]

    assert torch.autograd.gradcheck(f, (randn(4, 2, 2).requires_grad_(),))


def test_locked_dropout_on_inputs_and_outputs_is_shared_over_time():
    m = WeightDropLSTM(3, 4, weight_p=0.0, output_p=0.5, seed=0).double()
    out, _ = m(randn(6, 5, 3))
    zero = out == 0
    assert torch.equal(zero, zero[0].expand_as(zero)) and bool(zero.any())


def test_batch_first_and_unbatched():
    torch.manual_seed(1)
    m = WeightDropLSTM(3, 4, batch_first=True, weight_p=0.0).double()
    ref = torch_lstm_like(m)
    x = randn(2, 6, 3)
    assert torch.allclose(m(x)[0], ref(x)[0], atol=1e-12)
    single, (h, c) = m(x[0])
    assert c.shape == (1, 4)
    assert single.shape == (6, 4) and h.shape == (1, 4)
    assert torch.allclose(single, ref(x[0])[0], atol=1e-12)


def test_state_dict_round_trip_replays_the_masks():
    m = WeightDropLSTM(3, 4, weight_p=0.5, input_p=0.3, seed=9).double()
    x = randn(5, 2, 3)
    m(x)
    state = m.state_dict()
    second = m(x)[0]
    other = WeightDropLSTM(3, 4, weight_p=0.5, input_p=0.3).double()
    other.load_state_dict(state)
    assert other.offset == m.offset // 2
    assert torch.equal(other(x)[0], second)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: WeightDropLSTM(3, 4)(torch.ones(5, 2, 2)),
            ValueError,
            r"'x' argument of WeightDropLSTM",
        ),
        (lambda: WeightDropLSTM(3, 4, weight_p=2), ValueError, r"'weight_p' argument"),
        (lambda: WeightDropLSTM(3, 4, scale="none"), ValueError, r"'scale' argument"),
        (lambda: WeightDropLSTM(3, 0), ValueError, r"'hidden_size' argument"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
