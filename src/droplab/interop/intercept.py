"""Torch's dropout functions drawing from droplab's contract: :func:`intercept`.

Under ``with droplab.intercept(seed=...)``, a ``TorchFunctionMode`` catches
``torch.nn.functional.dropout``, ``dropout1d/2d/3d``, ``alpha_dropout``,
``feature_alpha_dropout`` and ``torch.dropout``, wherever they are called: in
torch's dropout modules (whose ``forward`` calls them) and in a third-party
``forward`` (``F.dropout(attn, self.p, self.training)``). Each call draws its
mask from droplab's Philox stream instead of torch's generator, so code you did
not write replays from one seed, with no edit and no conversion.

``scaled_dot_product_attention`` with ``dropout_p > 0`` draws its mask inside
a fused kernel that no mode can reach: it is detected and named in a warning
(an error under :func:`droplab.mc_predict`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from droplab._core.dropout import dropout
from droplab._validation import check_choice, check_seed, fail
from droplab.rng import draw_seed
from droplab.variants import (
    alpha_dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
)

__all__ = ["ATTENTION", "Interception", "intercept"]

# What to do when scaled_dot_product_attention is called with dropout_p > 0.
ATTENTION = ("warn", "error", "ignore")

# (droplab's function, whether torch's default is training=True, the mask's
# elements for a shape): the argument order is (input, p, training, inplace).
_Rule = tuple[Callable[..., torch.Tensor], bool, Callable[[torch.Size], int]]


def _channels(shape: torch.Size, spatial: int, name: str) -> int:
    # Channel dropout draws one element per (sample, channel) of the batched
    # view: N * C, or C for an unbatched input (as droplab's channel variants).
    batched = len(shape) == spatial + 2 or (name == "dropout2d" and len(shape) >= 2)
    return math.prod(shape[:2] if batched else shape[:1])


_RULES: dict[Any, _Rule] = {
    F.dropout: (dropout, True, math.prod),
    torch.dropout: (dropout, True, math.prod),
    F.dropout1d: (dropout1d, True, lambda s: _channels(s, 1, "dropout1d")),
    F.dropout2d: (dropout2d, True, lambda s: _channels(s, 2, "dropout2d")),
    F.dropout3d: (dropout3d, True, lambda s: _channels(s, 3, "dropout3d")),
    F.alpha_dropout: (alpha_dropout, False, math.prod),
    F.feature_alpha_dropout: (feature_alpha_dropout, False, lambda s: s[0] * s[1]),
}
_NAMES = ("input", "p", "training", "inplace")


def _sdpa_rate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    # scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, ...)
    return float(args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0))


def _mha_rate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    # multi_head_attention_forward(..., dropout_p [10], ..., training [13], ...):
    # torch calls the dropout inside it, where a mode no longer sees the call.
    rate = args[10] if len(args) > 10 else kwargs.get("dropout_p", 0.0)
    training = args[13] if len(args) > 13 else kwargs.get("training", True)
    return float(rate) if training else 0.0


# Attention that draws its dropout where no mode can reach: its rate, by function.
_ATTENTION: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], float]] = {
    F.scaled_dot_product_attention: _sdpa_rate,
    F.multi_head_attention_forward: _mha_rate,
}

# A source of (seed, offset) for a call that uses `elements` stream elements.
StreamSource = Callable[[int], tuple[int, int]]


class Interception(TorchFunctionMode):
    """The mode :func:`intercept` returns; see there.

    Attributes:
        seed: the stream's seed, or None (a fresh seed per call).
        offset: the stream element the next intercepted call starts at.
        calls: intercepted calls that drew a mask so far.
    """

    def __init__(
        self,
        seed: int | None = None,
        *,
        attention: str = "warn",
        sample_all: bool = False,
        streams: StreamSource | None = None,
    ) -> None:
        super().__init__()
        self.seed = None if seed is None else check_seed(seed, owner="intercept")
        self.offset = 0
        self.calls = 0
        self.attention = check_choice(
            attention, "attention", ATTENTION, owner="intercept"
        )
        self._sample_all = sample_all
        self._streams = streams

    def _stream(self, elements: int) -> tuple[int, int]:
        if self._streams is not None:
            return self._streams(elements)
        if self.seed is None:
            return draw_seed(), 0
        offset = self.offset
        self.offset += elements
        return self.seed, offset

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        rule = _RULES.get(func)
        if rule is not None:
            return self._dropout(rule, func, args, kwargs)
        rate_of = _ATTENTION.get(func)
        if rate_of is not None and self.attention != "ignore":
            rate = rate_of(args, kwargs)
            if rate > 0.0:
                self._attention_dropout(func.__name__, rate)
        return func(*args, **kwargs)

    def _dropout(
        self, rule: _Rule, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        ours, training_default, elements = rule
        values = dict(zip(_NAMES, args, strict=False))
        values.update(kwargs)
        if "train" in values:  # torch.dropout(input, p, train)
            values["training"] = values.pop("train")
        x, p = values["input"], values.get("p", 0.5)
        training = values.get("training", training_default)
        inplace = values.get("inplace", False)
        if self._sample_all and p > 0.0:
            training = True  # Monte-Carlo: every dropout samples
        if not training or p == 0.0 or not isinstance(x, torch.Tensor):
            return func(*args, **kwargs)  # torch's own evaluation path
        seed, offset = self._stream(elements(x.shape))
        self.calls += 1
        if ours in (alpha_dropout, feature_alpha_dropout):
            return ours(x, p, True, inplace, seed=seed, offset=offset)
        return ours(x, p, True, seed=seed, offset=offset, inplace=inplace)

    def _attention_dropout(self, name: str, rate: float) -> None:
        message = (
            f"{name} was called with dropout_p={rate}: its mask is drawn inside "
            "the attention (a fused kernel, or a call a mode cannot see), which "
            "droplab cannot intercept, so it does not replay (use dropout_p=0 "
            "and apply torch.nn.functional.dropout to the attention weights)"
        )
        if self.attention == "error":
            raise fail(
                "model",
                "a model calling scaled_dot_product_attention with dropout",
                "dropout that droplab can replay: " + message,
                owner="mc_predict",
            )
        warnings.warn(message, UserWarning, stacklevel=4)


def intercept(seed: int | None = None, *, attention: str = "warn") -> Interception:
    """A context under which torch's dropout functions draw droplab's masks.

    Every call of ``torch.nn.functional.dropout``, ``dropout1d/2d/3d``,
    ``alpha_dropout``, ``feature_alpha_dropout`` or ``torch.dropout`` in
    training mode (hence every torch dropout module) inside the block is
    computed by droplab's function of the same name, with the same ``p``,
    ``training`` and ``inplace``. With an int ``seed`` the calls share one
    stream, each taking the next ``mask elements`` of it, so the block replays
    bit for bit from the seed when the calls come in the same order; with
    None each call takes a fresh seed from torch's default generator.

    Args:
        seed: an int in ``[0, 2**64)``, or None.
        attention: what a call of ``scaled_dot_product_attention`` with
            ``dropout_p > 0`` does: ``"warn"`` (default), ``"error"`` or
            ``"ignore"``; its mask cannot be intercepted.

    Returns:
        An :class:`Interception`, a ``TorchFunctionMode`` to use with ``with``.

    Examples:
        >>> import torch.nn.functional as F
        >>> x = torch.ones(2, 4)
        >>> with intercept(seed=0):
        ...     y = F.dropout(x, 0.5)
        >>> torch.equal(y, dropout(x, 0.5, seed=0))  # droplab.dropout
        True
    """
    return Interception(seed, attention=attention)
