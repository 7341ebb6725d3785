"""The reference implementation of ``masked_scale``: NumPy mask, torch multiply.

Dropout's forward is ``y = x * m * s`` with ``m`` the 0/1 mask (broadcast along
shared dimensions) and ``s`` the training scale. Since ``dy/dx = m * s``, the
backward pass is the *same op* applied to the incoming gradient with the same
``(seed, offset, p, scale, sampler, shared_dims)``: nothing of the input's size
has to be kept for backward. ``masked_scale`` is that op; every implementation
(this one, :mod:`droplab.kernels.cpu`, :mod:`droplab.kernels.gpu`,
) must give the same result bit for bit:

- the mask is :func:`droplab.masks.make_mask` of the input's shape;
- the compute dtype is :func:`droplab.scaling.compute_dtype` (float64 for
  float64 input and float32 otherwise);
- the factor (the scale of :func:`droplab.scaling.train_scale`, or for
  ``realized`` the per-row ``n / k`` as float64) is rounded to the compute dtype;
- kept elements are ``(t.to(compute) * factor).to(t.dtype)``, dropped elements are
  ``+0.0`` (even where ``t`` is ``inf`` or ``nan``);
- the result is laid out as ``torch.empty_like(t)`` (a channels_last input gives
  a channels_last result), and the mask is indexed by the logical row-major
  position, so the values do not depend on the layout.

Here the mask is drawn in NumPy on the CPU and moved to the tensor's device; it
is the fallback when no faster kernel runs, and the oracle of the tests.
:func:`droplab.kernels.select` chooses between the implementations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from droplab import masks, scaling
from droplab.mesh import Runs
from droplab.rng import random_words

__all__ = ["mask_and_factor", "reference_masked_scale"]


def mask_and_factor(
    shape: Sequence[int],
    *,
    p: float,
    seed: int,
    offset: int,
    scale: str,
    sampler: str,
    shared_dims: tuple[int, ...],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """The mask (True = kept) and the float64 training factor, both in NumPy.

    Returns:
        ``(keep, factor)``: ``keep`` has the mask's own shape
        (``masks.mask_shape(shape, shared_dims)``); ``factor`` is 0-d, or for
        ``realized`` on a mask of two or more dimensions has shape
        ``(rows, 1, ..., 1)`` (one ``n / k`` per row), so it broadcasts.

    Examples:
        >>> keep, factor = mask_and_factor((2, 3), p=0.5, seed=0, offset=0,
        ...     scale="realized", sampler="bernoulli", shared_dims=())
        >>> keep.astype(int), factor.ravel()
        (array([[1, 0, 0],
               [0, 0, 1]]), array([3., 3.]))
    """
    own = masks.mask_shape(shape, shared_dims)
    if p in (0.0, 1.0):
        # Both samplers keep everything at p = 0 and nothing at p = 1, whatever
        # the words are, so the reference skips drawing them.
        keep = np.full(own, p == 0.0, dtype=bool)
    else:
        keep = np.asarray(  # a 0-d comparison gives a NumPy scalar, not an array
            masks.make_mask(
                shape,
                p,
                seed=seed,
                offset=offset,
                sampler=sampler,
                shared_dims=shared_dims,
            )
        )
    if scale != "realized":
        return keep, np.asarray(scaling.train_scale(p, scale), dtype=np.float64)
    rows, n = masks.row_count(own)
    kept = keep.reshape(rows, n).sum(axis=1)
    factor = scaling.realized_row_scale(kept, n)  # (rows,)
    if len(own) <= 1:
        return keep, np.asarray(factor[0], dtype=np.float64)  # one row
    return keep, factor.reshape((rows,) + (1,) * (len(own) - 1))


def reference_masked_scale(
    t: torch.Tensor,
    *,
    p: float,
    seed: int,
    offset: int,
    scale: str,
    sampler: str,
    shared_dims: tuple[int, ...],
    out: torch.Tensor | None = None,
    runs: Runs | None = None,
) -> torch.Tensor:
    """The reference path of :func:`masked_scale`: NumPy mask, torch multiply.

    ``runs``: ``t`` is a DTensor shard whose (Bernoulli) mask positions are
    these runs of the logical mask (:mod:`droplab.mesh`): each run's words
    are the stream's from ``offset + start``.
    """
    compute = scaling.compute_dtype(t.dtype)
    if runs is None:
        keep, factor = mask_and_factor(
            tuple(t.shape),
            p=p,
            seed=seed,
            offset=offset,
            scale=scale,
            sampler=sampler,
            shared_dims=shared_dims,
        )
    else:
        own = masks.mask_shape(tuple(t.shape), shared_dims)
        words = [random_words(seed, offset + int(s), runs.length) for s in runs.starts]
        flat = np.concatenate(words) if words else np.zeros(0, np.uint32)
        keep = (flat.astype(np.int64) < masks.keep_threshold(p)).reshape(own)
        factor = np.asarray(scaling.train_scale(p, scale), dtype=np.float64)
    # The mask is drawn on the CPU and moved: the same bits on every device.
    keep_t = torch.from_numpy(keep).to(t.device)
    factor_t = torch.from_numpy(factor).to(device=t.device, dtype=compute)
    kept = (t.to(compute) * factor_t).to(t.dtype)
    # torch.where, not a multiply by the mask: a dropped inf or nan gives +0.0.
    # The result is laid out as torch.empty_like(t) (channels_last stays so);
    # the mask is on the logical index, so the layout never changes a value.
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    if out is None:
        return torch.where(keep_t, kept, zero, out=torch.empty_like(t))
    out.copy_(torch.where(keep_t, kept, zero))
    return out
