"""Alpha dropout and feature alpha dropout, for self-normalising networks.

- Paper: Klambauer, Unterthiner, Mayr and Hochreiter, "Self-normalizing neural
  networks", NeurIPS 2017, section "New dropout technique".
  https://arxiv.org/abs/1706.02515

Plain dropout sets units to 0, which shifts the mean and variance that SELU
networks keep at (0, 1). Alpha dropout sets dropped units to SELU's negative
saturation value ``alpha' = -lambda * alpha = -1.7580993408473766`` and then
applies the affine map ``a * y + b`` that restores mean 0 and variance 1:

    y = a * (x * m + alpha' * (1 - m)) + b,
    a = ((1 - p) (1 + p alpha'^2))^(-1/2),   b = -a alpha' p,

for ``m ~ Bernoulli(1 - p)``, so ``E[y] = 0`` and ``Var[y] = 1`` whenever
``E[x] = 0`` and ``Var[x] = 1`` (the constants of ``torch.nn.AlphaDropout``).
``p = 1`` gives zeros, as PyTorch does. Feature alpha dropout shares ``m`` over
every dimension after the first two (whole channels), as
``torch.nn.FeatureAlphaDropout``. Backward is ``grad * a * m``: the mask is
regenerated from ``(seed, offset)`` and nothing is saved.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from droplab._core.module import StochasticModule
from droplab._core.op import keep_scale
from droplab._core.registered import MASK64, graph_state, masked_scale_op
from droplab._core.stream import compute_dtype, keep_mask
from droplab._validation import (
    check_bool,
    check_floating_tensor,
    check_probability,
    check_shared_dims,
    fail_ndim,
)
from droplab.masks import stream_elements
from droplab.rng import resolve_seed

__all__ = [
    "SELU_SATURATION",
    "AlphaDropout",
    "FeatureAlphaDropout",
    "alpha_dropout",
    "alpha_dropout_affine",
    "feature_alpha_dropout",
]

# SELU's limit for x -> -inf: -lambda * alpha (Klambauer et al., eq. 2).
SELU_SATURATION = -1.7580993408473766


def alpha_dropout_affine(p: float) -> tuple[float, float]:
    """The constants ``(a, b)`` that restore mean 0 and variance 1 (0, 0 at p = 1).

    >>> a, b = alpha_dropout_affine(0.1)
    >>> round(a, 6), round(b, 6)
    (0.921285, 0.161971)
    """
    p = check_probability(p, owner="alpha_dropout_affine")
    if p == 1.0:
        return 0.0, 0.0
    a = 1.0 / math.sqrt((1.0 - p) * (1.0 + p * SELU_SATURATION**2))
    return a, -a * SELU_SATURATION * p


def _alpha(
    x: torch.Tensor, p: float, seed: int, offset: int, shared: tuple[int, ...]
) -> torch.Tensor:
    a, b = alpha_dropout_affine(p)
    compute = compute_dtype(x.dtype)
    kept = keep_scale(x, a, p, seed, offset, shared)  # a * x where kept, 0 elsewhere
    keep = keep_mask(
        tuple(x.shape), p, seed=seed, offset=offset, shared_dims=shared, device=x.device
    )
    # the constant part (no gradient): b where kept, a * alpha' + b where dropped
    const = torch.where(
        keep,
        torch.tensor(b, dtype=compute, device=x.device),
        torch.tensor(a * SELU_SATURATION + b, dtype=compute, device=x.device),
    )
    if p == 1.0:
        const = torch.zeros_like(const)
    # kept (laid out as x) is the first operand: the sum takes its layout, so
    # a channels_last input gives a channels_last result.
    return (kept.to(compute) + const).to(x.dtype)


def alpha_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
    offset: int = 0,
    shared_dims: Any = (),
) -> torch.Tensor:
    """Alpha dropout: keep the mean and variance of SELU-normalised inputs.

    Args:
        x: float16, bfloat16, float32 or float64 tensor of any shape.
        p: probability of dropping a unit (to SELU's saturation value).
        training: apply if True (default False, as
            ``torch.nn.functional.alpha_dropout``); identity otherwise.
        inplace: write the result into ``x`` and return ``x``.
        seed, offset: the stream; a call uses ``prod(mask shape)`` elements.
        shared_dims: dimensions along which one draw is shared.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Examples:
        >>> x = torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = alpha_dropout(x, 0.2, True, seed=1)
        >>> round(float(y.mean()), 2) + 0.0, round(float(y.std()), 2)
        (0.0, 1.0)
    """
    return _alpha_op(
        "alpha_dropout", x, p, training, inplace, seed, offset, shared_dims
    )


def feature_alpha_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Alpha dropout of whole channels: one draw per ``x[n, c]``.

    As ``torch.nn.functional.feature_alpha_dropout``, the first two dimensions
    are read as ``(N, C)`` whatever the rank (at least 2); the mask is shared
    along every later dimension. Arguments as :func:`alpha_dropout`.
    """
    owner = "feature_alpha_dropout"
    x = check_floating_tensor(x, owner=owner)
    if x.ndim < 2:
        raise fail_ndim(x.ndim, "have at least 2 dimensions (N, C, ...)", owner=owner)
    return _alpha_op(
        owner, x, p, training, inplace, seed, offset, tuple(range(2, x.ndim))
    )


def _alpha_op(
    owner: str,
    x: Any,
    p: Any,
    training: Any,
    inplace: Any,
    seed: Any,
    offset: Any,
    shared_dims: Any,
) -> torch.Tensor:
    x = check_floating_tensor(x, owner=owner)
    p = check_probability(p, owner=owner)
    training = check_bool(training, "training", owner=owner)
    inplace = check_bool(inplace, "inplace", owner=owner)
    shared = check_shared_dims(shared_dims, x.ndim, owner=owner)
    draws = training and p > 0.0 and x.numel() > 0
    if torch.compiler.is_compiling():  # torch.compile, torch.export: the registered op
        if not draws:
            return x
        state = graph_state(seed, offset, owner)  # a module's stream: its tensor
        y = alpha_dropout_op(x, state, p, list(shared))
        return x.copy_(y) if inplace else y
    seed_, offset_ = resolve_seed(seed, offset, owner, draw=draws)
    if not draws:  # x itself, as torch returns its input
        return x
    y = _alpha(x, p, seed_, offset_, shared)
    # In place after the fact: nothing of x was saved for backward, so
    # overwriting it is safe (a leaf that requires grad refuses, as in torch).
    return x.copy_(y) if inplace else y


@torch.library.custom_op("droplab::alpha_dropout", mutates_args=())
def alpha_dropout_op(
    x: torch.Tensor, state: torch.Tensor, p: float, shared_dims: list[int]
) -> torch.Tensor:
    """Alpha dropout with the mask of ``(state[0], state[1])``: what a graph records.

    The eager computation itself (so compiled outputs are the eager ones, bit
    for bit); ``state`` as for ``droplab::masked_scale``. Backward saves the
    16-byte state: ``grad * a`` where kept, through ``droplab::masked_scale``.
    """
    seed, offset = state.tolist()
    return _alpha(x, p, seed & MASK64, offset & MASK64, tuple(shared_dims))


@alpha_dropout_op.register_fake
def _alpha_dropout_fake(
    x: torch.Tensor, state: torch.Tensor, p: float, shared_dims: list[int]
) -> torch.Tensor:
    return torch.empty_like(x)  # laid out as x, as the eager result


def _alpha_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, state, p, shared_dims = inputs
    ctx.save_for_backward(state)
    ctx.p, ctx.shared_dims = p, shared_dims
    ctx.compute = compute_dtype(x.dtype)


def _alpha_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    # As eager autograd computes it: (grad * a) in the compute dtype, rounded
    # to grad's dtype, then kept where the mask keeps (the constant has none).
    (state,) = ctx.saved_tensors
    a, _ = alpha_dropout_affine(ctx.p)
    scaled = (grad.to(ctx.compute) * a).to(grad.dtype)
    masked = masked_scale_op(scaled, state, ctx.p, "none", "bernoulli", ctx.shared_dims)
    return (masked, None, None, None)


alpha_dropout_op.register_autograd(_alpha_backward, setup_context=_alpha_setup)


class AlphaDropout(StochasticModule):
    """Module form of :func:`alpha_dropout`; a drop-in for ``torch.nn.AlphaDropout``.

    As torch's module, it stores ``inplace`` (and shows it) but computes out of
    place: ``torch.nn.AlphaDropout.forward`` does not pass ``inplace`` on, and
    code that relies on that (an input that is a leaf requiring grad) keeps
    working. The functional forms honour ``inplace``, as torch's do.

    Examples:
        >>> m = AlphaDropout(0.2, seed=0)
        >>> _ = m(torch.zeros(3, 5)); m.offset
        15
    """

    _feature = False
    traceable = True  # draws only through alpha_dropout_op in a graph

    def __init__(
        self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None
    ) -> None:
        super().__init__(seed=seed)
        owner = type(self).__name__
        self.p = check_probability(p, owner=owner)
        self.inplace = check_bool(inplace, "inplace", owner=owner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        x = check_floating_tensor(x, owner=type(self).__name__)
        shared = tuple(range(2, x.ndim)) if self._feature else ()
        seed, offset = self.next_stream(stream_elements(tuple(x.shape), shared))
        op = feature_alpha_dropout if self._feature else alpha_dropout
        # inplace=False whatever self.inplace says: torch's module does the same.
        return op(x, self.p, True, False, seed=seed, offset=offset)

    def extra_repr(self) -> str:
        parts = [f"p={self.p}", f"inplace={self.inplace}", self.stream_repr()]
        return ", ".join(filter(None, parts))


class FeatureAlphaDropout(AlphaDropout):
    """Module form of :func:`feature_alpha_dropout`; a drop-in for
    ``torch.nn.FeatureAlphaDropout``."""

    _feature = True

    def mask_elements(self, x: torch.Tensor) -> int:
        """Stream elements a training call on ``x`` draws: one per (sample, channel)."""
        return stream_elements(tuple(x.shape), tuple(range(2, x.ndim)))
