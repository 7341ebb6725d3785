"""The stream of a registered operator in a graph: ``[seed, offset]`` as a tensor.

What ``torch.compile`` and ``torch.export`` see of droplab's ops
(:class:`droplab._core.op.StochasticOp` registers them, e.g.
``torch.ops.droplab.masked_scale(x, state, p, scale, sampler, shared_dims)``):

- **The stream is a tensor.** ``state`` is a 2-element int64 tensor
  ``[seed, offset]``, each the two's complement of a value in ``[0, 2**64)``
  (read back with ``& (2**64 - 1)``). A module keeps it in a buffer and
  advances the offset in the graph (``state[1] += n``), so the offset is data,
  not a Python constant Dynamo would guard on: one graph serves every call.
- **Backward saves only that state**: 16 bytes, nothing of the input's size.
- **A seed drawn at run time** (``seed=None``): ``droplab::draw_key`` draws it
  from torch's default generator when the graph runs, exactly as eager code
  draws it (:func:`droplab.rng.draw_seed`), in program order: the op mutates
  one token tensor, so the draws of a graph are chained, never merged, dropped
  or reordered, and Inductor does not replace them with its own generator.
  Compiled and eager code then draw the same seeds under the same
  ``torch.manual_seed``.

The state lives on the CPU (a module keeps its ``rng_state`` there when moved):
the kernels read it there without a device synchronisation, for CUDA inputs
too.
"""

from __future__ import annotations

from typing import Any

import torch

from droplab._validation import MASK64, check_offset, check_seed
from droplab.rng import draw_seed

__all__ = [
    "MASK64",  # _validation's, re-exported for the op and the module base
    "as_int64",
    "draw_key",
    "drawn_state",
    "graph_state",
    "snapshot",
    "state_tensor",
]


def as_int64(value: int) -> int:
    """The int64 two's complement of ``value`` in ``[0, 2**64)``.

    >>> as_int64(5), as_int64(2**64 - 1)
    (5, -1)
    """
    return value - 2**64 if value >= 2**63 else value


def state_tensor(seed: int, offset: int) -> torch.Tensor:
    """The op's ``state`` for ``(seed, offset)``: int64 ``[seed, offset]`` on the CPU.

    >>> state_tensor(2**64 - 1, 3)
    tensor([-1,  3])
    """
    return torch.tensor([as_int64(seed), as_int64(offset)], dtype=torch.int64)


def graph_state(seed: Any, offset: Any, owner: str) -> torch.Tensor:
    """The ``state`` of a registered operator's call inside a graph.

    A module's stream arrives as its tensor (``StochasticModule.next_state``,
    already advanced in the graph) and is used as it is; ``seed=None`` draws the
    key when the graph runs (:func:`drawn_state`); an int seed gives
    ``[seed, offset]``.
    """
    if isinstance(seed, torch.Tensor):
        return seed
    if seed is None:
        return drawn_state(check_offset(offset, owner=owner))
    return state_tensor(
        check_seed(seed, owner=owner), check_offset(offset, owner=owner)
    )


@torch.library.custom_op("droplab::snapshot", mutates_args=())
def snapshot(state: torch.Tensor) -> torch.Tensor:
    """A copy of a module's ``rng_state`` taken before the graph advances it.

    A clone, but opaque: AOTAutograd's partitioner would recompute a plain
    ``clone`` in backward from the buffer, which by then holds the advanced
    offset (the backward mask would be the *next* call's). It may not recompute
    a custom op, so it saves this copy (16 bytes) instead.
    """
    return state.clone()


@snapshot.register_fake
def _snapshot_fake(state: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(state)


# The token every run-time draw mutates: it chains the draws of a graph in
# program order. Its value counts the draws made inside graphs (nothing reads it).
_DRAW_TOKEN = torch.zeros(1, dtype=torch.int64)


@torch.library.custom_op("droplab::draw_key", mutates_args=("token",))
def draw_key(token: torch.Tensor) -> torch.Tensor:
    """A 1-element int64 tensor holding :func:`droplab.rng.draw_seed`, drawn now.

    Opaque to the compiler, so the draw happens when the graph runs, from
    torch's default generator, as eager code draws it. ``token`` is mutated so
    that the draws stay ordered and distinct (the graph threads it from one
    draw to the next).
    """
    token.add_(1)
    return torch.tensor([draw_seed()], dtype=torch.int64)


@draw_key.register_fake
def _draw_key_fake(token: torch.Tensor) -> torch.Tensor:
    return torch.empty(1, dtype=torch.int64)


def drawn_state(offset: int) -> torch.Tensor:
    """``[drawn key, offset]`` for a graph: the stream of a call with ``seed=None``."""
    offset_t = torch.tensor([as_int64(offset)], dtype=torch.int64)
    return torch.cat([draw_key(_DRAW_TOKEN), offset_t])
