"""One model, any mesh: a DTensor draws the mask of its logical, unsharded tensor.

The stream contract indexes a mask element by its row-major position in the
mask's own shape (:mod:`droplab.masks`). For a ``torch.distributed.tensor.DTensor``
that position is taken in the *logical* tensor: each rank computes its
shard's positions from the shard's start coordinates and the logical
strides, so

- ``Shard(d)`` on any dim, even or uneven, on a 1-d or 2-d mesh, draws on each
  rank exactly its part of the unsharded call's mask;
- ``Replicate`` ranks draw the same mask (the whole one);
- no rank draws or holds more than its own part (memory O(local)), and nothing
  is exchanged: the op runs on ``to_local()`` and wraps the result back with
  the same placements, so autograd (and the mask replayed in backward) goes
  through the same local call.

This is JAX's guarantee for its default random bits ("identical across
shardings"), for PyTorch on the CPU and on the GPU. What cannot be computed
from a shard alone is refused, saying what to redistribute to: ``Partial``
placements (the values are not known until reduced) and any placement other
than ``Shard``/``Replicate``; the ``fixed`` sampler and the ``realized`` scale
(which need a whole row of the mask) on a tensor sharded along a mask dim
other than the first; variants whose draws are not a declared op.

How a shard's positions are found (:func:`plan`): with the mask's own
logical shape ``S``, local shape ``L`` and start ``s``,

- ``L == S``: the shard holds the whole mask: the call's own offset;
- only the first dim differs: the shard is one contiguous block of the
  logical stream, starting ``s[0] * prod(S[1:])`` elements in: the same kernel
  at a shifted offset (the fast path, e.g. ``Shard(0)`` of a batch);
- otherwise the shard is ``R`` runs of ``prod(L[k:])`` consecutive logical
  positions, ``k`` the last dim where ``L`` and ``S`` differ: the kernel takes
  the runs' starts (``R`` integers) and draws each run's words in one pass.

**Local tensors.** A tensor-parallel plan often hands a module a plain local
tensor (``ColwiseParallel``'s default ``use_local_output=True``), and data
parallelism (DDP, FSDP2) always does. Such a tensor keeps the rank fold
(:mod:`droplab.distributed`: each rank its own stream) unless its layout is
declared, in one line:

- in a TP plan, :class:`ShardedInput` as the dropout module's style, e.g.
  ``{"attn.dropout": ShardedInput(Shard(-1))}`` for heads split across the
  TP ranks;
- for data parallelism, ``shard_inputs(model, dp_mesh, [Shard(0)])``: every
  droplab module of ``model`` reads its input as this rank's contiguous slice
  of the global batch, so DP=1 with batch ``B`` and DP=k with slices of
  ``B/k`` draw the same mask for each global sample.

Either wraps the input as a DTensor (``DTensor.from_local``, no
communication: shards of equal size, as plans and samplers give) and the
output back to a local tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.distributed.tensor import DeviceMesh, DTensor, Placement, Replicate, Shard
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
from torch.distributed.tensor.parallel import ParallelStyle

from droplab._validation import fail
from droplab.masks import mask_shape

__all__ = [
    "Box",
    "Runs",
    "ShardedInput",
    "box_of",
    "is_dtensor",
    "plan",
    "refuse_dtensor",
    "shard_inputs",
    "wrap_like",
]


def is_dtensor(x: Any) -> bool:
    """Whether ``x`` is a DTensor (one type comparison for a plain tensor)."""
    return type(x) is not torch.Tensor and isinstance(x, DTensor)


@dataclass(frozen=True)
class Box:
    """Where a shard lies in its logical tensor.

    Attributes:
        shape: the logical (global) shape.
        start: the global coordinates of the shard's first element.
        local: the shard's shape.
    """

    shape: tuple[int, ...]
    start: tuple[int, ...]
    local: tuple[int, ...]


@dataclass(frozen=True)
class Runs:
    """A shard's mask positions: ``starts[r] + i`` for ``i < length``, run ``r``.

    Positions count mask elements of the logical mask (multiply by the op's
    stream elements per mask element for stream offsets); local mask element
    ``r * length + i`` (flat, row-major in the local mask) is position
    ``starts[r] + i``.
    """

    starts: npt.NDArray[np.int64]
    length: int


def _refuse(x: DTensor, owner: str, what: str) -> Exception:
    return ValueError(
        f"The 'x' argument of {owner} is a DTensor with placements "
        f"{tuple(x.placements)}: {what}"
    )


def refuse_dtensor(x: Any, owner: str) -> None:
    """Raise if ``x`` is a DTensor: for ops whose draws have no mesh rule yet."""
    if type(x) is not torch.Tensor and is_dtensor(x):
        raise TypeError(
            f"The 'x' argument of {owner} is a DTensor with placements "
            f"{tuple(x.placements)}; {owner} does not draw on a mesh yet. Call "
            f"it on x.to_local() (each shard then draws as a tensor of its own, "
            f"keyed by its rank) or on x.full_tensor()."
        )


def box_of(x: DTensor, owner: str) -> Box:
    """The :class:`Box` of this rank's shard of ``x``; refuses what droplab
    cannot draw from a shard alone (``Partial``, strided shards, ...)."""
    for placement in x.placements:
        if type(placement) is not Shard and not isinstance(placement, Replicate):
            raise _refuse(
                x,
                owner,
                f"droplab draws masks on Shard(d) and Replicate placements only; "
                f"{placement} is not one of them. Redistribute first, e.g. "
                f"x.redistribute(placements=[Replicate()] * x.device_mesh.ndim) "
                f"(a Partial tensor must be reduced before its values exist).",
            )
    shape = tuple(int(s) for s in x.shape)
    local, start = compute_local_shape_and_global_offset(
        shape, x.device_mesh, x.placements
    )
    return Box(shape, tuple(int(s) for s in start), tuple(int(s) for s in local))


def plan(box: Box, shared_dims: Sequence[int]) -> int | Runs:
    """How this shard draws: an offset shift (mask positions, an int) or :class:`Runs`.

    Examples:
        >>> plan(Box((4, 6), (2, 0), (2, 6)), ())  # rows 2-3: 12 positions in
        12
        >>> plan(Box((4, 6), (0, 0), (4, 6)), ())  # replicated: the whole mask
        0
        >>> runs = plan(Box((4, 6), (0, 3), (4, 3)), ())  # columns 3-5
        >>> runs.starts.tolist(), runs.length
        ([3, 9, 15, 21], 3)
        >>> plan(Box((4, 6, 5), (0, 3, 0), (4, 3, 5)), (1, 2))  # shared dims
        0
    """
    dims = tuple(shared_dims)
    own = mask_shape(box.shape, dims)
    own_local = mask_shape(box.local, dims)
    start = tuple(0 if d in dims else s for d, s in enumerate(box.start))
    if own_local == own:
        return 0
    if own_local[1:] == own[1:]:
        return start[0] * math.prod(own[1:])
    last = max(d for d in range(len(own)) if own_local[d] != own[d])
    strides = [math.prod(own[d + 1 :]) for d in range(len(own))]
    length = math.prod(own_local[last:])
    base = start[last] * strides[last]
    starts = np.full((), base, dtype=np.int64)
    for d in range(last):  # outer dims: every combination of their indices
        index = (np.arange(own_local[d], dtype=np.int64) + start[d]) * strides[d]
        starts = np.add.outer(starts, index)
    return Runs(np.ascontiguousarray(starts, dtype=np.int64).reshape(-1), length)


def wrap_like(y: torch.Tensor, x: DTensor) -> DTensor:
    """``y`` (this rank's result) as a DTensor laid out as ``x``."""
    return DTensor.from_local(
        y,
        x.device_mesh,
        x.placements,
        run_check=False,
        shape=x.shape,
        stride=x.stride(),
    )


def _local_in_out(
    module: nn.Module, mesh: DeviceMesh, placements: tuple[Placement, ...]
) -> nn.Module:
    """Hooks: ``module`` reads its local input as a shard with ``placements``
    on ``mesh`` and returns a local tensor again."""

    def enter(_: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor) or is_dtensor(args[0]):
            return None  # a DTensor keeps its own placements
        sharded = DTensor.from_local(args[0], mesh, placements, run_check=False)
        return (sharded, *args[1:])

    def leave(_: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        return output.to_local() if is_dtensor(output) else output

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)
    return module


def _placements(placements: Placement | Sequence[Placement], owner: str) -> tuple:
    found = (placements,) if isinstance(placements, Placement) else tuple(placements)
    if not found or not all(
        type(p) is Shard or isinstance(p, Replicate) for p in found
    ):
        raise fail(
            "placements",
            placements,
            "a Shard(d) or Replicate() placement, or a sequence of them (one per "
            "mesh dimension)",
            owner=owner,
            kind=TypeError,
        )
    return found


class ShardedInput(ParallelStyle):
    """A TP-plan style for a droplab dropout module whose input is a local shard.

    ``parallelize_module(block, tp_mesh, {"attn.dropout": ShardedInput(Shard(-1))})``:
    the module reads its local input as the shard ``placements`` describe
    (one per mesh dimension; a single placement for a 1-d mesh) and draws its
    part of the logical tensor's mask; it returns a local tensor, as it got
    one. ``Replicate()`` declares an activation every rank of the group holds
    whole: every rank then draws the same mask.

    Args:
        placements: the input's layout on the plan's mesh.
    """

    def __init__(self, placements: Placement | Sequence[Placement]) -> None:
        super().__init__()
        self.placements = _placements(placements, "ShardedInput")

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return _local_in_out(module, device_mesh, self.placements)


def shard_inputs(
    model: nn.Module,
    device_mesh: DeviceMesh,
    placements: Placement | Sequence[Placement],
) -> nn.Module:
    """Declare the layout of every droplab module's local input in ``model``.

    For data parallelism (DDP, FSDP2), ``shard_inputs(model, dp_mesh,
    [Shard(0)])``: each rank's batch is its contiguous slice of the global
    batch, so a global sample draws the same mask whatever the DP degree.
    Modules that get a DTensor keep its own placements. Returns ``model``.
    """
    found = _placements(placements, "shard_inputs")
    for module in model.modules():
        if hasattr(module, "next_stream"):  # droplab's StochasticModule
            _local_in_out(module, device_mesh, found)
    return model
