"""Distributed ranks: every process draws its own masks, with no communication.

With data parallelism (``torch.nn.parallel.DistributedDataParallel``) every
process runs the same model with the same seeds on its own slice of the batch.
If the ranks drew masks from the same stream, sample ``i`` of rank 0 and sample
``i`` of rank 1 would share a dropout mask: the "independent" masks of one
global batch would be correlated. droplab modules therefore fold the process
rank into their Philox key (see :meth:`droplab.StochasticModule.next_stream`)::

    key(seed, rank) = seed XOR (rank * 0x9E3779B97F4A7C15 mod 2**64)

- rank 0 uses ``seed`` itself, so a one-process run, and rank 0 of any run, is
  bit for bit the run without torch.distributed;
- for a fixed seed, distinct ranks get distinct keys: multiplying by an odd
  constant is a bijection of the integers mod ``2**64`` and XOR with ``seed`` is
  one too (so ``fold_rank`` is its own inverse for a given rank);
- the multiplier (``2**64`` divided by the golden ratio, made odd) sets bits in
  both 32-bit key words for every rank, so the streams of small seeds on small
  ranks never coincide with the streams of other small seeds: for seeds below
  ``2**32`` and ranks in ``[1, 2**20)`` the high key word alone tells the ranks
  apart (tested);
- nothing is exchanged between processes: a rank's masks are a pure function of
  ``(seed, rank, offset)``, so a run replays per rank from its state_dict, which
  keeps the seed *unfolded* (one checkpoint serves every rank).

Where the rank comes from (:func:`current_rank`): an explicit
:func:`use_rank` block if one is active, otherwise ``torch.distributed``'s global
rank if a process group is initialised, otherwise 0. Use :func:`use_rank` when
the global rank is not the right one: with tensor parallelism, the processes
that hold copies of the same activations must draw the *same* masks, so pass the
data-parallel rank; ``use_rank(0)`` switches the folding off.

Functional ops given an explicit ``seed`` (``droplab.functional.dropout``) use
that key as given: folding is the business of modules that own a stream.

Examples:
    >>> fold_rank(7, 0)
    7
    >>> hex(fold_rank(0, 1))
    '0x9e3779b97f4a7c15'
    >>> fold_rank(fold_rank(7, 3), 3)
    7
    >>> with use_rank(2):
    ...     current_rank()
    2
    >>> current_rank()
    0
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch.distributed as dist

from droplab._validation import MASK64, SEED_LIMIT, check_int, check_seed
from droplab.rng import GOLDEN_GAMMA

__all__ = ["RANK_MULTIPLIER", "current_rank", "fold_rank", "stream_key", "use_rank"]

# floor(2**64 / golden ratio), an odd number: the Weyl constant of SplitMix64.
RANK_MULTIPLIER = GOLDEN_GAMMA

# The rank set by use_rank (None: ask torch.distributed). A context variable,
# so that a block in one thread or task does not leak into another.
_RANK_OVERRIDE: ContextVar[int | None] = ContextVar("droplab_rank", default=None)

# Whether this torch build has torch.distributed (fixed for the process).
_DISTRIBUTED = dist.is_available()


def fold_rank(seed: int, rank: int) -> int:
    """The Philox key a module with ``seed`` uses on process ``rank``.

    ``seed XOR (rank * RANK_MULTIPLIER mod 2**64)``: the seed itself on rank 0,
    and a distinct key for each rank.

    Args:
        seed: the module's (unfolded) seed, an int in ``[0, 2**64)``.
        rank: the process rank, an int in ``[0, 2**64)``.

    Returns:
        The key as an int in ``[0, 2**64)``.

    Examples:
        >>> [hex(fold_rank(2**64 - 1, r)) for r in range(3)]
        ['0xffffffffffffffff', '0x61c8864680b583ea', '0xc3910c8d016b07d5']
    """
    seed = check_seed(seed, owner="fold_rank")
    rank = check_int(rank, "rank", low=0, high=SEED_LIMIT, owner="fold_rank")
    return seed ^ ((rank * RANK_MULTIPLIER) & MASK64)


def stream_key(seed: int) -> int:
    """The key a draw of this process uses for a stream with ``seed``: the one rule.

    ``fold_rank(seed, current_rank())``, and ``seed`` itself on rank 0. Every
    eager draw that droplab keys goes through it: a module's own stream
    (:meth:`droplab.StochasticModule.next_stream`), the calls
    :func:`droplab.intercept` routes, and the streams of
    :func:`droplab.mc_predict` (whose converted and unconverted forms therefore
    agree on every rank). Compiled graphs fold the rank read at trace time in
    the same way (``StochasticModule.next_state``).

    Examples:
        >>> stream_key(7)
        7
        >>> with use_rank(3):
        ...     stream_key(7) == fold_rank(7, 3)
        True
    """
    rank = current_rank()
    # fold_rank(seed, 0) is the seed itself: skip its checks in one process.
    return seed if rank == 0 else fold_rank(seed, rank)


def current_rank() -> int:
    """The rank droplab modules fold into their keys in this process, now.

    The rank of the innermost active :func:`use_rank` block; else the global
    rank of ``torch.distributed`` if its default process group is initialised;
    else 0 (a single process).
    """
    override = _RANK_OVERRIDE.get()
    if override is not None:
        return override
    if _DISTRIBUTED and dist.is_initialized():
        return int(dist.get_rank())
    return 0


@contextlib.contextmanager
def use_rank(rank: int | None) -> Iterator[None]:
    """Within the block, droplab modules draw as process ``rank`` would.

    Args:
        rank: an int >= 0, or None to go back to the automatic rank
            (``torch.distributed``'s, or 0) within the block.

    Use it to replay the masks of another rank in one process, for tensor- or
    pipeline-parallel set-ups where the data-parallel rank is not the global
    one, and in launchers other than torch.distributed.

    Examples:
        >>> import torch
        >>> from droplab import Dropout
        >>> from droplab.distributed import fold_rank, use_rank
        >>> x = torch.ones(1, 8)
        >>> on_rank_1 = Dropout(0.5, seed=0)
        >>> with use_rank(1):
        ...     a = on_rank_1(x)
        >>> from droplab.functional import dropout
        >>> torch.equal(a, dropout(x, 0.5, seed=fold_rank(0, 1), offset=0))
        True
    """
    if rank is not None:
        rank = check_int(rank, "rank", low=0, high=SEED_LIMIT, owner="use_rank")
    token = _RANK_OVERRIDE.set(rank)
    try:
        yield
    finally:
        _RANK_OVERRIDE.reset(token)
