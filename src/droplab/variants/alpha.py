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

import functools
import math
from typing import Any

import torch
from torch.autograd import forward_ad

from droplab._core.base import DropoutBase
from droplab._core.fx import traced_as_node
from droplab._core.op import MASKED_SCALE, StochasticOp, check_stream
from droplab._core.stream import compute_dtype, keep_mask
from droplab._validation import (
    check_bool,
    check_floating_tensor,
    check_probability,
    check_shared_dims,
    fail_ndim,
)
from droplab.kernels import fused
from droplab.masks import stream_elements

__all__ = [
    "ALPHA_DROPOUT",
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


@functools.lru_cache(maxsize=64)
def _constants(p: float) -> tuple[float, float, float]:
    """``(a, b, dropped)`` for a checked rate ``p``: the affine map and the
    value of a dropped unit (``a * alpha' + b``; 0 at ``p = 1``).

    Memoised: every call of a training run asks for the same rate.
    """
    a, b = alpha_dropout_affine(p)
    return a, b, 0.0 if p == 1.0 else a * SELU_SATURATION + b


def _alpha_kernel(
    x: torch.Tensor,
    seed: int,
    offset: int,
    p: float,
    shared_dims: Any,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    a, b, dropped = _constants(p)
    shared = shared_dims if type(shared_dims) is tuple else tuple(shared_dims)
    y = fused.alpha_dropout(  # one fused pass (None: a case left to the code below)
        x,
        p=p,
        seed=seed,
        offset=offset,
        shared_dims=shared,
        a=a,
        b=b,
        dropped=dropped,
    )
    if y is not None:
        return y if out is None else out.copy_(y)
    compute = compute_dtype(x.dtype)
    # a * x where kept, +0.0 elsewhere: the mask keeps x exactly (scale
    # "none"), the product with the Python float a is taken in the compute dtype
    masked = MASKED_SCALE.kernel(x, seed, offset, p, "none", "bernoulli", shared)
    kept = (masked.to(compute) * a).to(x.dtype)
    keep = keep_mask(
        tuple(x.shape), p, seed=seed, offset=offset, shared_dims=shared, device=x.device
    )
    # the constant part: b where kept, a * alpha' + b where dropped
    const = torch.where(
        keep,
        torch.tensor(b, dtype=compute, device=x.device),
        torch.tensor(a * SELU_SATURATION + b, dtype=compute, device=x.device),
    )
    if p == 1.0:
        const = torch.zeros_like(const)
    # kept (laid out as x) is the first operand: the sum takes its layout, so
    # a channels_last input gives a channels_last result.
    y = (kept.to(compute) + const).to(x.dtype)
    return y if out is None else out.copy_(y)


def _alpha_linear(
    t: torch.Tensor, seed: Any, offset: Any, p: float, shared_dims: Any
) -> torch.Tensor:
    # dy/dx = a where kept, 0 where dropped: (t * a) in the compute dtype,
    # rounded to t's dtype, then the mask (the constant part has no derivative)
    a = _constants(p)[0]
    if (  # a call nothing differentiates: one fused pass, as the forward's
        type(seed) is int
        and not (t.requires_grad and torch.is_grad_enabled())
        and forward_ad._current_level < 0
        and not torch._C._are_functorch_transforms_active()
    ):
        # b = -0.0 adds nothing, not even to -0.0: exactly (t * a) where kept
        y = fused.alpha_dropout(
            t,
            p=p,
            seed=seed,
            offset=offset,
            shared_dims=shared_dims
            if type(shared_dims) is tuple
            else tuple(shared_dims),
            a=a,
            b=-0.0,
            dropped=0.0,
        )
        if y is not None:
            return y
    scaled = (t.to(compute_dtype(t.dtype)) * a).to(t.dtype)
    return MASKED_SCALE(scaled, seed, offset, p, "none", "bernoulli", shared_dims)


ALPHA_DROPOUT = StochasticOp(
    "alpha_dropout",
    "float p, int[] shared_dims",
    _alpha_kernel,
    _alpha_linear,
    # elementwise without shared dims (one slice per run of a DTensor shard);
    # a feature mask is drawn whole-row only
    geometry=lambda p, shared: (
        tuple(shared),
        1,
        "rows" if tuple(shared) else "slices",
    ),
)
"""Alpha dropout with the mask of ``(seed, offset)``;
``torch.ops.droplab.alpha_dropout`` in a graph."""


@traced_as_node
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


@traced_as_node
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
        owner, x, p, training, inplace, seed, offset, tuple(range(2, x.ndim)), False
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
    check_dims: bool = True,
) -> torch.Tensor:
    """The door of both functions: each check is one comparison when the value
    is right (``check_dims=False``: ``shared_dims`` built here, not given)."""
    x = check_floating_tensor(x, owner=owner)
    if type(p) is not float or not 0.0 <= p <= 1.0:
        p = check_probability(p, owner=owner)
    if training is not True and training is not False:
        training = check_bool(training, "training", owner=owner)
    if inplace is not True and inplace is not False:
        inplace = check_bool(inplace, "inplace", owner=owner)
    if not check_dims or (type(shared_dims) is tuple and not shared_dims):
        shared = shared_dims
    else:
        shared = check_shared_dims(shared_dims, x.ndim, owner=owner)
    seed, offset = check_stream(seed, offset, owner)
    if not (training and p > 0.0 and x.numel() > 0):
        return x  # x itself, as torch returns its input (and nothing is drawn)
    # In place, a leaf that requires grad refuses, as in torch.
    return ALPHA_DROPOUT(x, seed, offset, p, shared, inplace=inplace)


class AlphaDropout(DropoutBase):
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
    traceable = True  # draws only through ALPHA_DROPOUT (its registered op in a graph)

    repr_always = ("p", "inplace")

    def __init__(
        self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None
    ) -> None:
        super().__init__(seed=seed)
        self.p, self.inplace = p, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        owner = type(self).__name__
        x = check_floating_tensor(x, owner=owner)
        if self._feature and x.ndim < 2:
            raise fail_ndim(
                x.ndim, "have at least 2 dimensions (N, C, ...)", owner=owner
            )
        shared = tuple(range(2, x.ndim)) if self._feature else ()
        seed, offset = self.next_stream(stream_elements(tuple(x.shape), shared), x)
        if self.p == 0.0 or x.numel() == 0:
            return x  # x itself, as torch returns its input
        # out of place whatever self.inplace says: torch's module does the same.
        return ALPHA_DROPOUT(x, seed, offset, self.p, shared)


class FeatureAlphaDropout(AlphaDropout):
    """Module form of :func:`feature_alpha_dropout`; a drop-in for
    ``torch.nn.FeatureAlphaDropout``."""

    _feature = True

    def mask_elements(self, x: torch.Tensor) -> int:
        """Stream elements a training call on ``x`` draws: one per (sample, channel)."""
        return stream_elements(tuple(x.shape), tuple(range(2, x.ndim)))

    def replica_elements(self, x: torch.Tensor) -> int:
        """:meth:`mask_elements`: each (sample, channel) has its own element."""
        return self.mask_elements(x)
