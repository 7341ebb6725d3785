"""Attention dropout on droplab's stream: the math form of torch's attention.

``torch.nn.functional.scaled_dot_product_attention(..., dropout_p=p)`` draws its
mask inside a fused kernel (or inside its own math path), where no mode can
reach it. Under :func:`droplab.intercept` (and so under
:func:`droplab.mc_predict`) such a call is computed by :func:`attention_math`
instead: the math form of torch's own ``_scaled_dot_product_attention_math``,

    weights = softmax((q * sqrt(s)) (k * sqrt(s))^T + mask)   # (..., L, S)
    out = (weights * keep) (v / (1 - p))

with ``s`` the scale (``1 / sqrt(E)`` by default), ``mask`` the float mask
(a bool ``attn_mask`` becomes 0 where True and -inf where False;
``is_causal`` the lower triangle), ``enable_gqa`` repeating the key and value
heads, and ``keep`` droplab's Bernoulli keep mask over the weights' shape
``(..., L, S)``, drawn from the stream like ``droplab.dropout`` on a tensor of
that shape. Given the same keep mask, the result is torch's math form bit for
bit (``torch.ops.aten._scaled_dot_product_attention_math(..., dropout_mask=keep)``
computes exactly this; tested).

``nn.MultiheadAttention`` calls ``F.multi_head_attention_forward``, a Python
function whose attention dropout (``F.dropout`` on the weights with
``need_weights=True``, the attention function otherwise) runs where a mode no
longer sees it. :func:`multi_head_attention` runs torch's own function with
those two names bound to droplab's forms, and nothing else changed.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F

from droplab._core.dropout import dropout
from droplab._validation import fail

__all__ = ["attention_math", "multi_head_attention"]

# (elements) -> (seed, offset): where a call's mask comes from.
Draw = Callable[[int], tuple[int, int]]


def attention_math(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
    draw: Draw,
) -> torch.Tensor:
    """``scaled_dot_product_attention`` with its dropout drawn by droplab.

    Args:
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa:
            as ``torch.nn.functional.scaled_dot_product_attention``.
        draw: gives ``(seed, offset)`` for a mask of ``n`` elements.

    Returns:
        The attention output, ``(..., L, Ev)``.
    """
    if is_causal and attn_mask is not None:
        raise fail(
            "attn_mask",
            attn_mask,
            "None when is_causal=True (torch refuses both too)",
            owner="scaled_dot_product_attention",
            got="a tensor",
        )
    negative = scale is not None and scale < 0.0
    base = abs(scale) if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    factor = math.sqrt(base)
    q = query * (-factor if negative else factor)
    mask = attn_mask
    if is_causal:
        rows, cols = query.shape[-2], key.shape[-2]
        mask = torch.ones(rows, cols, dtype=torch.bool, device=query.device).tril()
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.where(
            mask,
            torch.zeros((), dtype=query.dtype, device=query.device),
            torch.full((), -math.inf, dtype=query.dtype, device=query.device),
        )
    k, v = key, value
    if enable_gqa and query.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        k = key.repeat_interleave(groups, dim=-3)
        v = value.repeat_interleave(groups, dim=-3)
    scores = torch.matmul(q, k.transpose(-2, -1) * factor)
    if mask is not None:
        scores = scores + mask
    weights = torch._safe_softmax(scores, -1)
    if dropout_p <= 0.0:
        return torch.matmul(weights, v)
    seed, offset = draw(weights.numel())
    # droplab's keep mask applied with factor 1 (dropped weights exactly +0.0),
    # and 1 / (1 - p) on the values: the order of torch's math form.
    kept = dropout(weights, dropout_p, True, seed=seed, offset=offset, scale="none")
    if dropout_p >= 1.0:
        return torch.matmul(kept, v)  # torch's math form: all weights dropped
    return torch.matmul(kept, v * (1.0 / (1.0 - dropout_p)))


# The draw of the multi_head_attention call in flight (a context variable: one
# per thread or task).
_MHA_DRAW: ContextVar[Draw | None] = ContextVar("droplab_mha_draw", default=None)


def _current_draw() -> Draw:
    draw = _MHA_DRAW.get()
    if draw is None:  # pragma: no cover - only reached through multi_head_attention
        raise RuntimeError("droplab's multi_head_attention draw is not set")
    return draw


def _mha_dropout(
    x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    seed, offset = _current_draw()(x.numel())
    return dropout(x, p, True, seed=seed, offset=offset, inplace=inplace)


def _mha_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    if dropout_p <= 0.0:
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask,
            0.0,
            is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )
    return attention_math(
        query,
        key,
        value,
        attn_mask,
        dropout_p,
        is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
        draw=_current_draw(),
    )


def _rebound_mha() -> Callable[..., Any] | None:
    """torch's ``multi_head_attention_forward`` with its globals ``dropout`` and
    ``scaled_dot_product_attention`` bound to droplab's forms (None if this
    torch's function does not look them up by those names)."""
    original = F.multi_head_attention_forward
    names = original.__code__.co_names
    if "dropout" not in names or "scaled_dot_product_attention" not in names:
        return None  # pragma: no cover - a torch whose function changed shape
    scope = dict(original.__globals__)
    scope["dropout"] = _mha_dropout
    scope["scaled_dot_product_attention"] = _mha_attention
    rebound = types.FunctionType(
        original.__code__, scope, original.__name__, original.__defaults__
    )
    rebound.__kwdefaults__ = original.__kwdefaults__
    return rebound


_MHA = _rebound_mha()


def multi_head_attention(
    args: tuple[Any, ...], kwargs: dict[str, Any], draw: Draw
) -> Any:
    """``F.multi_head_attention_forward(*args, **kwargs)`` with its attention
    dropout drawn by ``draw`` (None where this torch cannot be reached)."""
    if _MHA is None:  # pragma: no cover
        return None
    token = _MHA_DRAW.set(draw)
    try:
        return _MHA(*args, **kwargs)
    finally:
        _MHA_DRAW.reset(token)
