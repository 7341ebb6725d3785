"""The GPU kernel of ``masked_scale`` (:mod:`droplab.kernels.reference`), written in Triton.

- Paper: Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as
  1, 2, 3", SC 2011 (Philox4x32-10, the generator of ``tl.philox``).
- Kernel shape after Triton's "low-memory dropout" tutorial: the mask is
  regenerated from (seed, offset) and never stored.

Same contract as the reference path (see :mod:`droplab.kernels.reference`), bit for bit.
Each program draws ``BLOCK // 4`` Philox4x32-10 blocks on counters ``(block
low 32 bits, block high 32 bits, 0, 0)`` under the key ``(seed low, seed
high)`` and interleaves the four words into ``BLOCK`` consecutive stream
elements. Philox is written out in the kernel (the same rounds as
``tl.philox``); both halves of the counter and of the key are passed, so every
seed in ``[0, 2**64)`` and every offset droplab accepts is supported, with no
``2**32``-block limit. (Triton 3.x's ``tl.randint4x(seed, c)`` gives the same
words for ``c < 2**32`` with a 32-bit ``c``, and for any ``c < 2**63`` with an
int64 ``c``; the tests check that claim in the interpreter.)

Paths: a Bernoulli mask covering the whole input with one factor runs as one
fused kernel (read x, write y). Other cases (``fixed`` sampler, ``realized``
scale, shared dimensions) draw the mask's words with a Triton kernel and finish
with torch ops on the device (a stable sort per row for ``fixed``).

The kernels are built on first use, so setting ``TRITON_INTERPRET=1`` before
that first call runs them on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import functools
import math
import os
import types
from typing import Any

import torch
import triton
import triton.language as tl

from droplab import masks, scaling
from droplab._validation import FLOAT_DTYPES
from droplab.mesh import Runs

__all__ = ["BLOCK", "interpreting", "masked_scale", "runs_on"]

# Stream elements per program (a multiple of 4: whole Philox blocks).
BLOCK = 1024


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in (
        "1",
        "true",
        "on",
    )


def runs_on(t: torch.Tensor) -> bool:
    """Whether this kernel can take ``t``: a CUDA tensor, or any tensor when interpreting."""
    return t.dtype in FLOAT_DTYPES and (t.device.type == "cuda" or interpreting())


def _philox_block(local, first_lo, first_hi, key_lo, key_hi):
    """The four words ``(c0, c1, c2, c3)`` of Philox blocks ``first + local``.

    Philox4x32-10 on counters ``(block low, block high, 0, 0)`` under the key
    ``(key_lo, key_hi)``, written out (the same rounds as ``tl.philox``) with
    the 64-bit block number split by hand, so every seed and offset droplab
    accepts is supported; ``local`` is an int64 vector >= 0. Word ``m`` of a
    block is stream element ``4 * block + m``.
    """
    low = first_lo.to(tl.int64) + local  # < 2**33 when local < 2**32
    c0 = (low & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((first_hi.to(tl.int64) + (low >> 32)) & 0xFFFFFFFF).to(tl.uint32)
    c2 = c0 * 0
    c3 = c0 * 0
    k0 = key_lo.to(tl.uint32)
    k1 = key_hi.to(tl.uint32)
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, 0xD2511F53)
        lo0 = c0 * 0xD2511F53
        hi2 = tl.umulhi(c2, 0xCD9E8D57)
        lo2 = c2 * 0xCD9E8D57
        c0 = hi2 ^ c1 ^ k0
        c1 = lo2
        c2 = hi0 ^ c3 ^ k1
        c3 = lo0
        k0 = k0 + 0x9E3779B9  # wraps modulo 2**32
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


def _philox_words(first_lo, first_hi, key_lo, key_hi, pid, BLOCK: tl.constexpr):
    """Words of stream elements ``4 * first + pid * BLOCK + arange(BLOCK)``:
    ``BLOCK // 4`` consecutive blocks of :func:`_philox_block`, interleaved."""
    local = pid.to(tl.int64) * (BLOCK // 4) + tl.arange(0, BLOCK // 4).to(tl.int64)
    c0, c1, c2, c3 = _philox_block(local, first_lo, first_hi, key_lo, key_hi)
    # tl.join adds a minor dimension: join(join(c0, c2), join(c1, c3))[b, i, j]
    # is word 2 * i + j of block b, so row-major, word m of block b lands on
    # element 4 * b + m.
    words = tl.join(tl.join(c0, c2), tl.join(c1, c3))
    return tl.reshape(words, (BLOCK,))


def _bernoulli_scale_kernel(
    x_ptr,
    out_ptr,
    factor_ptr,
    n,
    head,
    first_lo,
    first_hi,
    key_lo,
    key_hi,
    threshold,
    BLOCK: tl.constexpr,
    OUT_BF16: tl.constexpr,
):
    pid = tl.program_id(0)
    words = _philox_words(first_lo, first_hi, key_lo, key_hi, pid, BLOCK)
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64) - head
    inside = (index >= 0) & (index < n)
    factor = tl.load(factor_ptr)  # the factor, already rounded to the compute dtype
    x = tl.load(x_ptr + index, mask=inside, other=0.0)
    y = tl.where(words.to(tl.int64) < threshold, x.to(factor.dtype) * factor, 0.0)
    if OUT_BF16:
        # Round to nearest even by hand (out_ptr points at int16): Triton's
        # interpreter truncates float32 -> bfloat16, the GPU and torch do not.
        bits = y.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
        rounded = tl.where(is_nan, 0x7FC0, rounded)  # torch's quiet NaN
        tl.store(
            out_ptr + index,
            rounded.to(tl.uint16).to(tl.int16, bitcast=True),
            mask=inside,
        )
    else:
        tl.store(out_ptr + index, y.to(out_ptr.dtype.element_ty), mask=inside)


def _word_at(t, first_lo, first_hi, key_lo, key_hi):
    """The word of stream position ``4 * first + t`` (``t`` an int64 vector >= 0).

    Each element computes its own Philox block (:func:`_philox_block`): for
    positions that are not whole consecutive blocks (a DTensor shard's runs,
    the variants' pairs).
    """
    c0, c1, c2, c3 = _philox_block(t >> 2, first_lo, first_hi, key_lo, key_hi)
    which = t & 3
    return tl.where(
        which == 0, c0, tl.where(which == 1, c1, tl.where(which == 2, c2, c3))
    )


def _run_words(
    starts_ptr, length, n, head, first_lo, first_hi, key_lo, key_hi, pid, BLOCK
):
    """(index, inside, words) of local mask elements ``pid * BLOCK + arange(BLOCK)``
    of a DTensor shard whose positions are runs (:class:`droplab.mesh.Runs`).

    Element ``i`` is run ``r = i // length``'s element ``i % length``, at
    stream element ``4 * first + head + starts[r] + i % length``: its word by
    :func:`_word_at` (the runs need not be aligned to 4).
    """
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = index < n
    run = index // length
    start = tl.load(starts_ptr + run, mask=inside, other=0)
    position = start + (index - run * length) + head  # from 4 * first
    words = _word_at(position, first_lo, first_hi, key_lo, key_hi)
    return index, inside, words


def _run_scale_kernel(
    x_ptr,
    out_ptr,
    factor_ptr,
    starts_ptr,
    length,
    n,
    head,
    first_lo,
    first_hi,
    key_lo,
    key_hi,
    threshold,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    index, inside, words = _run_words(
        starts_ptr, length, n, head, first_lo, first_hi, key_lo, key_hi, pid, BLOCK
    )
    factor = tl.load(factor_ptr)
    x = tl.load(x_ptr + index, mask=inside, other=0.0)
    y = tl.where(words.to(tl.int64) < threshold, x.to(factor.dtype) * factor, 0.0)
    tl.store(out_ptr + index, y, mask=inside)  # the compute dtype: cast outside


def _run_words_kernel(
    out_ptr,
    starts_ptr,
    length,
    n,
    head,
    first_lo,
    first_hi,
    key_lo,
    key_hi,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    index, inside, words = _run_words(
        starts_ptr, length, n, head, first_lo, first_hi, key_lo, key_hi, pid, BLOCK
    )
    tl.store(out_ptr + index, words.to(tl.int64), mask=inside)


def _words_kernel(
    out_ptr, n, head, first_lo, first_hi, key_lo, key_hi, BLOCK: tl.constexpr
):
    pid = tl.program_id(0)
    words = _philox_words(first_lo, first_hi, key_lo, key_hi, pid, BLOCK)
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64) - head
    inside = (index >= 0) & (index < n)
    tl.store(out_ptr + index, words.to(tl.int64), mask=inside)


# Scalars that must stay runtime values: Triton would otherwise compile a
# special case (a constant) whenever one of them happens to equal 1.
_RUNTIME_SCALARS = ["n", "head", "first_lo", "first_hi", "key_lo", "key_hi"]


def word_at_jit(interpret: bool) -> Any:
    """:func:`_word_at` jitted for a mode (``interpret``: Triton's interpreter)
    over the jitted :func:`_philox_block`: the helper the variants' kernels call."""
    return _jitted(interpret)[1]


@functools.cache
def _jitted(interpret: bool) -> tuple[Any, Any]:
    """(:func:`_philox_block`, :func:`_word_at`), jitted per mode."""
    del interpret  # the cache key only: triton.jit reads TRITON_INTERPRET
    block = triton.jit(_philox_block)
    return block, triton.jit(_with_helper(_word_at, "_philox_block", block))


@functools.cache
def _kernels(interpret: bool) -> tuple[Any, ...]:
    """The jitted kernels, built per mode: ``triton.jit`` reads ``TRITON_INTERPRET``.

    ``(fused, words, fused over runs, words over runs)``.
    """
    block, word_at = _jitted(interpret)
    helper = triton.jit(_with_helper(_philox_words, "_philox_block", block))
    run_helper = triton.jit(_with_helper(_run_words, "_word_at", word_at))
    plain = tuple(
        triton.jit(
            _with_helper(kernel, "_philox_words", helper),
            do_not_specialize=_RUNTIME_SCALARS,
        )
        for kernel in (_bernoulli_scale_kernel, _words_kernel)
    )
    runs = tuple(
        triton.jit(
            _with_helper(kernel, "_run_words", run_helper),
            do_not_specialize=[*_RUNTIME_SCALARS, "length"],
        )
        for kernel in (_run_scale_kernel, _run_words_kernel)
    )
    return (*plain, *runs)


def _with_helper(kernel: Any, name: str, helper: Any) -> Any:
    """A copy of ``kernel`` whose global ``name`` is the jitted ``helper``.

    The copy keeps the annotations: they are how ``triton.jit`` knows that
    ``BLOCK`` and ``OUT_BF16`` are ``tl.constexpr``. (A copy without them still
    runs in the interpreter, but the real compiler then sees runtime integers and
    refuses ``tl.arange(0, BLOCK // 4)``; found on the first run on a GPU.)
    """
    scope = dict(kernel.__globals__, **{name: helper})
    clone = types.FunctionType(
        kernel.__code__,
        scope,
        kernel.__name__,
        kernel.__defaults__,
        kernel.__closure__,
    )
    for name in ("__module__", "__qualname__", "__doc__", "__annotations__"):
        setattr(clone, name, getattr(kernel, name))
    return clone


@functools.lru_cache(maxsize=64)
def _factor_tensor(
    value: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The fused kernel's factor as a 0-d tensor on ``device``, made once per value.

    Made once, it costs no host-to-device copy per call, and a CUDA graph can
    capture a call made after the first (a copy from host memory cannot be
    captured). The kernel only reads it.
    """
    return torch.tensor(value, dtype=dtype, device=device)


def _launch_args(
    n: int, seed: int, offset: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(grid, the kernels' scalar arguments n .. key_hi) for one call."""
    head = offset % 4
    first = offset // 4  # < 2**64 (offsets are < 2**66)
    grid = (triton.cdiv(n + head, BLOCK),)
    words = (first & 0xFFFFFFFF, (first >> 32) & 0xFFFFFFFF)
    return grid, (n, head, *words, seed & 0xFFFFFFFF, seed >> 32)


def stream_words(n: int, *, seed: int, offset: int, device: Any) -> torch.Tensor:
    """The ``n`` words of the stream from ``offset``, as int64 on ``device``.

    Equal to :func:`droplab.rng.random_words` (checked by the tests).
    """
    words = torch.empty(n, dtype=torch.int64, device=device)
    if n:
        grid, args = _launch_args(n, seed, offset)
        _kernels(interpreting())[1][grid](words, *args, BLOCK=BLOCK)
    return words


def _keep_mask(
    own: tuple[int, ...], p: float, seed: int, offset: int, sampler: str, device: Any
) -> torch.Tensor:
    """The bool mask (True = kept) of shape ``own``."""
    size = math.prod(own)
    words = stream_words(size, seed=seed, offset=offset, device=device)
    if sampler == "bernoulli":
        return (words < masks.keep_threshold(p)).reshape(own)
    rows, row_len = masks.row_count(own)
    k = masks.fixed_keep_count(row_len, p)
    order = torch.sort(words.reshape(rows, row_len), dim=1, stable=True).indices
    keep = torch.zeros(rows, row_len, dtype=torch.bool, device=device)
    keep.scatter_(1, order[:, :k], True)  # the k smallest, ties to the lower index
    return keep.reshape(own)


def _masked_scale_runs(
    x: torch.Tensor,
    p: float,
    seed: int,
    offset: int,
    scale: str,
    own: tuple[int, ...],
    runs: Runs,
) -> torch.Tensor:
    """The shard's result (``x`` contiguous): fused when the mask covers ``x``,
    else the shard's own mask broadcast over the shared dims."""
    compute = scaling.compute_dtype(x.dtype)
    n = math.prod(own)
    starts = torch.from_numpy(runs.starts).to(x.device)
    grid, args = _launch_args(n, seed, offset)
    args = (max(runs.length, 1), *args)  # length, n, head, first, key
    grid = (triton.cdiv(n, BLOCK),)
    factor = _factor_tensor(scaling.train_scale(p, scale), compute, x.device)
    kernels = _kernels(interpreting())
    if own == tuple(x.shape):
        result = torch.empty(x.shape, dtype=compute, device=x.device)
        if n:
            kernels[2][grid](
                x, result, factor, starts, *args, masks.keep_threshold(p), BLOCK=BLOCK
            )
        return result.to(x.dtype)
    words = torch.empty(n, dtype=torch.int64, device=x.device)
    if n:
        kernels[3][grid](words, starts, *args, BLOCK=BLOCK)
    keep = (words < masks.keep_threshold(p)).reshape(own)
    return torch.where(keep, (x.to(compute) * factor).to(x.dtype), 0.0)


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
    runs: Runs | None = None,
) -> torch.Tensor:
    """``t * mask * train-scale`` with Triton; see :mod:`droplab.kernels.reference`.

    ``runs``: ``t`` is a DTensor shard whose (Bernoulli, one-factor) mask
    positions are these runs of the logical mask (:mod:`droplab.mesh`).
    """
    shape = tuple(t.shape)
    compute = scaling.compute_dtype(t.dtype)
    own = masks.mask_shape(shape, shared_dims)
    x = t.detach().contiguous()
    if runs is not None:
        result = _masked_scale_runs(x, p, seed, offset, scale, own, runs)
    elif sampler == "bernoulli" and scale != "realized" and own == shape:
        factor = _factor_tensor(scaling.train_scale(p, scale), compute, t.device)
        result = torch.empty(shape, dtype=t.dtype, device=t.device)
        if x.numel():
            grid, args = _launch_args(x.numel(), seed, offset)
            out_bf16 = t.dtype == torch.bfloat16
            _kernels(interpreting())[0][grid](
                x,
                result.view(torch.int16) if out_bf16 else result,
                factor,
                *args,
                masks.keep_threshold(p),
                BLOCK=BLOCK,
                OUT_BF16=out_bf16,
            )
    else:
        keep = _keep_mask(own, p, seed, offset, sampler, t.device)
        rows, row_len = masks.row_count(own)
        if scale == "realized":
            kept = keep.reshape(rows, row_len).sum(dim=1).to(torch.float64)
            # A true division, as NumPy's: ``scalar / tensor`` multiplies by a reciprocal.
            ratio = torch.full_like(kept, float(row_len)) / kept.clamp(min=1)
            factors = torch.where(kept > 0, ratio, 0.0)
            shape_f = (rows,) + (1,) * (len(own) - 1) if len(own) > 1 else ()
            factor = factors.reshape(shape_f).to(compute)
        else:
            factor = torch.tensor(
                scaling.train_scale(p, scale), dtype=compute, device=t.device
            )
        kept_values = (x.to(compute) * factor).to(t.dtype)
        result = torch.where(keep, kept_values, 0.0)
    if out is None:
        if not t.is_contiguous():
            # Laid out as torch.empty_like(t), as every kernel's result is. The
            # Triton kernel walks the logical index in memory order, so a
            # channels_last or sliced input costs a copy here (and one above).
            return torch.empty_like(t).copy_(result)
        return result
    out.copy_(result)
    return out
