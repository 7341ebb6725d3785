"""DropBlock: drop contiguous square regions of a feature map.

- Paper: Ghiasi, Lin and Le, "DropBlock: a regularization method for
  convolutional networks", NeurIPS 2018. https://arxiv.org/abs/1810.12890
  (timm: ``timm.layers.DropBlock2d``; torchvision: ``ops.DropBlock2d``.)

Dropping single pixels of a convolutional feature map leaves their neighbours
to carry the same information; DropBlock drops ``block_size x block_size``
squares instead. Algorithm 1 of the paper, as done here:

1. seed positions: each position ``(i, j)`` whose block fits inside the map,
   ``0 <= i <= H - bh`` and ``0 <= j <= W - bw``, is a seed with probability
   ``gamma = p H W / (bh bw (H - bh + 1) (W - bw + 1))`` (clipped to [0, 1]),
   where ``bh = min(block_size, H)`` and ``bw = min(block_size, W)``;
2. every seed drops the block ``[i, i + bh) x [j, j + bw)``;
3. the kept units are scaled by ``count(M) / count_ones(M)`` over the whole
   tensor (0 if nothing is kept).

Seeds come from the Philox stream: position ``(n, c, i, j)`` uses stream element
``offset`` + its flat index in ``(N, C, H, W)`` (``(N, 1, H, W)`` with
``shared_channels=True``) and is a seed iff its word is
``< droplab.masks.keep_threshold(1 - gamma)``. Backward regenerates the mask:
nothing is saved. The paper's schedule (the rate raised linearly from 0 to
``p``) is ``warmup_steps`` of :class:`DropBlock2d`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from droplab._core.base import DropoutBase, bool_check, int_check
from droplab._core.stream import compute_dtype, keep_mask
from droplab._validation import (
    check_bool,
    check_floating_tensor,
    check_int,
    check_probability,
    fail_ndim,
)
from droplab.kernels import fused
from droplab.mesh import refuse_dtensor
from droplab.rng import resolve_seed

__all__ = ["DropBlock2d", "drop_block2d", "drop_block_gamma"]


def drop_block_gamma(p: float, block_size: int, height: int, width: int) -> float:
    """The seed probability ``gamma`` of the paper's eq. (1), clipped to [0, 1].

    >>> round(drop_block_gamma(0.1, 3, 8, 8), 6)  # 0.1 * 64 / (9 * 36)
    0.019753
    """
    bh, bw = min(block_size, height), min(block_size, width)
    valid = (height - bh + 1) * (width - bw + 1)
    return min(1.0, p * height * width / (bh * bw * valid))


def _keep_and_scale(
    shape: tuple[int, ...],
    p: float,
    block_size: int,
    seed: int,
    offset: int,
    shared_channels: bool,
    device: Any,
) -> tuple[torch.Tensor, float]:
    n, c, h, w = shape
    bh, bw = min(block_size, h), min(block_size, w)
    gamma = drop_block_gamma(p, block_size, h, w)
    seed_shape = (n, 1 if shared_channels else c, h, w)
    # the block seeds: a Bernoulli mask (drawn on the device where it can be)
    seeds = keep_mask(seed_shape, 1.0 - gamma, seed=seed, offset=offset, device=device)
    seeds = seeds.to(torch.float32)
    seeds[:, :, h - bh + 1 :, :] = 0.0  # a block must fit inside the map
    seeds[:, :, :, w - bw + 1 :] = 0.0
    # block [i, i + bh) x [j, j + bw) of seed (i, j): a max over the window
    # ending at each output position, after padding on the top and left
    padded = F.pad(seeds, (bw - 1, 0, bh - 1, 0))
    dropped = F.max_pool2d(padded, (bh, bw), stride=1)
    keep = (dropped == 0).expand(shape)
    kept = int(keep.sum())
    return keep, (keep.numel() / kept if kept else 0.0)


class _DropBlock(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        p: float,
        block_size: int,
        seed: int,
        offset: int,
        shared_channels: bool,
    ) -> torch.Tensor:
        ctx.args = (p, block_size, seed, offset, shared_channels)
        h, w = x.shape[2:]
        y = fused.drop_block(  # the fused CPU kernel: two passes, no seed tensor
            x,
            gamma=drop_block_gamma(p, block_size, h, w),
            block=(min(block_size, h), min(block_size, w)),
            seed=seed,
            offset=offset,
            shared_channels=shared_channels,
        )
        if y is not None:
            return y
        keep, factor = _keep_and_scale(
            tuple(x.shape), p, block_size, seed, offset, shared_channels, x.device
        )
        compute = compute_dtype(x.dtype)
        scale = torch.tensor(factor, dtype=compute, device=x.device)
        zero = torch.zeros((), dtype=compute, device=x.device)
        # written into a tensor laid out as x (channels_last stays channels_last)
        out = torch.empty_like(x, dtype=compute)
        return torch.where(keep, x.to(compute) * scale, zero, out=out).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        # linear in x: the same mask and scale applied to the gradient
        return (_DropBlock.apply(grad, *ctx.args), *([None] * len(ctx.args)))


def _check(
    x: Any, p: Any, block_size: Any, owner: str
) -> tuple[torch.Tensor, float, int]:
    x = check_floating_tensor(x, owner=owner)
    if x.ndim != 4:
        raise fail_ndim(x.ndim, "be a 4-d (N, C, H, W) tensor", owner=owner)
    return (
        x,
        check_probability(p, owner=owner),
        check_int(block_size, "block_size", low=1, owner=owner),
    )


def drop_block2d(
    x: torch.Tensor,
    p: float = 0.1,
    block_size: int = 7,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
    shared_channels: bool = False,
) -> torch.Tensor:
    """Drop ``block_size`` squares so that about a fraction ``p`` of units is dropped.

    Args:
        x: ``(N, C, H, W)`` feature maps, any float dtype.
        p: the target drop rate (the paper's ``1 - keep_prob``).
        block_size: side of the dropped squares (clipped to the map's size).
        training: drop if True; identity otherwise.
        seed, offset: the stream; a call uses ``N * C * H * W`` stream elements
            (``N * H * W`` with ``shared_channels``).
        shared_channels: one block pattern for all channels of a sample
            (default: each channel its own, the paper's better variant).

    Returns:
        A tensor of ``x``'s shape and dtype. The expected dropped fraction is
        about ``p`` (a bit less: blocks overlap).

    Examples:
        >>> y = drop_block2d(torch.ones(1, 1, 6, 6), 0.3, 3, seed=4)
        >>> (y[0, 0] > 0).int()
        tensor([[1, 1, 1, 1, 1, 1],
                [1, 0, 0, 0, 1, 1],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0],
                [1, 1, 1, 1, 1, 1]], dtype=torch.int32)
    """
    owner = "drop_block2d"
    x, p, block_size = _check(x, p, block_size, owner)
    refuse_dtensor(x, owner)
    training = check_bool(training, "training", owner=owner)
    shared = check_bool(shared_channels, "shared_channels", owner=owner)
    seed_, offset_ = resolve_seed(seed, offset, owner, draw=training and p > 0.0)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    result: torch.Tensor = _DropBlock.apply(x, p, block_size, seed_, offset_, shared)
    return result


class DropBlock2d(DropoutBase):
    """Module form of :func:`drop_block2d`, with the paper's linear schedule.

    Args:
        p: the target drop rate.
        block_size: side of the dropped squares.
        warmup_steps: if positive, the rate used at training call ``t`` (counted
            from 0) is ``p * min(1, t / warmup_steps)``: the paper's linear
            increase of the drop rate. The count ``num_steps`` is a buffer, so it
            travels in ``state_dict``.
        shared_channels: as :func:`drop_block2d`.
        seed: the stream (None: a fresh seed per call).

    Examples:
        >>> m = DropBlock2d(0.2, 3, warmup_steps=4, seed=0)
        >>> for _ in range(3): _ = m(torch.ones(2, 3, 8, 8))
        >>> m.current_p, int(m.num_steps)  # 0.2 * 3 / 4
        (0.15000000000000002, 3)
    """

    num_steps: torch.Tensor
    checks = DropoutBase.with_checks(
        block_size=int_check("block_size", 1),
        warmup_steps=int_check("warmup_steps", 0),
        shared_channels=bool_check("shared_channels"),
    )
    repr_always = ("p", "block_size")
    repr_defaults = (("warmup_steps", 0), ("shared_channels", False))

    def __init__(
        self,
        p: float = 0.1,
        block_size: int = 7,
        *,
        warmup_steps: int = 0,
        shared_channels: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.p, self.block_size = p, block_size
        self.warmup_steps, self.shared_channels = warmup_steps, shared_channels
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))

    @property
    def current_p(self) -> float:
        """The drop rate the next training call uses (after the schedule)."""
        if self.warmup_steps == 0:
            return self.p
        return self.p * min(1.0, int(self.num_steps) / self.warmup_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        owner = type(self).__name__
        x = check_floating_tensor(x, owner=owner)
        refuse_dtensor(x, owner)
        if x.ndim != 4:
            raise fail_ndim(x.ndim, "be a 4-d (N, C, H, W) tensor", owner=owner)
        p = self.current_p
        self.num_steps += 1
        n, c, h, w = x.shape
        seed, offset = self.next_stream(n * (1 if self.shared_channels else c) * h * w)
        if p == 0.0 or x.numel() == 0:
            return x
        result: torch.Tensor = _DropBlock.apply(
            x, p, self.block_size, seed, offset, self.shared_channels
        )
        return result
