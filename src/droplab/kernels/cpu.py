"""The CPU kernel of :mod:`droplab.kernels.reference`, compiled with Numba.

Same contract as the reference path (see :mod:`droplab.kernels.reference`): the mask of
:func:`droplab.masks.make_mask`, the factor rounded to the compute dtype (float64
for float64 input, float32 otherwise), kept elements ``(t * factor)`` cast back
to ``t``'s dtype, dropped elements ``+0.0``. The tests check equality bit for bit.

Paths, from fastest to most general:

1. Bernoulli mask covering the whole input (no effective shared dimension),
   one factor (``inverted``, ``classic``, ``none``): one fused pass that draws
   the words and writes the output; nothing of the input's size is allocated
   besides the output.
2. Otherwise (``fixed`` sampler, ``realized`` scale, shared dimensions): a uint8
   mask of the mask's own shape is drawn, then applied (or, when the mask
   broadcasts over shared dimensions, applied by ``torch.where``, which gives
   the same bits).

Threads: the kernels release the GIL and work on ranges; a tensor of at least
``2 * PER_THREAD`` elements is split into contiguous ranges run on up to
``torch.get_num_threads()`` Python threads (so ``torch.set_num_threads`` limits
droplab too). Smaller tensors run on the calling thread. The split never
changes the result: each element's random word depends on its position only.

float16 and bfloat16 go through a float32 copy, one chunk at a time
(:func:`_chunked_16bit`): the extra memory is the output plus a working buffer
of at most a few chunks, not ~5x the input. Non-contiguous inputs are
copied to contiguous memory first; ``out`` is written in place when it is
contiguous and of the compute dtype.

The first call of each kernel compiles it (a few seconds, see
docs/performance.md); compiled code is cached on disk (``cache=True``), so
later processes start in well under a second.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import torch

from droplab import masks, scaling
from droplab.kernels import _numba_philox as nk
from droplab.kernels import _numba_variants as nv
from droplab.masks import own_shape, trailing_group
from droplab.mesh import Runs

__all__ = ["PER_THREAD", "masked_scale"]

# Least work (elements, or mask elements) worth handing to another thread: one
# thread does 2**18 elements in ~0.15-0.3 ms, against ~0.05 ms for the hand-off.
PER_THREAD = 1 << 18


@functools.cache
def _pool(pid: int) -> ThreadPoolExecutor:
    """The worker threads of process ``pid``, created on first need.

    Keyed by process id: a forked child (a DataLoader worker) inherits the
    parent's executor object but not its threads, and must build its own.
    """
    del pid  # the cache key only
    return ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1))


def _split(total: int, run: Callable[[int, int], object], *, unit: int = 1) -> None:
    """Call ``run(lo, hi)`` over ``[0, total)``, in parallel ranges when big enough.

    ``unit`` is the work per index (row length for row kernels).
    """
    parts = min(torch.get_num_threads(), (total * unit) // PER_THREAD, total)
    if parts <= 1:
        run(0, total)
        return
    bounds = [total * i // parts for i in range(parts + 1)]
    ranges = list(itertools.pairwise(bounds))
    jobs = [_pool(os.getpid()).submit(run, lo, hi) for lo, hi in ranges[1:]]
    run(*ranges[0])  # the calling thread takes the first range itself
    for job in jobs:
        job.result()


_LOW32 = 0xFFFFFFFF


# Dtypes the kernels read and write directly, with their NumPy compute type.
_DIRECT = {torch.float32: np.float32, torch.float64: np.float64}

# Offsets whose Philox block (offset // 4) the address entry takes as an int64.
_DIRECT_OFFSETS = 2**63


@functools.lru_cache(maxsize=256)
def _threshold_and_factor(
    p: float, scale: str, np_compute: type[np.floating]
) -> tuple[np.uint64, np.floating]:
    """``keep_threshold(p)`` as uint64 and ``train_scale(p, scale)`` as ``np_compute``.

    Memoised: training calls the same (p, scale) over and over; skipping the
    argument checks keeps the per-call cost of small tensors down.
    """
    factor = np_compute(scaling.train_scale(p, scale))
    return np.uint64(masks.keep_threshold(p)), factor


def _stream_args(seed: int, offset: int) -> tuple[np.uint64, int, np.uint64, np.uint64]:
    """(first Philox block, offset % 4, key low, key high) as the kernels take them."""
    return (
        np.uint64(offset // 4),
        offset % 4,
        np.uint64(seed & _LOW32),
        np.uint64(seed >> 32),
    )


def _draw_keep(
    own: tuple[int, ...], p: float, seed: int, offset: int, sampler: str
) -> npt.NDArray[np.uint8]:
    """The flat uint8 mask (1 = kept) of a mask of shape ``own``."""
    keep = np.empty(math.prod(own), np.uint8)
    if keep.size == 0:
        return keep
    base, head, k0, k1 = _stream_args(seed, offset)
    if sampler == "bernoulli":
        threshold = np.uint64(masks.keep_threshold(p))
        _split(
            keep.size,
            lambda lo, hi: nk.bernoulli_keep(
                keep, lo, hi, base, head, k0, k1, threshold
            ),
        )
    else:
        rows, row_len = masks.row_count(own)
        k = masks.fixed_keep_count(row_len, p)
        _split(
            rows,
            lambda lo, hi: nk.fixed_keep(keep, lo, hi, row_len, k, base, head, k0, k1),
            unit=row_len,
        )
    return keep


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
    """``t * mask * train-scale`` on the CPU; see :mod:`droplab.kernels.reference`.

    Arguments are assumed valid (the callers validate them). ``runs``: ``t``
    is a DTensor shard whose mask positions are these runs of the logical
    mask (:mod:`droplab.mesh`).

    Examples:
        >>> x = torch.ones(2, 3)
        >>> masked_scale(x, p=0.5, seed=0, offset=0, scale="inverted",
        ...              sampler="bernoulli", shared_dims=())
        tensor([[2., 0., 0.],
                [0., 0., 2.]])
    """
    if (  # the training default, on a tensor one thread does at once: no detours
        type(t) is torch.Tensor  # a subclass's data_ptr may be no memory at all
        and runs is None
        and out is None
        and sampler == "bernoulli"
        and scale != "realized"
        and offset < _DIRECT_OFFSETS
        and t.dtype in _DIRECT
        and 0 < t.numel() < 2 * PER_THREAD
        and t.is_contiguous()
    ):
        # elements per mask element: 1 for a mask covering t, the trailing
        # block of a mask shared along trailing dims, 0 for other shared dims
        if not shared_dims:
            group = 1
        else:
            shape = tuple(t.shape)
            group = _trailing_group(_own_shape(shape, shared_dims), shape)
        if group:
            return _scale_at(t, p, seed, offset, scale, group)
    if runs is not None:
        return _masked_scale_runs(
            t,
            p=p,
            seed=seed,
            offset=offset,
            scale=scale,
            shared_dims=shared_dims,
            out=out,
            runs=runs,
        )
    if t.dtype in _HALF and t.numel() > _half_chunk():
        chunked = _chunked_16bit(
            t, p=p, seed=seed, offset=offset, scale=scale, sampler=sampler,
            shared_dims=shared_dims, out=out,
        )  # fmt: skip
        if chunked is not None:
            return chunked
    shape = tuple(t.shape)
    compute = scaling.compute_dtype(t.dtype)
    np_compute = np.float64 if compute == torch.float64 else np.float32
    # The result is laid out as torch.empty_like(t) would be (channels_last
    # stays channels_last); the mask is defined on the logical row-major index
    # whatever the layout, so every layout gives the same values.
    x = t.detach() if t.dtype == compute else t.detach().to(compute)
    writes_out = (
        out is not None
        and out.dtype == compute
        and tuple(out.shape) == shape
        # no element written twice: an expanded (stride-0) out takes out.copy_
        and all(
            step or size == 1 for size, step in zip(shape, out.stride(), strict=True)
        )
    )
    dst = out.detach() if writes_out and out is not None else torch.empty_like(x)
    flat = x.is_contiguous() and dst.is_contiguous()
    own = _own_shape(shape, shared_dims) if shared_dims else shape

    if x.numel() == 0:
        pass
    elif sampler == "bernoulli" and scale != "realized" and own == shape:
        base, head, k0, k1 = _stream_args(seed, offset)
        threshold, factor = _threshold_and_factor(p, scale, np_compute)
        if flat:
            # NumPy views of the same memory; reshape(-1) of a contiguous
            # array is a view, never a copy.
            x_flat = x.numpy().reshape(-1)
            dst_flat = dst.numpy().reshape(-1)
            _split(
                x_flat.size,
                lambda lo, hi: nk.bernoulli_scale(
                    x_flat, dst_flat, lo, hi, base, head, k0, k1, threshold, factor
                ),
            )
        else:  # read and write each tensor in its own layout
            dims, x_str, y_str = _collapse(shape, x.stride(), dst.stride())
            x_mem, y_mem = _memory(x), _memory(dst)
            _split(
                x.numel(),
                lambda lo, hi: nk.bernoulli_scale_strided(
                    x_mem,
                    y_mem,
                    dims,
                    x_str,
                    y_str,
                    lo,
                    hi,
                    base,
                    head,
                    k0,
                    k1,
                    threshold,
                    factor,
                ),
            )
    elif (
        sampler == "bernoulli"
        and scale != "realized"
        and flat
        and (group := _trailing_group(own, shape))
    ):  # channel dropout, DropPath: one fused pass, no mask array
        threshold, factor = _threshold_and_factor(p, scale, np_compute)
        _shared_scale(x, dst, group, own, seed, offset, threshold, factor)
    else:
        keep = _draw_keep(own, p, seed, offset, sampler)
        rows, row_len = masks.row_count(own)
        if scale == "realized":
            kept = np.count_nonzero(keep.reshape(rows, row_len), axis=1)
            factors = scaling.realized_row_scale(kept, row_len).astype(np_compute)
        else:
            factors = np.full(rows, scaling.train_scale(p, scale), np_compute)
        if own == shape and flat:
            x_flat = x.numpy().reshape(-1)
            dst_flat = dst.numpy().reshape(-1)
            _split(
                x_flat.size,
                lambda lo, hi: nk.apply_rows(
                    x_flat, dst_flat, keep, factors, row_len, lo, hi
                ),
            )
        elif scale != "realized":  # one factor: a pass in y's memory order
            _apply_keep(x, dst, keep, own, np_compute(factors[0]))
        else:  # per-row factors over shared dimensions or a strided layout
            keep_t = torch.from_numpy(keep.view(np.bool_)).reshape(own)
            if len(own) > 1:  # one factor per row, broadcast like the mask
                factor_t = torch.from_numpy(factors).reshape(
                    (rows,) + (1,) * (len(own) - 1)
                )
            else:
                factor_t = torch.from_numpy(factors).reshape(())
            zero = torch.zeros((), dtype=compute)
            # torch.where writes dst in its own layout (no conversion).
            torch.where(keep_t, x * factor_t, zero, out=dst)

    if writes_out and out is not None:
        return out
    return _delivered(dst, t.dtype, out)


def _scale_at(
    t: torch.Tensor, p: float, seed: int, offset: int, scale: str, group: int
) -> torch.Tensor:
    """The small-tensor entry of :func:`masked_scale` (a plain contiguous
    float32/float64 ``t``, a Bernoulli mask, one factor, offset below
    ``2**63``): the kernels' address entries, one mask element per ``group``
    consecutive elements (``group_scale``'s; ``bernoulli_scale``'s for 1)."""
    dst = torch.empty_like(t)  # contiguous as t is; never requires grad
    threshold, factor = _threshold_and_factor(p, scale, _DIRECT[t.dtype])
    stream = (offset >> 2, offset & 3, seed & _LOW32, seed >> 32)
    if group == 1:
        nk.bernoulli_scale_at(
            t.data_ptr(), dst.data_ptr(), dst.numel(), *stream, threshold, factor
        )
    else:
        nv.group_scale_at(
            t.data_ptr(), dst.data_ptr(), dst.numel() // group, group, *stream,
            threshold, factor,
        )  # fmt: skip
    return dst


def _delivered(
    dst: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None
) -> torch.Tensor:
    """The result ``dst`` (compute dtype) in the input's ``dtype``, copied into
    ``out`` when one is given."""
    result = dst if dst.dtype == dtype else dst.to(dtype)
    if out is None:
        return result
    out.copy_(result)
    return out


def _apply_keep(
    x: torch.Tensor,
    dst: torch.Tensor,
    keep: npt.NDArray[np.uint8],
    own: tuple[int, ...],
    factor: np.floating,
) -> None:
    """``dst = where(keep, x * factor, +0)``, ``keep`` (flat, shape ``own``)
    broadcast over the shared dims; one pass in ``dst``'s memory order."""
    shape = tuple(x.shape)
    keep_strides = _broadcast_strides(own, shape)
    dims, y_str, x_str, k_str = _collapse(
        *_in_memory_order(shape, dst.stride(), x.stride(), keep_strides)
    )
    x_mem, y_mem = _memory(x), _memory(dst)
    _split(
        x.numel(),
        lambda lo, hi: nk.apply_keep_strided(
            x_mem, y_mem, keep, dims, x_str, y_str, k_str, lo, hi, factor
        ),
    )


def _masked_scale_runs(
    t: torch.Tensor,
    *,
    p: float,
    seed: int,
    offset: int,
    scale: str,
    shared_dims: tuple[int, ...],
    out: torch.Tensor | None,
    runs: Runs,
) -> torch.Tensor:
    """:func:`masked_scale` of a DTensor shard whose mask is ``runs`` of the
    logical stream (a Bernoulli mask with one factor: the rule of
    :mod:`droplab.mesh`). One pass over the shard's runs; nothing
    larger than the shard's own mask is drawn."""
    compute = scaling.compute_dtype(t.dtype)
    np_compute = np.float64 if compute == torch.float64 else np.float32
    x = t.detach().to(compute).contiguous()
    dst = torch.empty_like(x)
    shape = tuple(t.shape)
    own = masks.mask_shape(shape, shared_dims) if shared_dims else shape
    base, head, k0, k1 = _stream_args(seed, offset)
    threshold, factor = _threshold_and_factor(p, scale, np_compute)
    starts, length = runs.starts, runs.length
    if x.numel() == 0:
        pass
    elif own == shape:  # fused: draw and apply in one pass per run
        x_flat = x.numpy().reshape(-1)
        dst_flat = dst.numpy().reshape(-1)
        _split(
            starts.size,
            lambda lo, hi: nk.bernoulli_scale_runs(
                x_flat,
                dst_flat,
                lo,
                hi,
                starts,
                length,
                base,
                head,
                k0,
                k1,
                threshold,
                factor,
            ),
            unit=length,
        )
    else:  # the shard's own mask, then broadcast over the shared dims
        keep = np.empty(math.prod(own), np.uint8)
        _split(
            starts.size,
            lambda lo, hi: nk.bernoulli_keep_runs(
                keep, lo, hi, starts, length, base, head, k0, k1, threshold
            ),
            unit=length,
        )
        _apply_keep(x, dst, keep, own, factor)
    return _delivered(dst, t.dtype, out)


# Memoised: a training run asks for the same few shapes over and over.
_own_shape = functools.lru_cache(maxsize=256)(own_shape)
_trailing_group = functools.lru_cache(maxsize=256)(trailing_group)


def _shared_scale(
    x: torch.Tensor,
    dst: torch.Tensor,
    group: int,
    own: tuple[int, ...],
    seed: int,
    offset: int,
    threshold: np.uint64,
    factor: np.floating,
) -> None:
    """``dst = x * factor`` where the mask keeps, +0 elsewhere, for a mask shared
    along trailing dims (contiguous tensors): mask element ``g`` covers the
    ``group`` elements ``[g * group, (g + 1) * group)``, so words are drawn and
    used in one pass (:func:`droplab.kernels._numba_variants.group_scale`),
    with no uint8 mask and no strided walk."""
    x_flat = x.numpy().reshape(-1)
    dst_flat = dst.numpy().reshape(-1)
    base, head, k0, k1 = _stream_args(seed, offset)
    groups = math.prod(own)  # mask elements
    if x_flat.size < 2 * PER_THREAD:  # one thread's work: no split to plan
        nv.group_scale(
            x_flat, dst_flat, 0, groups, group, base, head, k0, k1, threshold, factor
        )
        return
    _split(
        groups,
        lambda lo, hi: nv.group_scale(
            x_flat, dst_flat, lo, hi, group, base, head, k0, k1, threshold, factor
        ),
        unit=group,
    )


def _collapse(
    shape: tuple[int, ...], *strides: tuple[int, ...]
) -> tuple[npt.NDArray[np.int64], ...]:
    """Shape and strides with size-1 dims dropped and mergeable neighbours merged.

    Dims ``d`` and ``d + 1`` merge when every tensor steps over ``d`` as over
    ``shape[d + 1]`` steps of ``d + 1`` (channels_last ``(N, C, H, W)`` becomes
    ``(N, C, H * W)``): fewer, longer runs for the strided kernels, the same
    order of the elements.

    >>> [a.tolist() for a in _collapse((2, 3, 4, 5), (60, 1, 15, 3), (60, 1, 15, 3))]
    [[2, 3, 20], [60, 1, 3], [60, 1, 3]]
    """
    dims: list[list[int]] = []
    for size, *steps in zip(shape, *strides, strict=True):
        if size == 1:
            continue
        if dims and all(
            last == step * size for last, step in zip(dims[-1][1:], steps, strict=True)
        ):
            dims[-1] = [dims[-1][0] * size, *steps]
        else:
            dims.append([size, *steps])
    if not dims:
        dims = [[1] * (1 + len(strides))]
    table = np.array(dims, dtype=np.int64)
    return tuple(np.ascontiguousarray(table[:, i]) for i in range(table.shape[1]))


def _broadcast_strides(own: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a contiguous mask of shape ``own`` broadcast to ``shape``.

    >>> _broadcast_strides((2, 3, 1, 1), (2, 3, 4, 5))
    (3, 1, 0, 0)
    """
    strides = []
    step = 1
    for size, full in zip(reversed(own), reversed(shape), strict=True):
        strides.append(step if size == full else 0)
        step *= size
    return tuple(reversed(strides))


def _in_memory_order(
    shape: tuple[int, ...], first: tuple[int, ...], *others: tuple[int, ...]
) -> tuple[tuple[int, ...], ...]:
    """``shape`` and strides with the dims ordered as ``first`` lies in memory.

    >>> _in_memory_order((2, 3, 4), (12, 1, 3), (12, 4, 1))
    ((2, 4, 3), (12, 3, 1), (12, 1, 4))
    """
    order = sorted(range(len(shape)), key=lambda d: (-first[d], -shape[d]))
    return tuple(tuple(seq[d] for d in order) for seq in (shape, first, *others))


def _memory(t: torch.Tensor) -> npt.NDArray[np.generic]:
    """A flat NumPy view of the memory ``t`` spans, from its first element."""
    span = 1 + sum(
        (size - 1) * step for size, step in zip(t.shape, t.stride(), strict=True)
    )
    return torch.as_strided(t, (span,), (1,), t.storage_offset()).numpy()


# ------------------------------------------------- 16-bit input, chunk by chunk

_HALF = (torch.float16, torch.bfloat16)


def _half_chunk() -> int:
    """Elements of a 16-bit input converted to float32 at a time: enough for
    every thread's share (``PER_THREAD`` each, at least four), no more."""
    return PER_THREAD * max(4, torch.get_num_threads())


def _chunked_16bit(
    t: torch.Tensor,
    *,
    p: float,
    seed: int,
    offset: int,
    scale: str,
    sampler: str,
    shared_dims: tuple[int, ...],
    out: torch.Tensor | None,
) -> torch.Tensor | None:
    """:func:`masked_scale` of a 16-bit ``t``, one chunk at a time; None when
    ``t`` cannot be cut so (the caller then takes the one-piece path).

    Element ``j`` of a draw uses stream element ``offset + j`` (j its row-major
    index in the mask's shape), so a chunk that starts at mask element ``m``
    is the call with ``offset + m``: the same bits as the whole call. Flat
    chunks for a per-element Bernoulli mask with one factor; else whole rows
    along dim 0 (a fixed-count or ``realized`` row stays in one chunk).
    """
    shape = tuple(t.shape)
    target = torch.empty_like(t) if out is None else out
    if target.dtype != t.dtype or tuple(target.shape) != shape:
        return None
    own = masks.mask_shape(shape, shared_dims) if shared_dims else shape
    chunk = _half_chunk()
    x, dst = t.detach(), target.detach()
    if (
        sampler == "bernoulli"
        and scale != "realized"
        and own == shape
        and x.is_contiguous()
        and dst.is_contiguous()
    ):
        x, dst, shared_dims = x.view(-1), dst.view(-1), ()
        step, per_step = chunk, 1  # elements, mask elements per element
    elif len(shape) >= 2 and own[0] == shape[0]:
        step = max(1, chunk // max(1, math.prod(shape[1:])))  # whole rows
        per_step = math.prod(own[1:])  # mask elements per row
        if step >= shape[0]:
            return None
    else:
        return None  # one row, or a mask shared along dim 0: not cut
    # Two float32 buffers, reused: the chunk in, converted; the kernel's output.
    size = min(x.shape[0], step) * math.prod(x.shape[1:])
    chunk_in = torch.empty(size, dtype=torch.float32)
    chunk_out = torch.empty(size, dtype=torch.float32)
    for lo in range(0, x.shape[0], step):
        part = x[lo : lo + step]
        n = part.numel()
        into = chunk_in[:n].view(part.shape).copy_(part)
        result = chunk_out[:n].view(part.shape)
        masked_scale(
            into, p=p, seed=seed, offset=offset + lo * per_step, scale=scale,
            sampler=sampler, shared_dims=shared_dims, out=result,
        )  # fmt: skip
        dst[lo : lo + step].copy_(result)
    return target
    if len(shape) < 2 or own[0] != shape[0]:
        return None  # one row, or a mask shared along dim 0: not cut
    rows = max(1, chunk // max(1, math.prod(shape[1:])))
    if rows >= shape[0]:
        return None
    row_elements = math.prod(own[1:])  # mask elements per row
    dst = target.detach()
    for lo in range(0, shape[0], rows):
        hi = min(lo + rows, shape[0])
        dst[lo:hi] = masked_scale(
            x[lo:hi], p=p, seed=seed, offset=offset + lo * row_elements,
            scale=scale, sampler=sampler, shared_dims=shared_dims,
        )  # fmt: skip
    return target
