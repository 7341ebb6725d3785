"""The variants' fused CPU kernels, for torch tensors: one call per variant.

Each function here wraps a range kernel of :mod:`droplab.kernels._numba_variants`
(the same approach as standard dropout's :mod:`droplab.kernels.cpu`: words
drawn chunk by chunk and used at once, the GIL released, big tensors split over
threads by :func:`droplab.kernels.cpu._split`, nothing of the mask's size kept
for backward) and gives what the variant's reference code gives:

- :func:`gaussian_noise`: ``x * round(1 + sigma z)``, ``z`` within float64
  rounding of the reference's (see :mod:`droplab.kernels._numba_variants`);
- :func:`alpha_dropout`: alpha and feature alpha dropout, bit for bit;
- :func:`drop_block`: DropBlock, bit for bit;
- :func:`uniform_logits`: Concrete dropout's ``log u - log(1 - u)``, within
  float64 rounding;
- :func:`concrete_scale`, :func:`concrete_grad`: Concrete dropout's forward
  and backward (the gradients of ``x`` and ``p``) in one pass each, within a
  few roundings of the reference's torch ops.

The variants reach them through :mod:`droplab.kernels.fused` (for a contiguous
CPU tensor when the Numba ``masked_scale`` is the one chosen for it, so
``DROPLAB_BACKEND=reference`` keeps the reference code) and run their
reference code otherwise or when a function returns None (a case it does not
take). Arguments are assumed valid (the callers validate them).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from droplab import masks
from droplab.kernels import _numba_variants as nv
from droplab.kernels import cpu
from droplab.scaling import compute_dtype

__all__ = [
    "alpha_dropout",
    "concrete_grad",
    "concrete_scale",
    "drop_block",
    "gaussian_noise",
    "uniform_logits",
]

# Work per element against a mask element of standard dropout, for the split
# over threads (cpu.PER_THREAD elements of that is worth a thread).
_GAUSSIAN_COST = 8
_LOGIT_COST = 8
_CONCRETE_COST = 12

_NP = {torch.float32: np.float32, torch.float64: np.float64}


def _stream(seed: int, offset: int) -> tuple[np.uint64, int, np.uint64, np.uint64]:
    return cpu._stream_args(seed, offset)


def _compute_input(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, in its compute dtype (a float32 copy of a 16-bit tensor)."""
    compute = compute_dtype(t.dtype)
    return t.detach() if t.dtype == compute else t.detach().to(compute)


def gaussian_noise(
    t: torch.Tensor, *, sigma: float, seed: int, offset: int
) -> torch.Tensor:
    """``t * round(1 + sigma z)``: Gaussian dropout's op (element ``i`` uses stream
    positions ``offset + 2i``, ``offset + 2i + 1``); result in ``t``'s dtype."""
    x = _compute_input(t)
    dst = torch.empty_like(x)
    n = x.numel()
    if n:
        x_flat = x.numpy().reshape(-1)
        dst_flat = dst.numpy().reshape(-1)
        stream = _stream(seed, offset)
        scale = np.float64(sigma)
        if n * _GAUSSIAN_COST < 2 * cpu.PER_THREAD:  # one thread's work
            nv.gaussian_scale(x_flat, dst_flat, 0, n, *stream, scale)
        else:
            cpu._split(
                n,
                lambda lo, hi: nv.gaussian_scale(
                    x_flat, dst_flat, lo, hi, *stream, scale
                ),
                unit=_GAUSSIAN_COST,
            )
    return dst if dst.dtype == t.dtype else dst.to(t.dtype)


def alpha_dropout(
    t: torch.Tensor,
    *,
    p: float,
    seed: int,
    offset: int,
    shared_dims: tuple[int, ...],
    a: float,
    b: float,
    dropped: float,
) -> torch.Tensor | None:
    """``x * a + b`` where kept, ``dropped`` elsewhere (float32 and float64 only).

    ``a``, ``b`` and ``dropped`` are rounded to ``t``'s dtype, as the reference's
    torch ops round them. None (the caller's reference code then runs) for 16-bit
    dtypes, whose reference rounds ``x * a`` to 16 bits before adding ``b``, and
    for masks shared along dims other than a trailing run.
    """
    if t.dtype not in _NP:
        return None
    plan = _alpha_plan(tuple(t.shape), shared_dims, t.dtype, p, a, b, dropped)
    if plan is None:
        return None
    mask_elements, group, consts = plan
    x = t.detach()
    dst = torch.empty_like(x)
    if mask_elements:
        x_flat = x.numpy().reshape(-1)
        dst_flat = dst.numpy().reshape(-1)
        stream = _stream(seed, offset)
        if x_flat.size < 2 * cpu.PER_THREAD:  # one thread's work
            nv.alpha_scale(x_flat, dst_flat, 0, mask_elements, group, *stream, *consts)
            return dst
        cpu._split(
            mask_elements,
            lambda lo, hi: nv.alpha_scale(
                x_flat, dst_flat, lo, hi, group, *stream, *consts
            ),
            unit=group,
        )
    return dst


@functools.lru_cache(maxsize=256)
def _alpha_plan(
    shape: tuple[int, ...],
    shared_dims: tuple[int, ...],
    dtype: torch.dtype,
    p: float,
    a: float,
    b: float,
    dropped: float,
) -> tuple[int, int, tuple[Any, ...]] | None:
    """(mask elements, elements per mask element, (threshold, a, b, dropped) as
    the kernel takes them), or None for a mask not shared along trailing dims.

    Memoised: a training run calls the same shapes and rate over and over.
    """
    own = masks.own_shape(shape, shared_dims)
    group = masks.trailing_group(own, shape)
    if not group:
        return None
    kind = _NP[dtype]
    threshold, _ = cpu._threshold_and_factor(p, "none", kind)
    return math.prod(own), group, (threshold, kind(a), kind(b), kind(dropped))


def drop_block(
    t: torch.Tensor,
    *,
    gamma: float,
    block: tuple[int, int],
    seed: int,
    offset: int,
    shared_channels: bool,
) -> torch.Tensor:
    """DropBlock on ``(N, C, H, W)``: the keep mask of the seeds of ``gamma``, kept
    units times ``numel / kept`` (rounded to the compute dtype), +0 elsewhere."""
    n, c, h, w = t.shape
    bh, bw = block
    planes = n * (1 if shared_channels else c)
    plane = h * w
    x = _compute_input(t)
    dst = torch.empty_like(x)
    keep = np.empty(planes * plane, np.uint8)
    counts = np.zeros(planes, np.int64)
    stream = _stream(seed, offset)
    thr = np.uint64(masks.keep_threshold(1.0 - gamma))
    cpu._split(
        planes,
        lambda lo, hi: nv.block_keep(keep, counts, lo, hi, h, w, bh, bw, *stream, thr),
        unit=plane * 4,
    )
    kept = int(counts.sum()) * (c if shared_channels else 1)
    factor = x.numel() / kept if kept else 0.0
    x_flat = x.numpy().reshape(-1)
    dst_flat = dst.numpy().reshape(-1)
    scale = _NP[x.dtype](factor)
    per_keep = c if shared_channels else 1
    cpu._split(
        n * c,
        lambda lo, hi: nv.apply_planes(
            x_flat, dst_flat, keep, lo, hi, plane, per_keep, scale
        ),
        unit=plane,
    )
    return dst if dst.dtype == t.dtype else dst.to(t.dtype)


def uniform_logits(
    shape: tuple[int, ...], *, seed: int, offset: int, dtype: torch.dtype
) -> torch.Tensor:
    """``log u - log(1 - u)`` of ``shape`` from stream positions ``offset ..``,
    ``u = (word + 1/2) 2**-32``, computed in float64 and rounded to ``dtype``
    (float32 or float64): Concrete dropout's logistic noise."""
    out = torch.empty(shape, dtype=dtype)
    flat = out.numpy().reshape(-1)
    if flat.size:
        stream = _stream(seed, offset)
        cpu._split(
            flat.size,
            lambda lo, hi: nv.uniform_logits(flat, lo, hi, *stream),
            unit=_LOGIT_COST,
        )
    return out


def _concrete_consts(
    p: float, temperature: float, dtype: torch.dtype
) -> tuple[Any, ...]:
    """``(1, log p - log(1 - p), t, 1 - p, 1/p + 1/(1 - p), (1 - p)**2)`` in
    ``dtype``'s NumPy type, each rounded as the reference's ops on ``p`` (a
    0-d tensor of that dtype) round it."""
    kind = _NP[dtype]
    one, p_c = kind(1.0), kind(p)
    q = one - p_c
    lp = np.log(p_c) - np.log1p(-p_c)
    return one, lp, kind(temperature), q, one / p_c + one / q, q * q


def concrete_scale(
    t: torch.Tensor, *, p: float, temperature: float, seed: int, offset: int
) -> torch.Tensor:
    """Concrete dropout's output ``x * (1 - drop) / (1 - p)`` in one pass.

    ``p`` is the rate already rounded to the compute dtype (a Python float),
    ``drop = sigmoid((log p - log(1 - p) + log u - log(1 - u)) / t)``, ``u``
    from stream position ``offset + i`` (``i`` the row-major index); result in
    ``t``'s dtype, laid out as ``torch.empty_like(t)`` (any layout: the kernel
    runs on a dense copy of a strided ``t``).
    """
    x = _compute_input(t).contiguous()
    dst = torch.empty_like(x)
    n = x.numel()
    if n:
        x_flat = x.numpy().reshape(-1)
        dst_flat = dst.numpy().reshape(-1)
        stream = _stream(seed, offset)
        consts = _concrete_consts(p, temperature, x.dtype)[:4]
        cpu._split(
            -(-n // nv.CONCRETE_CHUNK),
            lambda lo, hi: nv.concrete_scale(x_flat, dst_flat, lo, hi, *stream, consts),
            unit=nv.CONCRETE_CHUNK * _CONCRETE_COST,
        )
    result = dst if dst.dtype == t.dtype else dst.to(t.dtype)
    if t.is_contiguous():
        return result
    return torch.empty_like(t).copy_(result)  # t's layout, as the reference's


def concrete_grad(
    t: torch.Tensor,
    grad: torch.Tensor,
    *,
    p: float,
    temperature: float,
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, float]:
    """Concrete dropout's backward: ``(grad * r`` in ``t``'s dtype, the sum of
    ``grad * x * dr/dp`` as a float), the noise redrawn; arguments as
    :func:`concrete_scale`, ``grad`` of ``t``'s shape.

    The sum is taken in float64 over fixed chunks (the same on any thread
    count) and rounded to the compute dtype, as the reference's sum is.
    """
    x = _compute_input(t).contiguous()
    g = _compute_input(grad).contiguous()  # an expanded grad (of a sum) too
    grad_x = torch.empty_like(x)
    n = x.numel()
    chunks = -(-n // nv.CONCRETE_CHUNK)
    partial = np.zeros(chunks, np.float64)
    if n:
        x_flat = x.numpy().reshape(-1)
        g_flat = g.numpy().reshape(-1)
        dst_flat = grad_x.numpy().reshape(-1)
        stream = _stream(seed, offset)
        consts = _concrete_consts(p, temperature, x.dtype)
        cpu._split(
            chunks,
            lambda lo, hi: nv.concrete_grad(
                x_flat, g_flat, dst_flat, partial, lo, hi, *stream, consts
            ),
            unit=nv.CONCRETE_CHUNK * _CONCRETE_COST,
        )
    grad_p = float(_NP[x.dtype](partial.sum()))
    return (grad_x if grad_x.dtype == t.dtype else grad_x.to(t.dtype)), grad_p
