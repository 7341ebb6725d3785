"""The masked-scale op registered with PyTorch: ``torch.ops.droplab.masked_scale``.

What ``torch.compile`` and ``torch.export`` see. The op is the one of
:mod:`droplab._core.op` (``y = x * mask * scale``, its backward the same op on
the gradient) on the kernel :func:`droplab.kernels.select` picks, so compiled
and eager outputs are the same bit for bit. Two things differ from the eager
Function, both for the graph's sake:

- **The stream is a tensor.** ``state`` is a 2-element int64 tensor
  ``[seed, offset]``, each the two's complement of a value in ``[0, 2**64)``
  (read back with ``& (2**64 - 1)``). A module keeps it in a buffer and
  advances the offset in the graph (``state[1] += n``), so the offset is data,
  not a Python constant Dynamo would guard on: one graph serves every call.
- **Backward saves only that state**: 16 bytes, nothing of the input's size.

The state lives on the CPU (a module keeps its ``rng_state`` there when moved):
the kernels read it there without a device synchronisation, for CUDA inputs
too. The eager paths keep :class:`droplab._core.op.MaskedScale` (no dispatcher
between Python and the kernel; see docs/compile.md for the figures).
"""

from __future__ import annotations

from typing import Any

import torch

from droplab import kernels
from droplab._validation import check_offset, check_seed

__all__ = [
    "MASK64",
    "as_int64",
    "graph_state",
    "masked_scale_op",
    "snapshot",
    "state_tensor",
]

MASK64 = 2**64 - 1


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
    key in the graph from torch's default generator; an int seed gives
    ``[seed, offset]``.
    """
    if isinstance(seed, torch.Tensor):
        return seed
    if seed is None:
        key = torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64)
        offset = check_offset(offset, owner=owner)
        return torch.cat([key, torch.tensor([as_int64(offset)], dtype=torch.int64)])
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


@torch.library.custom_op("droplab::masked_scale", mutates_args=())
def masked_scale_op(
    x: torch.Tensor,
    state: torch.Tensor,
    p: float,
    scale: str,
    sampler: str,
    shared_dims: list[int],
) -> torch.Tensor:
    """``x * mask * scale`` with the mask of ``(state[0], state[1])``.

    Args:
        x: float16, bfloat16, float32 or float64 tensor, any device.
        state: int64 ``[seed, offset]`` (two's complement of ``[0, 2**64)``),
            on the CPU (a CUDA state works but costs a synchronisation).
        p, scale, sampler: as :func:`droplab.dropout`, already validated.
        shared_dims: normalised sorted dimensions the mask is shared along.
    """
    seed, offset = state.tolist()
    y = kernels.select(x)(
        x,
        p=p,
        seed=seed & MASK64,
        offset=offset & MASK64,
        scale=scale,
        sampler=sampler,
        shared_dims=tuple(shared_dims),
    )
    # Every kernel lays its result out as torch.empty_like(x), as the fake
    # kernel promises (channels_last stays channels_last).
    return y


@masked_scale_op.register_fake
def _masked_scale_fake(
    x: torch.Tensor,
    state: torch.Tensor,
    p: float,
    scale: str,
    sampler: str,
    shared_dims: list[int],
) -> torch.Tensor:
    return torch.empty_like(x)  # the layout every kernel gives its result


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    # The 16-byte state and four Python values: the mask is redrawn in backward.
    ctx.save_for_backward(inputs[1])
    ctx.mask_args = inputs[2:]


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    # dy/dx = mask * scale: the same op, the same state, on the gradient (through
    # the op again, so a double backward works too).
    (state,) = ctx.saved_tensors
    return (masked_scale_op(grad, state, *ctx.mask_args), None, None, None, None, None)


masked_scale_op.register_autograd(_backward, setup_context=_setup_context)
