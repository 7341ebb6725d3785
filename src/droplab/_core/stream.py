"""The (seed, offset) contract as torch tensors, shared by dropout and every variant.

The rules (seed ranges, ``seed=None``, derived seeds) are in :mod:`droplab.rng`;
this file turns a stream into tensors on the tensor's own device.

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

from droplab import kernels
from droplab.kernels.reference import mask_and_factor
from droplab.masks import keep_threshold, mask_shape
from droplab.rng import random_words
from droplab.scaling import compute_dtype

__all__ = [
    "compute_dtype",
    "keep_mask",
    "normal_noise",
    "uniform_noise",
]

_TWO_POW_M32 = 2.0**-32


def uniform_words(seed: int, offset: int, n: int) -> npt.NDArray[np.float64]:
    """``n`` uniforms in (0, 1) from stream elements ``offset .. offset + n - 1``."""
    return (random_words(seed, offset, n).astype(np.float64) + 0.5) * _TWO_POW_M32


def _on_device(device: Any) -> bool:
    """Whether words for ``device`` are drawn there (not in NumPy, then copied)."""
    return kernels.words_on_device(torch.device(device))


def _device_uniforms(seed: int, offset: int, n: int, device: Any) -> torch.Tensor:
    """:func:`uniform_words` computed on ``device``, float64 (exact: the same bits)."""
    words = kernels.stream_words(n, seed=seed, offset=offset, device=device)
    return (words.to(torch.float64) + 0.5) * _TWO_POW_M32


def uniform_noise(
    shape: tuple[int, ...], *, seed: int, offset: int, dtype: torch.dtype, device: Any
) -> torch.Tensor:
    """Uniforms in (0, 1) of ``shape``; uses ``prod(shape)`` stream elements."""
    n = math.prod(shape)
    if _on_device(device):
        return _device_uniforms(seed, offset, n, device).reshape(shape).to(dtype)
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
    if _on_device(device):
        ud = _device_uniforms(seed, offset, 2 * n, device).reshape(n, 2)
        zd = torch.sqrt(-2.0 * torch.log(ud[:, 0])) * torch.cos(2.0 * np.pi * ud[:, 1])
        return zd.reshape(shape).to(dtype)
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
    """The bool keep mask of :mod:`droplab.masks` as a tensor (the mask's own shape).

    A Bernoulli mask on a GPU compares words drawn there; everything else is
    drawn by the reference path and moved (the same bits either way).
    """
    if sampler == "bernoulli" and 0.0 < p < 1.0 and _on_device(device):
        own = mask_shape(shape, shared_dims)
        words = kernels.stream_words(
            math.prod(own), seed=seed, offset=offset, device=device
        )
        return (words < keep_threshold(p)).reshape(own)
    keep, _ = mask_and_factor(
        shape,
        p=p,
        seed=seed,
        offset=offset,
        scale="none",
        sampler=sampler,
        shared_dims=shared_dims,
    )
    # ascontiguousarray makes a 0-d array 1-d: reshape back to the mask's shape.
    own = mask_shape(shape, shared_dims)
    return torch.from_numpy(np.ascontiguousarray(keep)).reshape(own).to(device)
