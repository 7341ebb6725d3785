"""Which units are dropped: the one definition every backend follows.

This module answers "which units?"; the ops in :mod:`droplab.functional` answer
"what happens to them?". Masks are NumPy bool arrays (True = kept) built from the
Philox stream of :mod:`droplab.rng`, so the NumPy reference, the CPU kernel and
the GPU kernel can be compared on the very same mask.

The rules, in one place:

- **Mask shape.** A mask has the input's shape with size 1 along every shared
  dimension (``shared_dims``); it is broadcast over them, so a whole channel or a
  whole sequence is kept or dropped together. Element ``i`` of the mask (flat,
  row-major, in the mask's own shape) uses stream element ``j = offset + i``.
- **Bernoulli.** Keep element ``j`` iff its word is ``< keep_threshold(p)``,
  where ``keep_threshold(p) = floor((1 - p) * 2**32 + 1/2)`` clipped to
  ``[0, 2**32]``. So ``p = 0`` keeps everything (every word is below ``2**32``),
  ``p = 1`` drops everything (no word is below 0), and in between the keep
  probability is ``(1 - p)`` rounded to the nearest multiple of ``2**-32``.
- **Rows.** A row is everything that belongs to one index of the first
  dimension of the mask (one sample of a batch); a 1-d mask is a single row.
  The ``realized`` scaling rule and the ``fixed`` sampler work per row.
- **Fixed count.** In each row of ``n`` mask elements keep exactly
  ``k = fixed_keep_count(n, p) = floor(n (1 - p) + 1/2)`` elements: those with
  the ``k`` smallest words, ties going to the lower index. Since the words are
  independent and uniform, every subset of size ``k`` is equally likely (up to
  ties, which have probability below ``n**2 / 2**33``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from droplab._validation import (
    check_choice,
    check_int,
    check_offset,
    check_probability,
    check_seed,
    check_shared_dims,
    fail,
)
from droplab.rng import random_words

__all__ = [
    "SAMPLERS",
    "bernoulli_mask",
    "fixed_count_mask",
    "fixed_keep_count",
    "keep_threshold",
    "make_mask",
    "mask_shape",
    "mask_words",
    "own_shape",
    "row_count",
    "stream_elements",
    "trailing_group",
]

SAMPLERS = ("bernoulli", "fixed")

BoolArray = npt.NDArray[np.bool_]


def keep_threshold(p: float) -> int:
    """The integer threshold below which a 32-bit word keeps its unit.

    ``threshold = floor((1 - p) * 2**32 + 1/2)``, clipped to ``[0, 2**32]``. A
    unit is kept iff its word is ``< threshold``, so the keep probability is
    ``threshold / 2**32``: exactly 1 for ``p = 0`` and exactly 0 for ``p = 1``.

    Args:
        p: the probability of *dropping* a unit (not the keep probability!).

    Returns:
        A Python int in ``[0, 2**32]``; kernels compare in 64-bit integers.

    Examples:
        >>> keep_threshold(0.0) == 2**32, keep_threshold(1.0)
        (True, 0)
        >>> keep_threshold(0.5) == 2**31
        True
    """
    p = check_probability(p, owner="keep_threshold")
    return min(2**32, max(0, math.floor(math.ldexp(1.0 - p, 32) + 0.5)))


def fixed_keep_count(n: int, p: float) -> int:
    """Units kept per row of ``n`` by the ``fixed`` sampler: ``floor(n(1-p) + 1/2)``.

    >>> fixed_keep_count(100, 0.5), fixed_keep_count(5, 0.5), fixed_keep_count(4, 1.0)
    (50, 3, 0)
    """
    n = check_int(n, "n", low=0, owner="fixed_keep_count")
    p = check_probability(p, owner="fixed_keep_count")
    return min(n, math.floor(n * (1.0 - p) + 0.5))


def mask_shape(shape: Sequence[int], shared_dims: Any = ()) -> tuple[int, ...]:
    """The mask's own shape: ``shape`` with size 1 along each shared dimension.

    >>> mask_shape((8, 16, 5, 5), shared_dims=(2, 3))
    (8, 16, 1, 1)
    """
    shape = tuple(int(s) for s in shape)
    dims = check_shared_dims(shared_dims, len(shape))
    return tuple(1 if d in dims else s for d, s in enumerate(shape))


def stream_elements(shape: Sequence[int], shared_dims: Any = ()) -> int:
    """Stream elements one draw for an input of ``shape`` uses: ``prod(mask shape)``.

    A module that owns a stream advances its offset by this after every call.

    >>> stream_elements((8, 16, 5, 5), shared_dims=(2, 3))
    128
    >>> stream_elements(())
    1
    """
    return math.prod(mask_shape(shape, shared_dims))


def row_count(shape: Sequence[int]) -> tuple[int, int]:
    """(number of rows, elements per row) of a mask of this shape.

    >>> row_count((8, 16, 1, 1)), row_count((10,)), row_count(())
    ((8, 16), (1, 10), (1, 1))
    """
    shape = tuple(shape)
    if len(shape) <= 1:
        return 1, int(np.prod(shape, dtype=np.int64))
    return shape[0], int(np.prod(shape[1:], dtype=np.int64))


def mask_words(
    shape: Sequence[int], *, seed: int, offset: int = 0, shared_dims: Any = ()
) -> npt.NDArray[np.uint32]:
    """The random words behind a mask, in the mask's own shape (see module doc)."""
    own = mask_shape(shape, shared_dims)
    size = int(np.prod(own, dtype=np.int64))
    return random_words(seed, offset, size).reshape(own)


def _validate(
    shape: Any, p: Any, seed: Any, offset: Any, owner: str
) -> tuple[tuple[int, ...], float, int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError:
        raise fail(
            "shape", shape, "a sequence of integers", owner=owner, kind=TypeError
        ) from None
    if any(s < 0 for s in dims):
        raise fail("shape", shape, "a sequence of non-negative integers", owner=owner)
    return (
        dims,
        check_probability(p, owner=owner),
        check_seed(seed, owner=owner),
        check_offset(offset, owner=owner),
    )


def bernoulli_mask(
    shape: Sequence[int],
    p: float,
    *,
    seed: int,
    offset: int = 0,
    shared_dims: Any = (),
) -> BoolArray:
    """Keep each mask element independently with probability ``1 - p``.

    Args:
        shape: shape of the input the mask is for.
        p: drop probability in [0, 1] (*not* the keep probability).
        seed: the stream, an int in [0, 2**64).
        offset: the first stream element used.
        shared_dims: dimensions along which one draw is shared (the mask has size
            1 there and broadcasts).

    Returns:
        bool array of shape ``mask_shape(shape, shared_dims)``; True means kept.
        It uses ``prod(mask shape)`` stream elements.

    Examples:
        >>> bernoulli_mask((2, 3), 0.5, seed=0).astype(int)  # words 6627e8d5 e169c58d ...
        array([[1, 0, 0],
               [0, 0, 1]])
        >>> bernoulli_mask((4, 3, 5), 0.5, seed=1, shared_dims=2).shape
        (4, 3, 1)
    """
    shape, p, seed, offset = _validate(shape, p, seed, offset, "bernoulli_mask")
    words = mask_words(shape, seed=seed, offset=offset, shared_dims=shared_dims)
    return words.astype(np.int64) < keep_threshold(p)


def fixed_count_mask(
    shape: Sequence[int],
    p: float,
    *,
    seed: int,
    offset: int = 0,
    shared_dims: Any = (),
) -> BoolArray:
    """Keep exactly ``fixed_keep_count(n, p)`` elements in each row of ``n``.

    The kept elements of a row are those with the smallest words (ties to the
    lower index), a uniformly random subset of that size. Arguments and
    return value as in :func:`bernoulli_mask`; rows are defined in the module doc.

    Examples:
        >>> m = fixed_count_mask((3, 10), 0.3, seed=7)
        >>> m.sum(axis=1)
        array([7, 7, 7])
    """
    shape, p, seed, offset = _validate(shape, p, seed, offset, "fixed_count_mask")
    words = mask_words(shape, seed=seed, offset=offset, shared_dims=shared_dims)
    rows, n = row_count(words.shape)
    k = fixed_keep_count(n, p)
    flat = words.reshape(rows, n)
    order = np.argsort(flat, axis=1, kind="stable")  # stable: ties to lower index
    keep = np.zeros((rows, n), dtype=bool)
    np.put_along_axis(keep, order[:, :k], True, axis=1)
    return keep.reshape(words.shape)


def make_mask(
    shape: Sequence[int],
    p: float,
    *,
    seed: int,
    offset: int = 0,
    sampler: str = "bernoulli",
    shared_dims: Any = (),
) -> BoolArray:
    """Dispatch to :func:`bernoulli_mask` or :func:`fixed_count_mask` by name."""
    sampler = check_choice(sampler, "sampler", SAMPLERS, owner="make_mask")
    build = bernoulli_mask if sampler == "bernoulli" else fixed_count_mask
    return build(shape, p, seed=seed, offset=offset, shared_dims=shared_dims)


def own_shape(shape: tuple[int, ...], shared_dims: tuple[int, ...]) -> tuple[int, ...]:
    """``masks.mask_shape`` without its argument checks (the callers made them).

    >>> own_shape((8, 16, 5, 5), (2, -1))
    (8, 16, 1, 1)
    """
    ndim = len(shape)
    dims = {d % ndim for d in shared_dims}
    return tuple(1 if d in dims else size for d, size in enumerate(shape))


def trailing_group(own: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Elements per mask element when the mask ``own`` is shared along a
    trailing run of the dims of ``shape`` (and nowhere else), else 0.

    >>> trailing_group((8, 16, 1, 1), (8, 16, 5, 5)), trailing_group((8, 1, 5), (8, 3, 5))
    (25, 0)
    """
    lead = len(own)
    while lead and own[lead - 1] == 1:
        lead -= 1
    if own[:lead] != shape[:lead]:
        return 0
    return math.prod(shape[lead:])
