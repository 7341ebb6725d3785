"""Fused Triton kernels of Gaussian and alpha / feature alpha dropout.

The same contract as the CPU kernels (:mod:`droplab.kernels.cpu_variants`) and
the reference code of the variants: element ``i`` takes its words from stream
position ``offset + m i`` (``m = 2`` for a normal, ``m = 1`` for a mask element),
Philox4x32-10 on counter ``(block low, block high, 0, 0)`` as in
:mod:`droplab.kernels.gpu`. Each lane computes the block of its own position
and picks its word (a Gaussian lane two positions), so any ``offset``, even or
odd, needs no alignment between programs and stream blocks.

- **Gaussian**: ``z = sqrt(-2 log u1) cos(2 pi u2)`` in float64 (the device's
  ``log``, ``cos`` and ``sqrt``; in Triton's interpreter NumPy's, which makes
  the noise the reference's bit for bit), ``1 + sigma z`` rounded to the
  compute dtype, times ``x``.
- **Alpha**: ``x * a + b`` where kept, ``dropped`` elsewhere; mask element
  ``i // group`` (``group``: the elements of the trailing shared dims).

Both are compiled with FP fusion off: ``x * a + b`` and ``1 + sigma z`` round
twice, as the reference's torch ops do. float16 goes through the compute
dtype float32 in the kernel; bfloat16 (whose rounding Triton's interpreter
does not do as torch does) is left to the reference code, and so are 16-bit
alpha inputs (the reference rounds ``x * a`` to 16 bits before adding ``b``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl

from droplab import masks
from droplab.kernels import gpu
from droplab.kernels.gpu import _word_at  # the kernels' per-element Philox

__all__ = ["alpha_dropout", "gaussian_noise", "runs"]

BLOCK = 512


def runs(t: torch.Tensor) -> bool:
    """Whether these kernels serve ``t``: :func:`droplab.kernels.select` picks the
    Triton ``masked_scale`` for it (CUDA, or any device under the interpreter)."""
    from droplab import kernels

    return kernels.select(t) is gpu.masked_scale


def _gaussian_kernel(
    x_ptr,
    out_ptr,
    sigma_ptr,
    n,
    head,
    first_lo,
    first_hi,
    key_lo,
    key_hi,
    BLOCK: tl.constexpr,
    F64: tl.constexpr,
):
    pid = tl.program_id(0)
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = index < n
    t = head + 2 * index
    w1 = _word_at(t, first_lo, first_hi, key_lo, key_hi)
    w2 = _word_at(t + 1, first_lo, first_hi, key_lo, key_hi)
    u1 = (w1.to(tl.float64) + 0.5) * 2.3283064365386963e-10  # 2**-32
    u2 = (w2.to(tl.float64) + 0.5) * 2.3283064365386963e-10
    z = tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
    sigma = tl.load(sigma_ptr)  # float64
    noise = 1.0 + sigma * z
    x = tl.load(x_ptr + index, mask=inside, other=0.0)
    if F64:
        y = x * noise
    else:
        y = x.to(tl.float32) * noise.to(tl.float32)
    tl.store(out_ptr + index, y.to(out_ptr.dtype.element_ty), mask=inside)


def _alpha_kernel(
    x_ptr,
    out_ptr,
    consts_ptr,
    n,
    group,
    head,
    first_lo,
    first_hi,
    key_lo,
    key_hi,
    threshold,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = index < n
    word = _word_at(head + index // group, first_lo, first_hi, key_lo, key_hi)
    a = tl.load(consts_ptr)
    b = tl.load(consts_ptr + 1)
    dropped = tl.load(consts_ptr + 2)
    x = tl.load(x_ptr + index, mask=inside, other=0.0)
    y = tl.where(word.to(tl.int64) < threshold, x * a + b, dropped)
    tl.store(out_ptr + index, y, mask=inside)


_RUNTIME = ["n", "group", "head", "first_lo", "first_hi", "key_lo", "key_hi"]


@functools.cache
def _kernels(interpret: bool) -> tuple[Any, Any]:
    """The jitted kernels, per mode (``triton.jit`` reads ``TRITON_INTERPRET``)."""
    helper = gpu.word_at_jit(interpret)
    return tuple(
        triton.jit(
            gpu._with_helper(kernel, "_word_at", helper),
            do_not_specialize=[s for s in _RUNTIME if s in kernel.__code__.co_varnames],
        )
        for kernel in (_gaussian_kernel, _alpha_kernel)
    )


def _stream(seed: int, offset: int) -> tuple[int, ...]:
    first = offset // 4
    return (
        offset % 4,
        first & 0xFFFFFFFF,
        (first >> 32) & 0xFFFFFFFF,
        seed & 0xFFFFFFFF,
        seed >> 32,
    )


def gaussian_noise(
    t: torch.Tensor, *, sigma: float, seed: int, offset: int
) -> torch.Tensor | None:
    """``t * round(1 + sigma z)`` (None for bfloat16: the caller's code runs)."""
    if t.dtype not in (torch.float16, torch.float32, torch.float64):
        return None
    x = t.detach().contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    if n:
        sigma_t = gpu._factor_tensor(sigma, torch.float64, t.device)
        _kernels(gpu.interpreting())[0][(triton.cdiv(n, BLOCK),)](
            x,
            out,
            sigma_t,
            n,
            *_stream(seed, offset),
            BLOCK=BLOCK,
            F64=t.dtype == torch.float64,
            enable_fp_fusion=False,
        )
    return out


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
    """``x * a + b`` where kept, ``dropped`` elsewhere; None for 16-bit dtypes and
    masks shared along dims other than a trailing run (the caller's code runs)."""
    if t.dtype not in (torch.float32, torch.float64):
        return None
    shape = tuple(t.shape)
    group = masks.trailing_group(masks.own_shape(shape, shared_dims), shape)
    if not group:
        return None
    x = t.detach().contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    if n:
        consts = torch.tensor([a, b, dropped], dtype=t.dtype, device=t.device)
        head, *rest = _stream(seed, offset)
        _kernels(gpu.interpreting())[1][(triton.cdiv(n, BLOCK),)](
            x,
            out,
            consts,
            n,
            group,
            head,
            *rest,
            masks.keep_threshold(p),
            BLOCK=BLOCK,
            enable_fp_fusion=False,
        )
    return out
