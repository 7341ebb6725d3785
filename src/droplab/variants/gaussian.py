"""Gaussian dropout: multiplicative noise N(1, p/(1-p)) instead of a 0/1 mask.

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014,
  section 10 ("Multiplicative Gaussian noise").
  https://jmlr.org/papers/v15/srivastava14a.html
  (Keras: ``keras.layers.GaussianDropout``.)

Inverted Bernoulli dropout multiplies a unit by ``m / (1 - p)`` with
``m ~ Bernoulli(1 - p)``: mean 1, variance ``p / (1 - p)``. Gaussian dropout
keeps those two moments and replaces the distribution by a normal:
``y = x * (1 + sigma * z)``, ``sigma = sqrt(p / (1 - p))``, ``z ~ N(0, 1)``.
At evaluation it is the identity (the noise has mean 1).

The standard normals ``z`` come from the Philox stream by Box-Muller, two stream
elements per noise element (see :mod:`droplab._core.stream`): element ``i``
uses stream elements ``offset + 2i`` and ``offset + 2i + 1``. Backward
regenerates the noise from ``(seed, offset)``: nothing is saved.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from droplab._core.base import DropoutBase
from droplab._core.fx import traced_as_node
from droplab._core.op import StochasticOp, check_stream
from droplab._core.stream import compute_dtype, normal_noise
from droplab._validation import (
    check_bool,
    check_floating_tensor,
    check_probability,
    fail,
)
from droplab.kernels import fused

__all__ = [
    "GAUSSIAN_NOISE",
    "GaussianDropout",
    "gaussian_dropout",
    "gaussian_noise_std",
]


def gaussian_noise_std(p: float) -> float:
    """The noise's standard deviation ``sqrt(p / (1 - p))`` for drop rate ``p``.

    >>> gaussian_noise_std(0.5), gaussian_noise_std(0.0)
    (1.0, 0.0)
    """
    return math.sqrt(p / (1.0 - p))


def _check_rate(p: Any, owner: str) -> float:
    p = check_probability(p, owner=owner)
    if p == 1.0:  # the variance p / (1 - p) is infinite
        raise fail(
            "p",
            p,
            "a real number in [0, 1) (the noise variance is p/(1-p))",
            owner=owner,
        )
    return p


def _noisy(
    t: torch.Tensor,
    seed: int,
    offset: int,
    p: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    # the fused kernel (Numba or Triton): words, Box-Muller and product at once
    y = fused.gaussian_noise(t, sigma=gaussian_noise_std(p), seed=seed, offset=offset)
    if y is not None:
        return y if out is None else out.copy_(y)
    compute = compute_dtype(t.dtype)
    z = normal_noise(
        tuple(t.shape), seed=seed, offset=offset, dtype=torch.float64, device=t.device
    )
    noise = (1.0 + gaussian_noise_std(p) * z).to(compute)
    y = (t.to(compute) * noise).to(t.dtype)
    return y if out is None else out.copy_(y)


GAUSSIAN_NOISE = StochasticOp(
    "gaussian_noise",
    "float p",
    _noisy,
    # elementwise, two stream elements per element: a DTensor shard split
    # inside a row draws one slice per run of the logical stream
    geometry=lambda p: ((), 2, "slices"),
)
"""``x`` times the noise of ``(seed, offset)``, its derivative the same op;
``torch.ops.droplab.gaussian_noise`` in a graph."""


@traced_as_node
def gaussian_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Multiply every element by independent noise ``1 + sqrt(p/(1-p)) z``.

    Args:
        x: float16, bfloat16, float32 or float64 tensor of any shape.
        p: the drop rate whose variance the noise matches, in [0, 1) (*not* the
            noise's standard deviation). ``p = 0`` is the identity.
        training: add noise if True; identity otherwise.
        seed: the stream, an int in [0, 2**64); None draws one from torch.
        offset: first stream element; a call uses ``2 * x.numel()`` elements.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Examples:
        >>> x = torch.ones(100_000, dtype=torch.float64)
        >>> y = gaussian_dropout(x, 0.2, seed=0)
        >>> round(float(y.mean()), 2), round(float(y.var()), 2)  # 1 and 0.2/0.8
        (1.0, 0.25)
        >>> gaussian_dropout(x, 0.2, training=False) is x
        True
    """
    owner = "gaussian_dropout"
    x = check_floating_tensor(x, owner=owner)
    # each check is one comparison when the value is right
    if type(p) is not float or not 0.0 <= p < 1.0:
        p = _check_rate(p, owner)
    if training is not True and training is not False:
        training = check_bool(training, "training", owner=owner)
    seed, offset = check_stream(seed, offset, owner)
    if not training or p == 0.0:
        return x  # nothing is drawn
    return GAUSSIAN_NOISE(x, seed, offset, p)


class GaussianDropout(DropoutBase):
    """Module form of :func:`gaussian_dropout` (Keras ``GaussianDropout(rate=p)``).

    Args:
        p: drop rate in [0, 1); the noise variance is ``p / (1 - p)``.
        seed: the stream (None: a fresh seed per call); offset: its position,
            advanced by ``2 * numel`` per training call.

    Examples:
        >>> m = GaussianDropout(0.3, seed=1)
        >>> _ = m(torch.ones(5, 4)); m.offset
        40
    """

    traceable = True  # draws only through GAUSSIAN_NOISE (its registered op in a graph)
    checks = DropoutBase.with_checks(p=_check_rate)

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.p = p  # checked: in [0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_floating_tensor(x, owner=type(self).__name__)
        if not self.training:
            return x
        seed, offset = self.next_stream(2 * x.numel(), x)
        if self.p == 0.0:
            return x  # the identity (its stream elements stay used)
        return GAUSSIAN_NOISE(x, seed, offset, self.p)
