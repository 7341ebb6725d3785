"""Attention dropout on droplab's stream: scaled_dot_product_attention's math
form against torch's own (same mask, bit for bit), nn.MultiheadAttention on both
``need_weights`` paths, replay under intercept, sampling under mc_predict, and
the warning for draws droplab does not replay."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import droplab
from droplab import dropout, mc_predict
from droplab.interop.attention import attention_math

ATEN_MATH = torch.ops.aten._scaled_dot_product_attention_math


def keep_of(
    shape: tuple[int, ...], p: float, seed: int, offset: int = 0
) -> torch.Tensor:
    """droplab's keep mask for a tensor of ``shape`` (what droplab.dropout keeps)."""
    ones = torch.ones(shape, dtype=torch.float64)
    return dropout(ones, p, seed=seed, offset=offset, scale="none") != 0


def fixed_draw(seed: int):
    offsets = [0]

    def draw(n: int) -> tuple[int, int]:
        start = offsets[0]
        offsets[0] += n
        return seed, start

    return draw


CASES = [
    # (q batch dims, kv heads, mask kind, is_causal, scale, enable_gqa)
    ((2, 4), 4, None, False, None, False),
    ((2, 4), 4, "bool", False, None, False),
    ((2, 4), 4, "float", False, 0.3, False),
    ((2, 4), 4, None, True, None, False),
    ((2, 4), 2, None, False, None, True),
    ((2, 4), 2, "bool", False, -0.5, True),
    ((3,), 3, "float", False, None, False),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_math_form_is_torchs_math_form_with_the_same_mask(case, dtype) -> None:
    batch, kv_heads, mask_kind, causal, scale, gqa = case
    torch.manual_seed(1)
    L, S, E = 5, 7 if not causal else 5, 8
    q = torch.randn(*batch, L, E, dtype=dtype)
    kv_batch = (*batch[:-1], kv_heads) if len(batch) > 1 else batch
    k = torch.randn(*kv_batch, S, E, dtype=dtype)
    v = torch.randn(*kv_batch, S, 6, dtype=dtype)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(L, S) > 0.3
        mask[:, 0] = True  # no fully masked row
    elif mask_kind == "float":
        mask = torch.randn(L, S, dtype=dtype)
    p = 0.4
    ours = attention_math(
        q, k, v, mask, p, causal, scale=scale, enable_gqa=gqa, draw=fixed_draw(11)
    )
    keep = keep_of((*batch, L, S), p, 11)
    # torch converts a bool mask before its math kernel (which adds the mask)
    additive = mask
    if mask is not None and mask.dtype == torch.bool:
        additive = torch.zeros(L, S, dtype=dtype).masked_fill(~mask, -torch.inf)
    torch_out, _ = ATEN_MATH(
        q, k, v, additive, p, causal, keep, scale=scale, enable_gqa=gqa
    )
    assert torch.equal(ours, torch_out)
    # and without dropout, torch's function itself (to rounding)
    plain = attention_math(
        q, k, v, mask, 0.0, causal, scale=scale, enable_gqa=gqa, draw=fixed_draw(0)
    )
    reference = F.scaled_dot_product_attention(
        q, k, v, mask, 0.0, causal, scale=scale, enable_gqa=gqa
    )
    torch.testing.assert_close(plain, reference)


def test_math_form_refuses_a_mask_with_is_causal() -> None:
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"'attn_mask'.*is_causal=True"):
        attention_math(
            q, q, q, torch.ones(3, 3, dtype=torch.bool), 0.1, True, draw=fixed_draw(0)
        )


def test_sdpa_under_intercept_replays_and_takes_the_stream_in_order() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 8) for _ in range(3))
    with droplab.intercept(seed=5) as mode:
        first = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
        second = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    assert mode.calls == 2 and mode.offset == 2 * 2 * 3 * 4 * 4
    with droplab.intercept(seed=5):
        assert torch.equal(
            F.scaled_dot_product_attention(q, k, v, dropout_p=0.3), first
        )
    assert not torch.equal(first, second)
    keep = keep_of((2, 3, 4, 4), 0.3, 5, offset=2 * 3 * 4 * 4)
    expected, _ = ATEN_MATH(q, k, v, None, 0.3, False, keep)
    assert torch.equal(second, expected)
    # dropout_p = 0 is torch's own call, drawing nothing
    with droplab.intercept(seed=5) as mode:
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    assert mode.calls == 0 and mode.offset == 0


def test_gradients_flow_through_the_math_form() -> None:
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    with droplab.intercept(seed=1):
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.5).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


class Block(nn.Module):
    def __init__(self, width: int = 8, heads: int = 2, p: float = 0.3) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(
            width, heads, dropout=p, batch_first=True
        )
        self.head = nn.Linear(width, 3)
        self.need_weights = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.attention(x, x, x, need_weights=self.need_weights)
        return self.head(h.mean(1))


def test_multihead_attention_draws_the_same_mask_on_both_paths() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True).train()
    x = torch.randn(3, 5, 8)
    with droplab.intercept(seed=2) as fast:
        a = mha(x, x, x, need_weights=False)[0]
    with droplab.intercept(seed=2) as slow:
        b = mha(x, x, x, need_weights=True)[0]
    with droplab.intercept(seed=2):
        again = mha(x, x, x, need_weights=False)[0]
    assert torch.equal(a, again)
    # the same (B, heads, L, S) elements of the stream, in the same order: the
    # two paths differ only in where 1 / (1 - p) is applied
    assert fast.offset == slow.offset == 3 * 2 * 5 * 5
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # a reference written out: projections, weights, droplab's mask, output
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)

    def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, E) -> (B, H, L, E / H)
        return t.reshape(3, 5, 2, 4).transpose(1, 2)

    q, k, v = (
        heads(F.linear(x, w_q, b_q)),
        heads(F.linear(x, w_k, b_k)),
        heads(F.linear(x, w_v, b_v)),
    )
    weights = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1)
    kept = weights * keep_of((3, 2, 5, 5), 0.5, 2) * 2.0
    expected = mha.out_proj((kept @ v).transpose(1, 2).reshape(3, 5, 8))
    torch.testing.assert_close(b, expected, rtol=1e-5, atol=1e-6)
    # in eval mode the module draws nothing and is torch's
    mha.eval()
    with droplab.intercept(seed=2) as mode:
        torch.testing.assert_close(mha(x, x, x)[0], mha(x, x, x)[0])
    assert mode.calls == 0


@pytest.mark.parametrize("need_weights", [False, True])
def test_mc_predict_samples_multihead_attention_dropout(need_weights: bool) -> None:
    torch.manual_seed(0)
    model = Block().eval()
    model.need_weights = need_weights
    x = torch.randn(4, 5, 8)
    a = mc_predict(model, x, samples=16, seed=3, chunk=16, keep_samples=True)
    b = mc_predict(model, x, samples=16, seed=3, chunk=16, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    assert torch.equal(a.samples, b.samples) and bool((a.variance > 0).all())
    model.attention.dropout = 0.0
    assert float(mc_predict(model, x, samples=4, seed=3).variance.max()) == 0.0
    assert not model.training  # the mode came back


def test_mc_predict_samples_sdpa_dropout_whatever_the_chunking() -> None:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.proj(x).reshape(x.shape[0], 2, 3, 2)  # (B, heads, L, E)
            p = 0.3 if self.training else 0.0
            return F.scaled_dot_product_attention(h, h, h, dropout_p=p).sum((1, 3))

    torch.manual_seed(0)
    model = Attention().double().eval()
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    a = mc_predict(model, x, samples=12, seed=1, chunk=12, keep_samples=True)
    b = mc_predict(model, x, samples=12, seed=1, chunk=5, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=1e-12)
    assert bool((a.variance > 0).all())


class Noisy(nn.Module):
    """A model with draws droplab does not replay: Gaussian noise, an RNN's
    inter-layer dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 4, num_layers=2, dropout=0.5, batch_first=True)
        self.drop = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + 0.1 * torch.randn_like(x) if self.training else x
        return self.drop(self.rnn(h)[0])


def test_unreplayed_draws_are_named_once_per_module_path() -> None:
    model = Noisy().eval()
    x = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning) as record:
        mc_predict(model, x, samples=4, seed=0, chunk=2)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2, messages  # two draws, named once each over 2 chunks
    assert "the inter-layer dropout of torch.lstm in 'rnn'" in messages[0]
    assert "torch.randn_like in '<root>'" in messages[1]
    assert "does not replay" in messages[1]
    with pytest.raises(ValueError, match=r"mc_predict|intercept"):
        mc_predict(model, x, samples=2, seed=0, strict=True)
    # a bare intercept names the module by its class chain, or by its path
    with pytest.warns(UserWarning) as record, droplab.intercept(seed=0):
        model.train()(x)
    assert sorted(str(w.message).split(" draws")[0] for w in record) == [
        "the inter-layer dropout of torch.lstm in 'Noisy>LSTM'",
        "torch.randn_like in 'Noisy'",
    ]
    with pytest.warns(UserWarning) as record, droplab.intercept(seed=0, model=model):
        model(x)
    assert sorted(str(w.message).split(" draws")[0] for w in record) == [
        "the inter-layer dropout of torch.lstm in 'rnn'",
        "torch.randn_like in '<root>'",
    ]


def test_a_model_whose_draws_are_all_replayed_warns_nothing() -> None:
    model = Block().eval()
    x, noisy, y = torch.randn(2, 5, 8), Noisy().train(), torch.randn(2, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mc_predict(model, x, samples=4, seed=0)
        with droplab.intercept(seed=0, strict=True):
            model.train()(x)
    # without a seed nothing replays anyway: torch's generator is the stream
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with droplab.intercept():
            noisy(y)
