"""Numba kernels for the CPU path: Philox4x32-10 words, masks and the fused op.

- Paper: Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as
  1, 2, 3", SC 2011. https://doi.org/10.1145/2063384.2063405

Every function here reproduces :mod:`droplab.rng` and :mod:`droplab.masks`
bit for bit; :mod:`droplab.kernels.cpu` wraps them for torch tensors.

How the speed comes about (measured on a 2-core AVX-512 machine, see
docs/performance.md):

- Work is cut into chunks of ``CHUNK`` mask elements. Each chunk first fills a
  small buffer with its random words (:func:`fill_words`, a loop over Philox
  blocks with no branches, which LLVM turns into 8-lane ``vpmuludq`` code),
  then runs a second, elementwise loop over the buffer. Fusing both in one loop
  blocks vectorisation (interleaved stores) and ran ~4x slower.
- The 32x32 -> 64-bit products are written as ``(c & 0xFFFFFFFF) * M`` on
  uint64 values, so the compiler knows both factors fit 32 bits.
- Every kernel works on a range ``[lo, hi)`` of elements (or rows) and
  releases the GIL; :mod:`droplab.kernels.cpu` splits large tensors over a few
  Python threads. Numba's own ``parallel=True`` was tried first and dropped:
  its OpenMP pool and PyTorch's spin against each other on a small machine
  (measured: a 2**14-element call took 500x longer, and ``torch.clone`` after
  it 100x longer, with both pools on 2 cores). A range depends only on its
  position in the stream, never on the thread, so results are the same on
  any thread count.
- No fastmath: the multiply must round exactly as torch's does.

All integers that reach a kernel are uint64 (key words, first Philox block,
threshold) or int64 (sizes), so each kernel compiles once per array dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

# Multipliers and Weyl key increments of Philox4x32: droplab.rng's (the NumPy
# reference these kernels reproduce), under the short names the rounds use.
from droplab.rng import PHILOX_M0 as M0
from droplab.rng import PHILOX_M1 as M1
from droplab.rng import PHILOX_W0 as W0
from droplab.rng import PHILOX_W1 as W1

LOW32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)

# Mask elements per chunk: the words buffer (4 bytes each) stays in L1/L2, and
# a 2**16-element tensor still splits into enough chunks for two threads.
CHUNK = 8192


@njit(inline="always", cache=True)
def philox_block(block, k0, k1):
    """The four output words of counter ``(block low, block high, 0, 0)``."""
    c0 = block & LOW32
    c1 = block >> SHIFT32
    c2 = np.uint64(0)
    c3 = np.uint64(0)
    for _ in range(10):
        prod0 = (c0 & LOW32) * M0  # 32 x 32 -> 64 bits, exact
        prod1 = (c2 & LOW32) * M1
        c0 = (prod1 >> SHIFT32) ^ c1 ^ k0
        c1 = prod1 & LOW32
        c2 = (prod0 >> SHIFT32) ^ c3 ^ k1
        c3 = prod0 & LOW32
        k0 = (k0 + W0) & LOW32
        k1 = (k1 + W1) & LOW32
    return c0, c1, c2, c3


@njit(cache=True)
def fill_words(first_block, k0, k1, words):
    """Write the words of blocks ``first_block, first_block + 1, ...`` into ``words``.

    ``words`` (uint32, length a multiple of 4) receives ``len(words) // 4``
    blocks; block numbers wrap modulo 2**64 exactly as NumPy's uint64 does.
    """
    for t in range(words.size // 4):
        a, b, c, d = philox_block(first_block + np.uint64(t), k0, k1)
        words[4 * t] = np.uint32(a)
        words[4 * t + 1] = np.uint32(b)
        words[4 * t + 2] = np.uint32(c)
        words[4 * t + 3] = np.uint32(d)


@njit(inline="always", cache=True)
def chunk_words(start, stop, base_block, head, k0, k1, buffer):
    """Words of mask elements ``[start, stop)``: a view into ``buffer``.

    Mask element ``i`` is stream element ``j = offset + i`` with
    ``offset = 4 * base_block + head``; ``buffer`` holds at least
    ``stop - start + 8`` words (up to 3 skipped, up to 3 past the end).
    """
    j0 = head + start  # stream position relative to 4 * base_block
    skip = j0 % 4
    blocks = (skip + stop - start + 3) // 4
    fill_words(base_block + np.uint64(j0 // 4), k0, k1, buffer[: 4 * blocks])
    return buffer[skip : skip + stop - start]


@njit(cache=True)
def _bernoulli_chunk(
    x, out, start, stop, base_block, head, k0, k1, thr, factor, buffer
):
    words = chunk_words(start, stop, base_block, head, k0, k1, buffer)
    src = x[start:stop]
    dst = out[start:stop]
    zero = factor - factor  # +0.0 in the compute dtype (factor is finite)
    for i in range(words.size):
        dst[i] = src[i] * factor if words[i] < thr else zero


@njit(cache=True, nogil=True)
def bernoulli_scale(x, out, lo, hi, base_block, head, k0, k1, thr, factor):
    """``out = where(word < thr, x * factor, +0)`` on elements ``[lo, hi)`` (1-d)."""
    buffer = np.empty(CHUNK + 8, np.uint32)
    for start in range(lo, hi, CHUNK):
        stop = min(start + CHUNK, hi)
        _bernoulli_chunk(
            x, out, start, stop, base_block, head, k0, k1, thr, factor, buffer
        )


def _pointer_typer(typingctx: Any, address: Any, like: Any) -> Any:
    """``address`` (an int64) as a pointer to values of ``like``'s type."""
    del typingctx
    pointer = types.CPointer(like)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(types.int64, like), codegen


_pointer: Any = intrinsic(_pointer_typer)


@njit(cache=True, nogil=True)
def bernoulli_scale_at(x_at, out_at, n, block, head, k0, k1, thr, factor):
    """:func:`bernoulli_scale` on ``n`` contiguous elements at two addresses.

    The per-call entry of small tensors: Python ints (``block``, ``k0``,
    ``k1`` below ``2**63``) and the addresses of ``x`` and ``out`` (of
    ``factor``'s dtype) cost Numba's dispatcher less than two arrays and four
    NumPy scalars; the work is :func:`bernoulli_scale`'s.
    """
    x = carray(_pointer(x_at, factor), n)
    out = carray(_pointer(out_at, factor), n)
    bernoulli_scale(
        x, out, 0, n, np.uint64(block), head, np.uint64(k0), np.uint64(k1), thr, factor
    )


@njit(cache=True, nogil=True)
def bernoulli_keep(keep, lo, hi, base_block, head, k0, k1, thr):
    """``keep[i] = word(offset + i) < thr`` for ``i`` in ``[lo, hi)`` (uint8, flat)."""
    buffer = np.empty(CHUNK + 8, np.uint32)
    for start in range(lo, hi, CHUNK):
        stop = min(start + CHUNK, hi)
        words = chunk_words(start, stop, base_block, head, k0, k1, buffer)
        dst = keep[start:stop]
        for i in range(words.size):
            dst[i] = 1 if words[i] < thr else 0


@njit(cache=True)
def kth_smallest_word(words, k):
    """The ``k``-th smallest (1-based) of uint32 ``words``: radix select, 8 bits a pass."""
    prefix = np.uint32(0)
    known = np.uint32(0)  # the bits of the answer found so far
    hist = np.empty(256, np.int64)
    for shift in (24, 16, 8, 0):
        hist[:] = 0
        for i in range(words.size):
            if words[i] & known == prefix:
                hist[(words[i] >> np.uint32(shift)) & np.uint32(255)] += 1
        digit = 0
        while hist[digit] < k:
            k -= hist[digit]
            digit += 1
        prefix |= np.uint32(digit) << np.uint32(shift)
        known |= np.uint32(255) << np.uint32(shift)
    return prefix


@njit(cache=True, nogil=True)
def _fixed_row(row, start, k, base_block, head, k0, k1):
    if k == 0 or k == row.size:
        row[:] = 1 if k == row.size else 0
        return
    buffer = np.empty(row.size + 8, np.uint32)
    words = chunk_words(start, start + row.size, base_block, head, k0, k1, buffer)
    kth = kth_smallest_word(words, k)
    ties = k  # ties kept = k minus the number of smaller words
    for i in range(row.size):
        if words[i] < kth:
            ties -= 1
    for i in range(row.size):
        if words[i] < kth:
            row[i] = 1
        elif words[i] == kth and ties > 0:
            row[i] = 1
            ties -= 1
        else:
            row[i] = 0


@njit(cache=True, nogil=True)
def fixed_keep(keep, lo, hi, row_len, k, base_block, head, k0, k1):
    """Keep the ``k`` smallest words of each row ``lo .. hi - 1`` (ties: lower index).

    The row's ``k``-th smallest word ``w`` is found by radix selection; every
    element with a smaller word is kept, then elements whose word equals ``w``
    in index order until ``k`` are kept: the ``masks.fixed_count_mask`` rule.
    """
    for r in range(lo, hi):
        _fixed_row(
            keep[r * row_len : (r + 1) * row_len],
            r * row_len,
            k,
            base_block,
            head,
            k0,
            k1,
        )


@njit(cache=True)
def _apply_chunk(x, out, keep, factors, row_len, start, stop):
    i = start
    while i < stop:  # one constant factor per row segment
        row = i // row_len
        end = min(stop, (row + 1) * row_len)
        factor = factors[row]
        zero = factor - factor
        src = x[i:end]
        dst = out[i:end]
        flags = keep[i:end]
        for e in range(src.size):
            dst[e] = src[e] * factor if flags[e] != 0 else zero
        i = end


@njit(cache=True, nogil=True)
def apply_rows(x, out, keep, factors, row_len, lo, hi):
    """``out[i] = where(keep[i], x[i] * factors[i // row_len], +0)``, ``i`` in ``[lo, hi)``."""
    _apply_chunk(x, out, keep, factors, row_len, lo, hi)


@njit(cache=True, nogil=True)
def bernoulli_scale_strided(
    x, y, shape, x_strides, y_strides, lo, hi, base_block, head, k0, k1, thr, factor
):
    """:func:`bernoulli_scale` on strided tensors, over logical elements ``[lo, hi)``.

    ``x`` and ``y`` are flat views of the two tensors' memory from their first
    element; element ``i`` in row-major order over ``shape`` (the index the mask
    is defined on) lives at ``sum(coord[d] * x_strides[d])`` and likewise in ``y``, so a
    channels_last (or sliced) input is read and written where it lies, in its
    own layout, with the same words as a contiguous one.
    """
    nd = shape.size
    last = nd - 1
    inner = shape[last]
    coords = np.zeros(nd, np.int64)
    rest = lo
    for d in range(last, -1, -1):  # the coordinates of element lo
        coords[d] = rest % shape[d]
        rest //= shape[d]
    buffer = np.empty(CHUNK + 8, np.uint32)
    zero = factor - factor
    xs = x_strides[last]
    ys = y_strides[last]
    for start in range(lo, hi, CHUNK):
        stop = min(start + CHUNK, hi)
        words = chunk_words(start, stop, base_block, head, k0, k1, buffer)
        i = 0
        while i < words.size:
            xo = 0
            yo = 0
            for d in range(nd):
                xo += coords[d] * x_strides[d]
                yo += coords[d] * y_strides[d]
            run = min(inner - coords[last], words.size - i)  # along the last dim
            for e in range(run):
                w = words[i + e]
                y[yo + e * ys] = x[xo + e * xs] * factor if w < thr else zero
            i += run
            coords[last] += run
            d = last
            while d > 0 and coords[d] == shape[d]:  # carry into the outer dims
                coords[d] = 0
                d -= 1
                coords[d] += 1


@njit(inline="always", cache=True)
def _apply_run(src, dst, flags, factor):
    zero = factor - factor
    for e in range(src.size):
        dst[e] = src[e] * factor if flags[e] != 0 else zero


@njit(cache=True, nogil=True)
def apply_keep_strided(
    x, y, keep, shape, x_strides, y_strides, keep_strides, lo, hi, factor
):
    """``y = where(keep, x * factor, +0)`` over elements ``[lo, hi)`` of ``shape``.

    For a mask already drawn: no word depends on the order, so the caller
    orders the dims as ``y`` lies in memory (the last dim the fastest) and the
    inner loop walks memory. ``keep`` (uint8) broadcasts by stride 0 along
    shared dims: a channel mask is read once per channel per position.
    """
    nd = shape.size
    last = nd - 1
    inner = shape[last]
    coords = np.zeros(nd, np.int64)
    rest = lo
    for d in range(last, -1, -1):
        coords[d] = rest % shape[d]
        rest //= shape[d]
    xo = 0
    yo = 0
    ko = 0
    for d in range(nd):
        xo += coords[d] * x_strides[d]
        yo += coords[d] * y_strides[d]
        ko += coords[d] * keep_strides[d]
    zero = factor - factor
    xs = x_strides[last]
    ys = y_strides[last]
    ks = keep_strides[last]
    dense = xs == 1 and ys == 1
    i = lo
    while i < hi:
        run = min(inner - coords[last], hi - i)
        # Slices, then range indices: Numba then knows no index is negative and
        # LLVM vectorises the dense loops (an index expression would not).
        if dense and ks == 1:
            _apply_run(x[xo : xo + run], y[yo : yo + run], keep[ko : ko + run], factor)
        elif dense and ks == 0:  # one mask value along the run
            dst = y[yo : yo + run]
            if keep[ko] != 0:
                src = x[xo : xo + run]
                for e in range(run):
                    dst[e] = src[e] * factor
            else:
                dst[:] = zero
        else:
            for e in range(run):
                kept = keep[ko + e * ks] != 0
                y[yo + e * ys] = x[xo + e * xs] * factor if kept else zero
        i += run
        # advance to the next run: the offsets move with the coordinates
        xo += (run - 1) * xs
        yo += (run - 1) * ys
        ko += (run - 1) * ks
        coords[last] += run - 1
        d = last
        while d >= 0:
            coords[d] += 1
            xo += x_strides[d]
            yo += y_strides[d]
            ko += keep_strides[d]
            if coords[d] < shape[d] or d == 0:
                break
            xo -= shape[d] * x_strides[d]
            yo -= shape[d] * y_strides[d]
            ko -= shape[d] * keep_strides[d]
            coords[d] = 0
            d -= 1


@njit(inline="always", cache=True)
def _run_stream(base_block, head, start):
    """(first block, head) of the run whose first mask element is ``start``
    positions after the call's own stream start ``4 * base_block + head``."""
    j = np.uint64(head) + np.uint64(start)
    return base_block + j // np.uint64(4), np.int64(j % np.uint64(4))


@njit(cache=True, nogil=True)
def bernoulli_scale_runs(
    x, out, lo, hi, starts, length, base_block, head, k0, k1, thr, factor
):
    """:func:`bernoulli_scale` of runs ``lo .. hi - 1`` of a shard (1-d, flat).

    Run ``r`` is elements ``[r * length, (r + 1) * length)`` of ``x``; its
    element ``i`` is mask position ``starts[r] + i`` of the logical tensor
    (a DTensor shard, :mod:`droplab.mesh`): each run draws its own
    words in one pass, from its own place in the stream.
    """
    buffer = np.empty(CHUNK + 8, np.uint32)
    for r in range(lo, hi):
        block, run_head = _run_stream(base_block, head, starts[r])
        first = r * length
        src = x[first : first + length]
        dst = out[first : first + length]
        for start in range(0, length, CHUNK):
            stop = min(start + CHUNK, length)
            _bernoulli_chunk(
                src, dst, start, stop, block, run_head, k0, k1, thr, factor, buffer
            )


@njit(cache=True, nogil=True)
def bernoulli_keep_runs(keep, lo, hi, starts, length, base_block, head, k0, k1, thr):
    """:func:`bernoulli_keep` of runs ``lo .. hi - 1`` (see :func:`bernoulli_scale_runs`)."""
    buffer = np.empty(CHUNK + 8, np.uint32)
    for r in range(lo, hi):
        block, run_head = _run_stream(base_block, head, starts[r])
        dst = keep[r * length : (r + 1) * length]
        for start in range(0, length, CHUNK):
            stop = min(start + CHUNK, length)
            words = chunk_words(start, stop, block, run_head, k0, k1, buffer)
            part = dst[start:stop]
            for i in range(words.size):
                part[i] = 1 if words[i] < thr else 0
