"""The (seed, offset) contract as torch tensors, shared by every variant.

Every variant draws its randomness from the Philox stream of :mod:`droplab.rng`:
masks through :mod:`droplab.masks`, continuous noise through the words of
:func:`droplab.rng.random_words`. This file turns those words into torch tensors:

- **Uniform.** Word ``w`` gives ``u = (w + 1/2) / 2**32`` (float64), strictly
  inside ``(0, 1)``, so ``log(u)`` and ``log(1 - u)`` are always finite.
- **Normal** (Box-Muller). Noise element ``i`` of a draw uses the two stream
  elements ``offset + 2 i`` and ``offset + 2 i + 1`` as uniforms ``u1, u2`` and is
  ``z = sqrt(-2 log u1) * cos(2 pi u2)``, computed in float64. A draw of ``n``
  normals therefore uses ``2 n`` stream elements.
- **Numerics** (as :mod:`droplab.functional`): the compute dtype is float64 for
  float64 inputs and float32 otherwise; noise and factors are rounded to it;
  dropped elements are exactly ``+0.0``.

The ops regenerate masks and noise from ``(seed, offset)`` in backward, so no
tensor of the input's size is saved for it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from droplab import _backend
from droplab._validation import check_offset, check_seed
from droplab.rng import random_words

__all__ = [
    "compute_dtype",
    "keep_mask",
    "normal_noise",
    "resolve_seed",
    "uniform_noise",
]

_TWO_POW_M32 = 2.0**-32


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 tensors, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def resolve_seed(
    seed: Any, offset: Any, owner: str, *, draw: bool = True
) -> tuple[int, int]:
    """Validate ``(seed, offset)``; ``seed=None`` takes a fresh seed from torch's
    default generator (so ``torch.manual_seed`` replays a run) when ``draw`` is
    True, and 0 otherwise (no draw at evaluation, as ``torch.nn.Dropout``)."""
    if seed is None:
        return (_backend.draw_seed() if draw else 0), check_offset(offset, owner=owner)
    return check_seed(seed, owner=owner), check_offset(offset, owner=owner)


def uniform_words(seed: int, offset: int, n: int) -> npt.NDArray[np.float64]:
    """``n`` uniforms in (0, 1) from stream elements ``offset .. offset + n - 1``."""
    return (random_words(seed, offset, n).astype(np.float64) + 0.5) * _TWO_POW_M32


def uniform_noise(
    shape: tuple[int, ...], *, seed: int, offset: int, dtype: torch.dtype, device: Any
) -> torch.Tensor:
    """Uniforms in (0, 1) of ``shape``; uses ``prod(shape)`` stream elements."""
    n = math.prod(shape)
    u = uniform_words(seed, offset, n).reshape(shape)
    return torch.from_numpy(u).to(device=device, dtype=dtype)


def normal_noise(
    shape: tuple[int, ...], *, seed: int, offset: int, dtype: torch.dtype, device: Any
) -> torch.Tensor:
    """Standard normals of ``shape`` by Box-Muller; uses ``2 prod(shape)`` elements.

    >>> z = normal_noise((3,), seed=0, offset=0, dtype=torch.float64, device="cpu")
    >>> z.shape, bool(torch.equal(z, normal_noise((3,), seed=0, offset=0,
    ...                                           dtype=torch.float64, device="cpu")))
    (torch.Size([3]), True)
    """
    n = math.prod(shape)
    u = uniform_words(seed, offset, 2 * n).reshape(n, 2)
    z = np.sqrt(-2.0 * np.log(u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])
    return torch.from_numpy(z.reshape(shape)).to(device=device, dtype=dtype)


def keep_mask(
    shape: tuple[int, ...],
    p: float,
    *,
    seed: int,
    offset: int,
    shared_dims: tuple[int, ...] = (),
    sampler: str = "bernoulli",
    device: Any = "cpu",
) -> torch.Tensor:
    """The bool keep mask of :mod:`droplab.masks` as a tensor (the mask's own shape)."""
    keep, _ = _backend.mask_and_factor(
        shape,
        p=p,
        seed=seed,
        offset=offset,
        scale="none",
        sampler=sampler,
        shared_dims=shared_dims,
    )
    return torch.from_numpy(np.ascontiguousarray(keep)).to(device)


class _KeepScale(torch.autograd.Function):
    """``y = t * c`` where kept, ``+0.0`` where dropped; backward is itself.

    The mask is regenerated from ``(p, seed, offset, shared_dims)``, so nothing
    of the input's size is saved, and the double backward works.
    """

    @staticmethod
    def forward(
        ctx: Any,
        t: torch.Tensor,
        c: float,
        p: float,
        seed: int,
        offset: int,
        shared_dims: tuple[int, ...],
    ) -> torch.Tensor:
        ctx.args = (c, p, seed, offset, shared_dims)
        keep = keep_mask(
            tuple(t.shape),
            p,
            seed=seed,
            offset=offset,
            shared_dims=shared_dims,
            device=t.device,
        )
        compute = compute_dtype(t.dtype)
        factor = torch.tensor(c, dtype=compute, device=t.device)
        return torch.where(keep, t.to(compute) * factor, 0.0).to(t.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return (_KeepScale.apply(grad, *ctx.args), None, None, None, None, None)


def keep_scale(
    t: torch.Tensor,
    c: float,
    p: float,
    seed: int,
    offset: int,
    shared_dims: tuple[int, ...] = (),
) -> torch.Tensor:
    """Differentiable ``t * c * mask`` with the mask of ``(p, seed, offset)``."""
    result: torch.Tensor = _KeepScale.apply(t, c, p, seed, offset, shared_dims)
    return result
