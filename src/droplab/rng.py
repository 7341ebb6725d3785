"""Philox4x32-10 in NumPy: the reference random stream every backend must match.

- Paper: Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as
  1, 2, 3", SC 2011. https://doi.org/10.1145/2063384.2063405

Philox is counter-based: the output for a counter is a pure function of
(counter, key), so any element of a stream can be computed on its own, in any
order, on any device and any number of threads. That is what lets droplab give
the same mask in NumPy, in the PyTorch CPU path and in a GPU kernel.

The stream contract (see docs/DESIGN.md):

- key = the 64-bit seed split into (low 32 bits, high 32 bits);
- element ``j`` of a draw takes output word ``j % 4`` of the block whose
  counter is ``(j // 4 low 32 bits, j // 4 high 32 bits, 0, 0)``.

While ``j // 4 < 2**32`` this is exactly Triton's ``tl.randint4x(seed, j // 4)``.

Seeds and streams: every rule in this one file.

- **Ranges.** A seed is an int in ``[0, 2**64)`` and a stream has ``4 * 2**64``
  elements, so an offset is in ``[0, OFFSET_LIMIT)`` (the bounds the checks of
  :mod:`droplab._validation` apply).
- **seed=None.** :func:`draw_seed` is the only way droplab resolves
  ``seed=None``: a fresh 63-bit seed from torch's default CPU generator, so
  ``torch.manual_seed`` reproduces a run as with ``torch.nn.Dropout``
  (:func:`resolve_seed` is the argument-checking form the ops call).
- **Derived seeds.** Two derivations, for two jobs:
  :func:`derive_seed` (NumPy ``SeedSequence``, 63 bits) gives independent seeds
  to the tasks of a lab run (a network's layers, a trial, a resample), and
  :func:`stream_seed` (Philox under the root seed) gives the stream of a
  module's call in Monte-Carlo prediction and in the UCI trainer. What keeps
  the uses of :func:`stream_seed` apart are the tags of :data:`STREAM_TAGS`
  (the third counter word for ``mc_predict``, the call index for the UCI
  protocol's stages and layers); a new use takes a new tag there.
- **Compute dtype.** Words become numbers in the dtype of
  :func:`droplab.scaling.compute_dtype`, the numerics rule shared with the
  kernels.
- **Words by device.** :func:`droplab.kernels.stream_words` draws words on the
  tensor's device (the Triton kernel on CUDA, this file's NumPy Philox on the
  CPU): the same words everywhere.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from droplab._validation import (
    MASK64,
    OFFSET_LIMIT,
    SEED_LIMIT,
    check_int,
    check_offset,
    check_seed,
    fail,
)

__all__ = [
    "OFFSET_LIMIT",
    "SEED_LIMIT",
    "STREAM_TAGS",
    "derive_seed",
    "draw_seed",
    "philox4x32",
    "random_words",
    "resolve_seed",
    "seed_to_key",
    "slice_seed",
    "stream_seed",
]

GOLDEN_GAMMA = 0x9E3779B97F4A7C15
"""2**64 / golden ratio, odd: the Weyl step of SplitMix64 (:func:`slice_seed`)
and the rank multiplier of :func:`droplab.distributed.fold_rank`."""

# One tag per use of stream_seed, so that the seeds each use derives never meet
# (the tag is ASCII, in the comment). "mc_predict" is stream_seed's third
# counter word; the UCI uses pass theirs as the call index.
STREAM_TAGS = {
    "mc_predict": 0x4D436472,  # "MCdr": pass streams of mc_predict
    "uci_stage": 0x55434953,  # "UCIS": the UCI protocol's stage seeds
    "uci_train": 0x55434954,  # "UCIT": the stacked UCI trainer's dropout layers
}

# Multipliers and Weyl key increments of Philox4x32 (Salmon et al., Table 2).
PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)

UInt32Array = npt.NDArray[np.uint32]


def seed_to_key(seed: int) -> tuple[int, int]:
    """Split a 64-bit seed into the Philox key (low 32 bits, high 32 bits).

    >>> seed_to_key(0x0123456789ABCDEF) == (0x89ABCDEF, 0x01234567)
    True
    """
    seed = check_seed(seed)
    return seed & 0xFFFFFFFF, seed >> 32


def _as_words(value: npt.ArrayLike, name: str, last: int) -> npt.NDArray[np.uint64]:
    array = np.asarray(value)
    if array.dtype.kind not in "ui":
        raise fail(name, value, "an array of unsigned 32-bit integers", kind=TypeError)
    if array.ndim == 0 or array.shape[-1] != last:
        raise fail(
            name, f"array of shape {array.shape}", f"an array of shape (..., {last})"
        )
    if array.size and (array.min() < 0 or array.max() > 0xFFFFFFFF):
        raise fail(name, value, "32-bit words, each in [0, 2**32)")
    return array.astype(np.uint64)


def philox4x32(
    counter: npt.ArrayLike, key: npt.ArrayLike, rounds: int = 10
) -> UInt32Array:
    """Apply the Philox4x32 bijection to counters, vectorised over leading dims.

    Args:
        counter: uint32 words of shape (..., 4).
        key: uint32 words of shape (2,) or (..., 2), broadcast against counter.
        rounds: number of rounds; 10 is the standard (and droplab's) choice.

    Returns:
        uint32 array of shape (..., 4): the four output words of each counter.

    Examples:
        >>> out = philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.uint32))
        >>> [f"{w:08x}" for w in out]
        ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    """
    rounds = check_int(rounds, "rounds", low=0, high=1 << 16, owner="philox4x32")
    ctr = _as_words(counter, "counter", 4)
    k = _as_words(key, "key", 2)
    c0, c1, c2, c3 = (ctr[..., i] for i in range(4))
    k0, k1 = k[..., 0], k[..., 1]
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & _LOW32
            k1 = (k1 + PHILOX_W1) & _LOW32
        prod0 = c0 * PHILOX_M0  # < 2**64: exact in uint64
        prod1 = c2 * PHILOX_M1
        c0 = (prod1 >> _SHIFT32) ^ c1 ^ k0
        c1 = prod1 & _LOW32
        c2 = (prod0 >> _SHIFT32) ^ c3 ^ k1
        c3 = prod0 & _LOW32
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1).astype(np.uint32)


def random_words(seed: int, offset: int, n: int) -> UInt32Array:
    """The ``n`` random 32-bit words of stream ``seed`` starting at element ``offset``.

    Element ``i`` of the result is element ``j = offset + i`` of the stream:
    word ``j % 4`` of Philox4x32-10 at counter ``(j // 4 low, j // 4 high, 0, 0)``
    under the key ``seed_to_key(seed)``. Any slice of a stream can therefore be
    drawn on its own: ``random_words(s, o, n)[a:]`` equals
    ``random_words(s, o + a, n - a)``.

    Examples:
        >>> w = random_words(seed=0, offset=0, n=6)
        >>> [f"{x:08x}" for x in w[:4]]
        ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
        >>> bool((random_words(0, 2, 4) == w[2:]).all())
        True
    """
    seed = check_seed(seed, owner="random_words")
    offset = check_offset(offset, owner="random_words")
    n = check_int(n, "n", low=0, owner="random_words")
    if n == 0:
        return np.zeros(0, np.uint32)
    first_block = offset // 4
    last_block = (offset + n - 1) // 4
    blocks = np.arange(last_block - first_block + 1, dtype=np.uint64) + np.uint64(
        first_block
    )
    counter = np.zeros((*blocks.shape, 4), np.uint64)
    counter[:, 0] = blocks & _LOW32
    counter[:, 1] = blocks >> _SHIFT32
    low, high = seed_to_key(seed)
    words = philox4x32(counter, np.array([low, high], np.uint64)).reshape(-1)
    start = offset - 4 * first_block
    return words[start : start + n]


def draw_seed() -> int:
    """A fresh 63-bit seed from torch's default CPU generator.

    This is how ``seed=None`` is resolved everywhere in droplab, so that
    ``torch.manual_seed`` reproduces a run exactly as with ``torch.nn.Dropout``.
    The draw is ``torch.randint(0, 2**63 - 1, ())``'s (the same value, the
    same generator state after it), made in a 0-d buffer of the calling
    thread, which saves a tensor allocation on every call.

    >>> _ = torch.manual_seed(0); a = draw_seed()
    >>> _ = torch.manual_seed(0); a == draw_seed()
    True
    """
    if torch._C._are_functorch_transforms_active():
        # Under torch.func.vmap the draw would be a batched tensor (one per
        # slice) that cannot become an int: draw once, outside the transforms;
        # the op's vmap rule then gives each slice its stream (slice_seed).
        with torch._C._DisableFuncTorch():
            return int(
                torch.randint(0, _SEED_HIGH, (), dtype=torch.int64, device="cpu")
            )
    try:
        buffer, view = _SEED_BUFFER.pair
    except AttributeError:
        buffer, view = _SEED_BUFFER.pair = _seed_buffer()
    buffer.random_(0, _SEED_HIGH)
    return int(view)  # read through NumPy: cheaper than Tensor.__int__


_SEED_HIGH = 2**63 - 1
_SEED_BUFFER = threading.local()


def _seed_buffer() -> tuple[torch.Tensor, npt.NDArray[np.int64]]:
    # A normal CPU tensor even when first made under inference_mode or a
    # default device, so later draws outside them can write it; and its
    # NumPy view, which reads it.
    with torch.inference_mode(False):
        buffer = torch.empty((), dtype=torch.int64, device="cpu")
    return buffer, buffer.numpy()


def slice_seed(seed: int, index: int) -> int:
    """The seed of slice ``index`` of a call vmapped with ``randomness="different"``.

    SplitMix64's finaliser of ``seed + (index + 1) * golden ratio`` (mod
    ``2**64``): a different, well-mixed stream for every slice, so slice ``b``
    of a vmapped dropout draws the mask the unbatched call would draw with
    seed ``slice_seed(seed, b)`` at the same offset. Nested vmaps apply it
    once per level (the innermost first).

    >>> slice_seed(0, 0) != slice_seed(0, 1) != slice_seed(1, 0)
    True
    >>> 0 <= slice_seed(2**64 - 1, 7) < 2**64
    True
    """
    z = (seed + (index + 1) * GOLDEN_GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def resolve_seed(
    seed: Any, offset: Any, owner: str, *, draw: bool = True
) -> tuple[int, int]:
    """Validate ``(seed, offset)``; ``seed=None`` takes :func:`draw_seed` when
    ``draw`` is True, and 0 otherwise (no draw at evaluation, as
    ``torch.nn.Dropout``)."""
    if seed is None:
        return (draw_seed() if draw else 0), check_offset(offset, owner=owner)
    return check_seed(seed, owner=owner), check_offset(offset, owner=owner)


def stream_seed(seed: int, module_index: int, call_index: int) -> int:
    """The seed of the stream of a dropout module's ``call_index``-th call.

    Philox4x32-10 under the key of ``seed`` at counter
    ``(module_index, call_index, STREAM_TAGS["mc_predict"], 0)``; the first two
    words are the low and high halves of the derived 64-bit seed.

    >>> stream_seed(0, 0, 0) == stream_seed(0, 0, 0) != stream_seed(0, 1, 0)
    True
    """
    seed = check_seed(seed, owner="stream_seed")
    counter = np.array(
        [module_index, call_index, STREAM_TAGS["mc_predict"], 0], np.uint64
    )
    words = philox4x32(counter, np.array(seed_to_key(seed), np.uint64))
    return int(words[0]) | (int(words[1]) << 32)


def path_seed(root: int, path: str) -> int:
    """The seed of the module at ``path`` (its name in ``named_modules``) of a
    model seeded with ``root``: :func:`derive_seed` of ``root`` and the
    path's BLAKE2b digest.

    A pure function of the path, not of a position in a walk: a pipeline
    stage that keeps the full model's module names (as torchtitan's and
    ``torch.distributed.pipelining``'s splits do) gives each module the
    seed it has in the whole model.

    >>> path_seed(0, "layers.3.dropout") == path_seed(0, "layers.3.dropout")
    True
    >>> path_seed(0, "layers.3.dropout") != path_seed(0, "layers.4.dropout")
    True
    """
    root = check_seed(root, "root", owner="path_seed")
    if not isinstance(path, str):
        raise fail(
            "path", path, "a module name (a str)", owner="path_seed", kind=TypeError
        )
    digest = hashlib.blake2b(path.encode("utf-8"), digest_size=16).digest()
    words = np.frombuffer(digest, dtype="<u4")
    return derive_seed(root, *(int(w) for w in words))


def derive_seed(root: int, *keys: int) -> int:
    """An independent 63-bit seed for task ``keys`` of run ``root`` (NumPy SeedSequence).

    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
    True
    """
    state = np.random.SeedSequence(root, spawn_key=tuple(keys)).generate_state(
        2, np.uint32
    )
    return (int(state[0]) << 31) ^ int(state[1])
