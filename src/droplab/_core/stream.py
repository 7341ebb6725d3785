"""The (seed, offset) contract as torch tensors, shared by dropout and every variant.

- **seed=None.** :func:`draw_seed` is how ``seed=None`` is resolved everywhere
  in droplab: a fresh 63-bit seed from torch's default CPU generator, so
  ``torch.manual_seed`` reproduces a run as with ``torch.nn.Dropout``.

Every variant draws its randomness from the Philox stream of :mod:`droplab.rng`:
masks through :mod:`droplab.masks`, continuous noise through the words of
:func:`droplab.rng.random_words`. This file turns those words into torch tensors:

- **Uniform.** Word ``w`` gives ``u = (w + 1/2) / 2**32`` (float64), strictly
  inside ``(0, 1)``, so ``log(u)`` and ``log(1 - u)`` are always finite.
- **Normal** (Box-Muller). Noise element ``i`` of a draw uses the two stream
  elements ``offset + 2 i`` and ``offset + 2 i + 1`` as uniforms ``u1, u2`` and is
  ``z = sqrt(-2 log u1) * cos(2 pi u2)``, computed in float64. A draw of ``n``
  normals therefore uses ``2 n`` stream elements.
- **Numerics** (as :func:`droplab.dropout`): the compute dtype is
  :func:`droplab.scaling.compute_dtype` (float64 for float64 inputs and float32
  otherwise); noise and factors are rounded to it; dropped elements are
  exactly ``+0.0``.

The ops regenerate masks and noise from ``(seed, offset)`` in backward, so no
tensor of the input's size is saved for it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from droplab._validation import check_offset, check_seed
from droplab.kernels.reference import mask_and_factor
from droplab.rng import random_words
from droplab.scaling import compute_dtype

__all__ = [
    "compute_dtype",
    "draw_seed",
    "keep_mask",
    "normal_noise",
    "resolve_seed",
    "uniform_noise",
]

_TWO_POW_M32 = 2.0**-32


def draw_seed() -> int:
    """A fresh 63-bit seed from torch's default CPU generator.

    This is how ``seed=None`` is resolved everywhere in droplab, so that
    ``torch.manual_seed`` reproduces a run exactly as with ``torch.nn.Dropout``.

    >>> _ = torch.manual_seed(0); a = draw_seed()
    >>> _ = torch.manual_seed(0); a == draw_seed()
    True
    """
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def resolve_seed(
    seed: Any, offset: Any, owner: str, *, draw: bool = True
) -> tuple[int, int]:
    """Validate ``(seed, offset)``; ``seed=None`` takes a fresh seed from torch's
    default generator (so ``torch.manual_seed`` replays a run) when ``draw`` is
    True, and 0 otherwise (no draw at evaluation, as ``torch.nn.Dropout``)."""
    if seed is None:
        return (draw_seed() if draw else 0), check_offset(offset, owner=owner)
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
    keep, _ = mask_and_factor(
        shape,
        p=p,
        seed=seed,
        offset=offset,
        scale="none",
        sampler=sampler,
        shared_dims=shared_dims,
    )
    return torch.from_numpy(np.ascontiguousarray(keep)).to(device)
