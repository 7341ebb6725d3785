"""Numba range kernels of the dropout variants (Gaussian, alpha, DropBlock, Concrete).

The same approach as :mod:`droplab.kernels._numba_philox` (whose word
generator they share): work in chunks of ``CHUNK`` elements, each chunk first
filling a word buffer (:func:`~droplab.kernels._numba_philox.chunk_words`),
then running elementwise loops over it; the GIL released. No fastmath where a
result must round as torch's ops do (the products with ``x``, ``1 + sigma z``,
``x * a + b``); the float64 ``log`` and ``cos`` polynomials may contract to FMA
(``fastmath={"contract"}``), and ``error_model="numpy"`` drops the
division-by-zero branch that would stop LLVM from vectorising.

**Range kernels.** Every kernel works on the elements ``[lo, hi)`` of a flat,
contiguous input, and element ``i`` uses the stream position ``offset + m i``
(``m`` stream elements per element: 1 for a mask, 2 for a normal), where the
call's stream start ``offset = 4 * base_block + head`` is passed as
``(base_block, head)``. So a caller may run a kernel on any slice of a tensor
with the slice's own stream start (a shard of a DTensor, a thread's range):
nothing depends on where the range sits or on the thread that runs it.

**Gaussian noise.** Box-Muller in float64, as the reference
(:func:`droplab._core.stream.normal_noise`): ``u = (w + 1/2) 2**-32``,
``z = sqrt(-2 log u1) cos(2 pi u2)``. The reference takes ``log`` and ``cos``
from NumPy's SIMD loops; here they are fdlibm's algorithms written out
(:func:`_log_unit`, :func:`_cos_reduced`) so that LLVM vectorises them, with the
same argument ``fl(2 pi) * u2`` as the reference. Both are within an ulp or
two of the exact values, so ``z`` agrees with the reference's to float64
rounding (3 ulp at most in 2**20 draws here; the tests bound it at 4), and
after rounding to float32 the noise is almost always the same bits.

**Concrete dropout.** The forward and the backward are one pass each
(:func:`concrete_scale`, :func:`concrete_grad`): the words, the logistic
noise ``log(u / (1 - u))`` in float64, the relaxed mask ``sigmoid((logit +
lp) / t)`` by fdlibm's ``exp`` written out (:func:`_exp`), then the output, or
the gradient of ``x`` and the chunk sums of the gradient of ``p``; the steps
after the noise round in the compute dtype as the reference's torch ops do.
Their ranges count chunks of ``CONCRETE_CHUNK`` elements, not elements: the
chunk sums (float64, reassociated so that they vectorise) sit at fixed
positions, and their total is the same on any thread count.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

from droplab.kernels._numba_philox import CHUNK, _pointer, chunk_words

# Normals per chunk of the Gaussian kernel: its words, normals and noise
# (32 bytes a normal) stay in a 64 KiB L1/L2 slice.
NORMAL_CHUNK = 2048

TWO_POW_M32 = 2.0**-32
TWO_PI = 2.0 * math.pi  # the reference's fl(2 pi), multiplied by u2 as there

# fdlibm e_log.c
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
LG1 = 6.666666666666735130e-01
LG2 = 3.999999999940941908e-01
LG3 = 2.857142874366239149e-01
LG4 = 2.222219843214978396e-01
LG5 = 1.818357216161805012e-01
LG6 = 1.531383769920937332e-01
LG7 = 1.479819860511658591e-01
SQRT2 = math.sqrt(2.0)

# fdlibm k_sin.c, k_cos.c (FreeBSD's form) and e_rem_pio2.c's medium reduction
S1 = -1.66666666666666324348e-01
S2 = 8.33333333332248946124e-03
S3 = -1.98412698298579493134e-04
S4 = 2.75573137070700676789e-06
S5 = -2.50507602534068634195e-08
S6 = 1.58969099521155010221e-10
C1 = 4.16666666666666019037e-02
C2 = -1.38888888888741095749e-03
C3 = 2.48015872894767294178e-05
C4 = -2.75573143513906633035e-07
C5 = 2.08757232129817482790e-09
C6 = -1.13596475577881948265e-11
INV_PIO2 = 6.36619772367581382433e-01
PIO2_1 = 1.57079632673412561417e00  # the first 33 bits of pi/2
PIO2_1T = 6.07710050650619224932e-11  # pi/2 - PIO2_1

# fdlibm e_exp.c
INV_LN2 = 1.44269504088896338700e00
P1 = 1.66666666666666019037e-01
P2 = -2.77777777770155933842e-03
P3 = 6.61375632143793436117e-05
P4 = -1.65339022054652515390e-06
P5 = 4.13813679705723846039e-08
EXP_LIMIT = 708.0  # |x| beyond it is clamped: exp(+-708) keeps 2**k normal

EXP_MASK = np.int64(0x7FF)
MANTISSA = np.int64((1 << 52) - 1)
ONE_BITS = np.int64(1023 << 52)
LOW32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)


def _bitcast(source: Any, target: Any, llvm_type: Any) -> Any:
    """A Numba intrinsic that reinterprets a ``source`` value's bits as ``target``
    (a bitcast in registers: no round trip through memory, so LLVM vectorises)."""

    def typer(typingctx: Any, value: Any) -> Any:
        del typingctx, value

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.bitcast(args[0], llvm_type)

        return target(source), codegen

    return intrinsic(typer)


_float_bits = _bitcast(types.float64, types.int64, ir.IntType(64))
_bits_float = _bitcast(types.int64, types.float64, ir.DoubleType())


@njit(inline="always", cache=True, error_model="numpy")
def _log_unit(u):
    """``log(u)`` for a positive normal float64: exponent and mantissa by bits."""
    bits = _float_bits(u)
    k = np.float64(((bits >> 52) & EXP_MASK) - 1023)
    return _log_mantissa(_bits_float((bits & MANTISSA) | ONE_BITS), k)


@njit(inline="always", cache=True, error_model="numpy")
def _log_mantissa(m, k):
    """``log(m * 2**k)`` for ``m`` in ``[1, 2)``: fdlibm's ``__ieee754_log``."""
    big = m > SQRT2
    m = m * 0.5 if big else m
    k = k + 1.0 if big else k
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (LG2 + w * (LG4 + w * LG6))
    t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)))
    r = t2 + t1
    return k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)


@njit(inline="always", cache=True, error_model="numpy")
def _cos_reduced(x, n):
    """``cos(x + n pi/2)`` for ``|x| <= pi/4``: fdlibm's kernels, by quadrant."""
    z = x * x
    v = z * x
    sin_x = x + v * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))))
    r = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))))
    hz = 0.5 * z
    w = 1.0 - hz
    cos_x = w + (((1.0 - w) - hz) + z * r)
    value = cos_x if (n & 1) == 0 else sin_x
    return -value if ((n + 1) & 2) != 0 else value


@njit(inline="always", cache=True, error_model="numpy")
def _exp(x):
    """``exp(x)`` for float64 ``x`` (fdlibm's ``__ieee754_exp``, branch-free).

    ``x`` is clamped to ``[-708, 708]`` first, so ``2**k`` stays a normal
    float64 built from its bits: below ``-708`` the result is ``exp(-708)``
    (about ``3e-308``, not a smaller number or 0), above ``708`` it is
    ``exp(708)``, not infinity. Within that range it is within an ulp.
    """
    x = min(max(x, -EXP_LIMIT), EXP_LIMIT)
    k = np.floor(x * INV_LN2 + 0.5)
    hi = x - k * LN2_HI
    lo = k * LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    return y * _bits_float((np.int64(k) + 1023) << 52)


# contract: the polynomials may use FMA (the product with x is elsewhere)
@njit(cache=True, error_model="numpy", fastmath={"contract"})
def box_muller(words, z):
    """``z[i] = sqrt(-2 log u1) cos(2 pi u2)`` from ``words[2i], words[2i + 1]``.

    One loop, which LLVM vectorises: the words are read in pairs as uint64
    (word ``2i`` the low half), the logarithm takes its exponent and mantissa
    by bitcasts.
    """
    pairs = words[: 2 * z.size].view(np.uint64)
    for i in range(z.size):
        pair = pairs[i]
        u1 = (np.float64(pair & LOW32) + 0.5) * TWO_POW_M32
        u2 = (np.float64(pair >> SHIFT32) + 0.5) * TWO_POW_M32
        arg = TWO_PI * u2  # in (0, 2 pi), rounded as the reference's
        q = np.floor(arg * INV_PIO2 + 0.5)
        x = (arg - q * PIO2_1) - q * PIO2_1T
        z[i] = math.sqrt(-2.0 * _log_unit(u1)) * _cos_reduced(x, np.int64(q))


@njit(cache=True)
def _gaussian_chunk(x, out, start, stop, base_block, head, k0, k1, sigma, bufs):
    words_buf, z, noise = bufs
    n = stop - start
    words = chunk_words(2 * start, 2 * stop, base_block, head, k0, k1, words_buf)
    box_muller(words, z[:n])
    noise_n = noise[:n]
    src = x[start:stop]
    dst = out[start:stop]
    for i in range(n):
        # 1 + sigma z in float64 (no FMA here), rounded to the compute dtype
        noise_n[i] = 1.0 + sigma * z[i]
        dst[i] = src[i] * noise_n[i]


@njit(cache=True, nogil=True)
def gaussian_scale(x, out, lo, hi, base_block, head, k0, k1, sigma):
    """``out[i] = x[i] * round(1 + sigma z_i)`` on elements ``[lo, hi)`` (1-d).

    ``z_i`` is the normal of stream positions ``offset + 2 i`` and
    ``offset + 2 i + 1``; ``1 + sigma z_i`` is computed in float64 and rounded
    to ``x``'s dtype (the compute dtype) before the product.
    """
    bufs = (
        np.empty(2 * NORMAL_CHUNK + 8, np.uint32),
        np.empty(NORMAL_CHUNK, np.float64),
        np.empty(NORMAL_CHUNK, x.dtype),
    )
    for start in range(lo, hi, NORMAL_CHUNK):
        stop = min(start + NORMAL_CHUNK, hi)
        _gaussian_chunk(x, out, start, stop, base_block, head, k0, k1, sigma, bufs)


@njit(cache=True, nogil=True)
def normal_words(z, lo, hi, base_block, head, k0, k1):
    """``z[i]`` = the float64 normal of stream positions ``offset + 2i, + 2i + 1``."""
    words_buf = np.empty(2 * CHUNK + 8, np.uint32)
    for start in range(lo, hi, CHUNK):
        stop = min(start + CHUNK, hi)
        words = chunk_words(2 * start, 2 * stop, base_block, head, k0, k1, words_buf)
        box_muller(words, z[start:stop])


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _logits(words, out):
    for i in range(out.size):
        word = np.float64(words[i])
        # u / (1 - u) = (w + 1/2) / (2**32 - w - 1/2), both exact: one
        # rounding in the quotient, one logarithm
        ratio = (word + 0.5) / (4294967295.5 - word)
        out[i] = _log_unit(ratio)  # rounded to out's dtype


@njit(cache=True, nogil=True)
def uniform_logits(out, lo, hi, base_block, head, k0, k1):
    """``out[i] = log(u) - log(1 - u)``, ``u`` from stream position ``offset + i``.

    ``u = (w + 1/2) 2**-32`` and ``1 - u = (2**32 - w - 1/2) 2**-32`` are both
    exact; their quotient rounds once and one logarithm of it is taken in
    float64 (the reference's ``log(u) - log1p(-u)`` takes two), then rounded
    to ``out``'s dtype. The error is within an ulp or two of ``log 2``-sized
    values, as the reference's own difference of two logarithms.
    """
    words_buf = np.empty(CHUNK + 8, np.uint32)
    for start in range(lo, hi, CHUNK):
        stop = min(start + CHUNK, hi)
        words = chunk_words(start, stop, base_block, head, k0, k1, words_buf)
        _logits(words, out[start:stop])


# Elements per chunk of the Concrete kernels: words, logits and drops stay in L1/L2.
CONCRETE_CHUNK = 2048


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _concrete_drops(words, logit, drop, lp, t):
    """``drop = sigmoid((logit + lp) / t)`` of the chunk's words (Gal et al.'s
    relaxed mask), ``logit = log u - log(1 - u)`` rounded to its dtype first.

    ``logit + lp`` and ``/ t`` round in the buffers' dtype, as the reference's
    ``add_`` and ``div_``; the sigmoid ``1 / (1 + exp(-a))`` is taken in
    float64 and rounded once.
    """
    _logits(words, logit)
    for i in range(logit.size):
        a = (logit[i] + lp) / t
        drop[i] = 1.0 / (1.0 + _exp(-np.float64(a)))


@njit(cache=True, nogil=True)
def concrete_scale(x, out, lo, hi, base_block, head, k0, k1, consts):
    """Concrete dropout's forward on chunks ``[lo, hi)`` of ``CONCRETE_CHUNK``
    elements: ``out = x * ((1 - drop) / (1 - p))``, element ``i`` drawing from
    stream position ``offset + i``.

    ``consts = (1, lp, t, q)``: one, ``log p - log(1 - p)``, the temperature
    and ``1 - p``, in ``x``'s dtype (the compute dtype); ``1 - drop``, the ratio
    and the product round in it, as the reference's torch ops.
    """
    one, lp, t, q = consts
    words_buf = np.empty(CONCRETE_CHUNK + 8, np.uint32)
    logit = np.empty(CONCRETE_CHUNK, x.dtype)
    drop = np.empty(CONCRETE_CHUNK, x.dtype)
    for chunk in range(lo, hi):
        start = chunk * CONCRETE_CHUNK
        stop = min(start + CONCRETE_CHUNK, x.size)
        n = stop - start
        words = chunk_words(start, stop, base_block, head, k0, k1, words_buf)
        _concrete_drops(words, logit[:n], drop[:n], lp, t)
        src = x[start:stop]
        dst = out[start:stop]
        for i in range(n):
            dst[i] = src[i] * ((one - drop[i]) / q)


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _sum64(values):
    total = 0.0
    for i in range(values.size):
        total += np.float64(values[i])
    return total


@njit(cache=True, nogil=True)
def concrete_grad(x, grad, grad_x, partial, lo, hi, base_block, head, k0, k1, consts):
    """Concrete dropout's backward on chunks ``[lo, hi)`` (the noise redrawn).

    ``grad_x = grad * r`` with ``r = (1 - drop) / (1 - p)``, and
    ``partial[c]`` = the float64 sum over chunk ``c`` of ``grad * x * dr/dp``,
    ``dr/dp = -(drop (1 - drop) / t (1/p + 1/(1 - p))) / (1 - p) + (1 - drop)
    / (1 - p)**2``, each term rounded in ``x``'s dtype as the reference's torch
    ops round it. Chunks sit at fixed positions, so the partial sums (and
    their total) do not depend on how the chunks are split over threads.
    ``consts = (1, lp, t, q, c, q2)``: as :func:`concrete_scale`, then
    ``1/p + 1/(1 - p)`` and ``(1 - p)**2``.
    """
    one, lp, t, q, c, q2 = consts
    words_buf = np.empty(CONCRETE_CHUNK + 8, np.uint32)
    logit = np.empty(CONCRETE_CHUNK, x.dtype)
    drop = np.empty(CONCRETE_CHUNK, x.dtype)
    terms = np.empty(CONCRETE_CHUNK, x.dtype)
    for chunk in range(lo, hi):
        start = chunk * CONCRETE_CHUNK
        stop = min(start + CONCRETE_CHUNK, x.size)
        n = stop - start
        words = chunk_words(start, stop, base_block, head, k0, k1, words_buf)
        _concrete_drops(words, logit[:n], drop[:n], lp, t)
        src = x[start:stop]
        g = grad[start:stop]
        dst = grad_x[start:stop]
        for i in range(n):
            keep = one - drop[i]
            dst[i] = g[i] * (keep / q)
            d_drop = drop[i] * keep / t * c
            terms[i] = g[i] * src[i] * (-d_drop / q + keep / q2)
        partial[chunk] = _sum64(terms[:n])


@njit(cache=True, nogil=True)
def group_scale(x, out, lo, hi, group, base_block, head, k0, k1, thr, factor):
    """``masked_scale`` with the mask shared along trailing dimensions.

    Mask element ``g`` (stream position ``offset + g``) covers the ``group``
    contiguous elements ``[g * group, (g + 1) * group)`` of the flat ``x``:
    ``out = x * factor`` there if its word is ``< thr``, else ``+0``. Works on
    mask elements ``[lo, hi)``. Nothing of the mask's size is stored.
    """
    buffer = np.empty(CHUNK + 8, np.uint32)
    zero = factor - factor
    span = max(1, CHUNK // group)  # mask elements per chunk
    for start in range(lo, hi, span):
        stop = min(start + span, hi)
        words = chunk_words(start, stop, base_block, head, k0, k1, buffer)
        for g in range(stop - start):
            first = (start + g) * group
            src = x[first : first + group]
            dst = out[first : first + group]
            if words[g] < thr:
                for e in range(group):
                    dst[e] = src[e] * factor
            else:
                for e in range(group):
                    dst[e] = zero


@njit(cache=True, nogil=True)
def group_scale_at(x_at, out_at, groups, group, block, head, k0, k1, thr, factor):
    """:func:`group_scale` on all ``groups`` mask elements of a contiguous
    tensor at ``x_at``, written at ``out_at`` (of ``factor``'s dtype): the
    per-call entry of small tensors, as ``bernoulli_scale_at`` is for
    unshared masks (Python ints below ``2**63``, no arrays to type)."""
    n = groups * group
    x = carray(_pointer(x_at, factor), n)
    out = carray(_pointer(out_at, factor), n)
    group_scale(
        x,
        out,
        0,
        groups,
        group,
        np.uint64(block),
        head,
        np.uint64(k0),
        np.uint64(k1),
        thr,
        factor,
    )


@njit(cache=True)
def _alpha_chunk(x, out, start, stop, group, words, a, b, dropped, thr):
    if group == 1:
        src = x[start:stop]
        dst = out[start:stop]
        for i in range(stop - start):
            dst[i] = (src[i] * a + b) if words[i] < thr else dropped
        return
    for g in range(stop - start):
        first = (start + g) * group
        src = x[first : first + group]
        dst = out[first : first + group]
        if words[g] < thr:
            for e in range(group):
                dst[e] = src[e] * a + b
        else:
            for e in range(group):
                dst[e] = dropped


@njit(cache=True, nogil=True)
def alpha_scale(x, out, lo, hi, group, base_block, head, k0, k1, thr, a, b, dropped):
    """Alpha dropout: ``out = x * a + b`` where kept, ``dropped`` elsewhere.

    Mask element ``g`` (stream position ``offset + g``, kept iff its word is
    ``< thr``) covers the ``group`` contiguous elements ``[g * group, (g + 1)
    * group)`` of the flat ``x`` (``group = 1``: alpha dropout; the size of
    the trailing shared dimensions: feature alpha dropout). Works on mask
    elements ``[lo, hi)``. ``x * a`` and ``+ b`` round separately in ``x``'s
    dtype, as the reference's two torch ops; ``b = -0.0`` leaves ``x * a``
    exactly as it is (the backward's ``grad * a``).
    """
    buffer = np.empty(CHUNK + 8, np.uint32)
    span = max(1, CHUNK // group)
    for start in range(lo, hi, span):
        stop = min(start + span, hi)
        words = chunk_words(start, stop, base_block, head, k0, k1, buffer)
        _alpha_chunk(x, out, start, stop, group, words, a, b, dropped, thr)


@njit(cache=True, nogil=True)
def block_keep(
    keep, counts, lo, hi, height, width, bh, bw, base_block, head, k0, k1, thr
):
    """DropBlock's keep mask on planes ``[lo, hi)`` (uint8, 1 = kept, flat).

    Position ``(i, j)`` of plane ``r`` is stream position
    ``offset + r * height * width + i * width + j``; it seeds a block iff its
    word is ``< thr`` and the block fits (``i <= height - bh``, ``j <= width - bw``).
    A position is dropped iff a seed lies in ``[i - bh + 1, i] x [j - bw + 1, j]``.
    ``counts[r]`` receives the plane's kept positions.
    """
    plane = height * width
    buffer = np.empty(plane + 8, np.uint32)
    seeds = np.empty(plane, np.uint8)
    rows = np.empty(plane, np.uint8)  # seeds dilated along each row
    for r in range(lo, hi):
        words = chunk_words(
            r * plane, (r + 1) * plane, base_block, head, k0, k1, buffer
        )
        for i in range(height):
            for j in range(width):
                fits = i <= height - bh and j <= width - bw
                seeds[i * width + j] = 1 if (fits and words[i * width + j] < thr) else 0
        for i in range(height):
            for j in range(width):
                hit = 0
                for d in range(min(bw, j + 1)):
                    hit |= seeds[i * width + j - d]
                rows[i * width + j] = hit
        dst = keep[r * plane : (r + 1) * plane]
        kept = 0
        for i in range(height):
            for j in range(width):
                hit = 0
                for d in range(min(bh, i + 1)):
                    hit |= rows[(i - d) * width + j]
                dst[i * width + j] = 1 - hit
                kept += 1 - hit
        counts[r] = kept


@njit(cache=True, nogil=True)
def apply_planes(x, out, keep, lo, hi, plane, per_keep, factor):
    """``out = where(keep, x * factor, +0)`` on planes ``[lo, hi)`` of ``plane``
    elements; plane ``r`` of ``x`` takes keep plane ``r // per_keep``."""
    zero = factor - factor
    for r in range(lo, hi):
        src = x[r * plane : (r + 1) * plane]
        dst = out[r * plane : (r + 1) * plane]
        flags = keep[(r // per_keep) * plane : (r // per_keep + 1) * plane]
        for e in range(plane):
            dst[e] = src[e] * factor if flags[e] != 0 else zero
