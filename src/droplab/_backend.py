"""The one backend op behind every droplab dropout: ``t * mask * scale``.

Dropout's forward is ``y = x * m * s`` with ``m`` the 0/1 mask (broadcast along
shared dimensions) and ``s`` the training scale. Since ``dy/dx = m * s``, the
backward pass is the *same op* applied to the incoming gradient with the same
``(seed, offset, p, scale, sampler, shared_dims)``: nothing of the input's size
has to be kept for backward. :func:`masked_scale` is that op.

Every implementation must give the same result bit for bit:

- the mask is :func:`droplab.masks.make_mask` of the input's shape;
- the compute dtype is float64 for float64 input and float32 otherwise;
- the factor (the scale of :func:`droplab.scaling.train_scale`, or for
  ``realized`` the per-row ``n / k`` as float64) is rounded to the compute dtype;
- kept elements are ``(t.to(compute) * factor).to(t.dtype)``, dropped elements are
  ``+0.0`` (even where ``t`` is ``inf`` or ``nan``).

This file holds the NumPy reference path (the mask is drawn in NumPy on the CPU
and moved to the tensor's device) and the single point where faster kernels
are chosen (look for ``# kernel dispatch``). Setting the environment variable
``DROPLAB_BACKEND`` to ``reference``, ``numba`` or ``triton`` forces a path.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from droplab import kernels, masks, scaling

__all__ = [
    "BACKENDS",
    "FLOAT_DTYPES",
    "draw_seed",
    "mask_and_factor",
    "masked_scale",
    "reference_masked_scale",
    "select_backend",
    "stream_elements",
]

BACKENDS = ("reference", "numba", "triton")

# The dtypes every backend supports; anything else is refused by the callers.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

MaskedScale = Callable[..., torch.Tensor]


def stream_elements(shape: Sequence[int], shared_dims: Any = ()) -> int:
    """Stream elements one draw for an input of ``shape`` uses: ``prod(mask shape)``.

    A module that owns a stream advances its offset by this after every call.

    >>> stream_elements((8, 16, 5, 5), shared_dims=(2, 3))
    128
    >>> stream_elements(())
    1
    """
    return math.prod(masks.mask_shape(shape, shared_dims))


def draw_seed() -> int:
    """A fresh 63-bit seed from torch's default CPU generator.

    This is how ``seed=None`` is resolved everywhere in droplab, so that
    ``torch.manual_seed`` reproduces a run exactly as with ``torch.nn.Dropout``.

    >>> _ = torch.manual_seed(0); a = draw_seed()
    >>> _ = torch.manual_seed(0); a == draw_seed()
    True
    """
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


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
) -> torch.Tensor:
    """The reference path of :func:`masked_scale`: NumPy mask, torch multiply."""
    compute = torch.float64 if t.dtype == torch.float64 else torch.float32
    keep, factor = mask_and_factor(
        tuple(t.shape),
        p=p,
        seed=seed,
        offset=offset,
        scale=scale,
        sampler=sampler,
        shared_dims=shared_dims,
    )
    # The mask is drawn on the CPU and moved: the same bits on every device.
    keep_t = torch.from_numpy(keep).to(t.device)
    factor_t = torch.from_numpy(factor).to(device=t.device, dtype=compute)
    kept = (t.to(compute) * factor_t).to(t.dtype)
    # torch.where, not a multiply by the mask: a dropped inf or nan gives +0.0.
    result = torch.where(keep_t, kept, 0.0)
    if out is None:
        return result
    out.copy_(result)
    return out


@functools.cache
def _cpu_kernel() -> MaskedScale:
    """``droplab.kernels.cpu.masked_scale`` (imports Numba on first use)."""
    from droplab.kernels import cpu

    return cpu.masked_scale


def select_backend(t: torch.Tensor) -> MaskedScale:
    """The implementation of :func:`masked_scale` used for tensor ``t``.

    ``DROPLAB_BACKEND`` (``reference``, ``numba`` or ``triton``) forces a path;
    a forced kernel that cannot run here is an error rather than a silent fallback.
    """
    forced = os.environ.get("DROPLAB_BACKEND", "")
    # The common case first, with nothing more than these lookups: no forced
    # path, a CPU tensor, Numba installed (kernels.numba_available is memoised;
    # it is looked up on the module each time, so tests can replace it).
    if not forced and t.device.type == "cpu" and kernels.numba_available():
        return _cpu_kernel()
    forced = forced.strip()
    if forced not in ("", *BACKENDS):
        allowed = ", ".join(repr(name) for name in BACKENDS)
        raise ValueError(
            f"The DROPLAB_BACKEND environment variable must be unset or one of "
            f"{allowed}; got {forced!r}."
        )
    if forced == "reference":
        return reference_masked_scale
    # kernel dispatch: faster implementations of the same contract are chosen
    # here by device (cpu -> droplab.kernels.cpu when Numba imports; cuda ->
    # droplab.kernels.gpu when Triton imports), falling back to the reference.
    if forced in ("", "numba") and t.device.type == "cpu" and kernels.numba_available():
        return _cpu_kernel()
    if (forced == "triton" or t.device.type == "cuda") and kernels.triton_available():
        from droplab.kernels import gpu

        if gpu.runs_on(t):  # CUDA, or any device under TRITON_INTERPRET=1
            return gpu.masked_scale
    if forced:
        raise RuntimeError(
            f"DROPLAB_BACKEND={forced!r} was requested, but that kernel is not "
            f"available for a tensor on {t.device.type!r}; unset it or use 'reference'."
        )
    return reference_masked_scale


def masked_scale(
    t: torch.Tensor,
    *,
    p: float,
    seed: int,
    offset: int,
    scale: str,
    sampler: str,
    shared_dims: tuple[int, ...],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``t * mask * train-scale``, the op behind forward *and* backward of dropout.

    Arguments are already validated by the caller (:mod:`droplab.functional`).

    Args:
        t: float16, bfloat16, float32 or float64 tensor, any shape, strides, device.
        p: drop probability in [0, 1].
        seed: the stream, an int in [0, 2**64).
        offset: the stream element of the mask's first element.
        scale: one of :data:`droplab.scaling.SCALES`.
        sampler: one of :data:`droplab.masks.SAMPLERS`.
        shared_dims: normalised sorted tuple of the dimensions the mask is shared along.
        out: where to write the result (may be ``t`` itself, for in-place).

    Returns:
        A tensor of ``t``'s shape and dtype (``out`` when given).

    Examples:
        >>> x = torch.ones(2, 3)
        >>> masked_scale(x, p=0.5, seed=0, offset=0, scale="inverted",
        ...              sampler="bernoulli", shared_dims=())
        tensor([[2., 0., 0.],
                [0., 0., 2.]])
    """
    implementation = select_backend(t)
    return implementation(
        t,
        p=p,
        seed=seed,
        offset=offset,
        scale=scale,
        sampler=sampler,
        shared_dims=shared_dims,
        out=out,
    )
