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

from droplab._core.module import StochasticModule
from droplab._core.registered import MASK64, graph_state
from droplab._core.stream import compute_dtype, normal_noise
from droplab._validation import (
    check_bool,
    check_floating_tensor,
    check_probability,
    fail,
)
from droplab.rng import resolve_seed

__all__ = ["GaussianDropout", "gaussian_dropout", "gaussian_noise_std"]


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


def _noisy(t: torch.Tensor, p: float, seed: int, offset: int) -> torch.Tensor:
    compute = compute_dtype(t.dtype)
    z = normal_noise(
        tuple(t.shape), seed=seed, offset=offset, dtype=torch.float64, device=t.device
    )
    noise = (1.0 + gaussian_noise_std(p) * z).to(compute)
    return (t.to(compute) * noise).to(t.dtype)


class _GaussianNoise(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        p: float,
        seed: int,
        offset: int,
    ) -> torch.Tensor:
        ctx.args = (p, seed, offset)
        return _noisy(x, p, seed, offset)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        # dy/dx = noise: the same op, the same noise, on the gradient.
        return (_GaussianNoise.apply(grad, *ctx.args), None, None, None)


@torch.library.custom_op("droplab::gaussian_noise", mutates_args=())
def gaussian_noise_op(x: torch.Tensor, state: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` times the noise of ``(state[0], state[1])``: what a graph records.

    The eager computation itself, so compiled outputs are the eager ones bit
    for bit; ``state`` as for ``droplab::masked_scale``. Its backward is the
    same op on the gradient, saving the 16-byte state.
    """
    seed, offset = state.tolist()
    return _noisy(x, p, seed & MASK64, offset & MASK64)


@gaussian_noise_op.register_fake
def _gaussian_noise_fake(
    x: torch.Tensor, state: torch.Tensor, p: float
) -> torch.Tensor:
    return torch.empty_like(x)  # laid out as x, as the eager result


def _gaussian_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[1])
    ctx.p = inputs[2]


def _gaussian_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    (state,) = ctx.saved_tensors
    return (gaussian_noise_op(grad, state, ctx.p), None, None)


gaussian_noise_op.register_autograd(_gaussian_backward, setup_context=_gaussian_setup)


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
    p = _check_rate(p, owner)
    training = check_bool(training, "training", owner=owner)
    if torch.compiler.is_compiling():  # torch.compile, torch.export: the registered op
        if not training or p == 0.0:
            return x
        state = graph_state(seed, offset, owner)  # a module's stream: its tensor
        return gaussian_noise_op(x, state, p)
    seed_, offset_ = resolve_seed(seed, offset, owner, draw=training and p > 0.0)
    if not training or p == 0.0:
        return x
    result: torch.Tensor = _GaussianNoise.apply(x, p, seed_, offset_)
    return result


class GaussianDropout(StochasticModule):
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

    traceable = True  # draws only through gaussian_noise_op in a graph

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.p = _check_rate(p, type(self).__name__)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return gaussian_dropout(x, self.p, False)
        seed, offset = self.next_stream(2 * x.numel())
        return gaussian_dropout(x, self.p, True, seed=seed, offset=offset)

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [f"p={self.p}", self.stream_repr()]))
