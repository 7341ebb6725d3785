"""DropPath (stochastic depth): drop a whole residual branch per sample.

- Paper: Huang, Sun, Liu, Sedra and Weinberger, "Deep networks with stochastic
  depth", ECCV 2016. https://arxiv.org/abs/1603.09382
  (timm: ``timm.layers.DropPath``; torchvision: ``stochastic_depth(mode="row")``.)

In a residual block ``x + f(x)``, stochastic depth drops ``f(x)`` for a whole
sample with probability ``p``: ``x + drop_path(f(x))``. It is dropout with one
draw per sample, i.e. :func:`droplab.functional.dropout` with the mask shared
along every dimension but the first; it keeps the (seed, offset) contract and
saves nothing for backward. The paper's "linear decay rule" gives block ``l`` of
``L`` the rate ``p_l = (l / L) * p_L`` (:func:`linear_drop_rates`).

``mode="batch"`` (torchvision's ``stochastic_depth(mode="batch")``) drops the
branch for the whole batch at once: one stream element per call.
"""

from __future__ import annotations

from typing import Any

import torch

from droplab._core.dropout import dropout
from droplab._core.module import StochasticModule
from droplab._validation import (
    check_choice,
    check_floating_tensor,
    check_int,
    check_probability,
    fail,
    fail_ndim,
)
from droplab.masks import SAMPLERS
from droplab.scaling import SCALES

__all__ = ["MODES", "DropPath", "drop_path", "linear_drop_rates"]

# "row": one draw per sample (timm, torchvision's default); "batch": one draw
# for the whole batch (torchvision's mode="batch").
MODES = ("row", "batch")


def linear_drop_rates(p_last: float, depth: int) -> list[float]:
    """Huang et al.'s linear decay rule: block ``l = 1..depth`` gets ``l/depth * p_last``.

    >>> linear_drop_rates(0.5, 4)
    [0.125, 0.25, 0.375, 0.5]
    """
    p_last = check_probability(p_last, "p_last", owner="linear_drop_rates")
    depth = check_int(depth, "depth", low=1, owner="linear_drop_rates")
    return [p_last * layer / depth for layer in range(1, depth + 1)]


def _check_input(x: Any, owner: str) -> torch.Tensor:
    x = check_floating_tensor(x, owner=owner)
    if x.ndim < 1:
        raise fail_ndim(x.ndim, "have a batch dimension (at least 1-d)", owner=owner)
    return x


def drop_path(
    x: torch.Tensor,
    p: float = 0.0,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
    mode: str = "row",
    groups: int = 1,
) -> torch.Tensor:
    """Zero each sample ``x[n]`` entirely with probability ``p``.

    Args:
        x: a residual branch's output, ``(N, ...)``, any float dtype.
        p: probability of dropping a sample's branch (default 0, as timm).
        training: drop if True; else the evaluation rule of ``scale``.
        seed, offset: the stream; a call uses ``N`` stream elements.
        scale: ``"inverted"`` (timm's ``scale_by_keep=True``), ``"none"``
            (``scale_by_keep=False``), ``"classic"`` (the paper: scale the branch
            by ``1 - p`` at test time) or ``"realized"``.
        sampler: ``"bernoulli"``, or ``"fixed"`` to drop exactly ``round(N p)``
            samples of the batch (the batch is then one row).
        mode: ``"row"`` (one draw per sample, ``N`` stream elements) or
            ``"batch"`` (one draw for the whole batch, as torchvision's
            ``mode="batch"``).
        groups: with ``mode="batch"``, the batch holds ``groups`` batches one
            after the other along dim 0 (the replicated batch of
            :func:`droplab.mc_predict`), each with its own draw: ``groups``
            stream elements.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Examples:
        >>> drop_path(torch.ones(4, 2), 0.5, seed=0)
        tensor([[2., 2.],
                [0., 0.],
                [0., 0.],
                [0., 0.]])
    """
    x = _check_input(x, "drop_path")
    mode = check_choice(mode, "mode", MODES, owner="drop_path")
    if mode == "batch":
        groups = check_int(groups, "groups", low=1, owner="drop_path")
        if x.shape[0] % groups:
            raise fail(
                "groups",
                groups,
                f"a divisor of the batch size {x.shape[0]}",
                owner="drop_path",
            )
        # (groups, rest): the mask has one element per group
        grouped = x.reshape(groups, -1) if x.numel() else x
        out = drop_path(
            grouped,
            p,
            training,
            seed=seed,
            offset=offset,
            scale=scale,
            sampler=sampler,
        )
        return out.reshape(x.shape)
    if sampler == "fixed":
        # one row holding the whole batch: exactly round(N (1-p)) samples kept
        flat = x.reshape(1, x.shape[0], -1) if x.numel() else x.reshape(1, *x.shape)
        out = dropout(
            flat,
            p,
            training,
            seed=seed,
            offset=offset,
            scale=scale,
            sampler=sampler,
            shared_dims=tuple(range(2, flat.ndim)),
        )
        return out.reshape(x.shape)
    return dropout(
        x,
        p,
        training,
        seed=seed,
        offset=offset,
        scale=scale,
        sampler=sampler,
        shared_dims=tuple(range(1, x.ndim)),
    )


class DropPath(StochasticModule):
    """Module form of :func:`drop_path`; a drop-in for ``timm.layers.DropPath``.

    Args:
        p: probability of dropping a sample's branch.
        seed: the stream (None: a fresh seed per call); a call uses ``N`` elements.
        scale, sampler, mode: as :func:`drop_path`.

    Examples:
        >>> m = DropPath(0.2, seed=0)
        >>> _ = m(torch.ones(8, 3, 4)); m.offset
        8
        >>> DropPath(0.2, seed=0, mode="batch")
        DropPath(p=0.2, seed=0, offset=0, scale='inverted', mode='batch')
    """

    traceable = True  # draws only through dropout(): compiles into the graph
    _groups: int

    def __init__(
        self,
        p: float = 0.0,
        *,
        seed: int | None = None,
        scale: str = "inverted",
        sampler: str = "bernoulli",
        mode: str = "row",
    ) -> None:
        super().__init__(seed=seed)
        owner = type(self).__name__
        self.p = check_probability(p, owner=owner)
        self.scale = check_choice(scale, "scale", SCALES, owner=owner)
        self.sampler = check_choice(sampler, "sampler", SAMPLERS, owner=owner)
        self.mode = check_choice(mode, "mode", MODES, owner=owner)
        # Batches one after the other along dim 0 in "batch" mode: set by
        # droplab.mc_predict for its replicated batch (one draw per pass).
        self._groups = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seed, offset = None, 0
        if self.training:
            x = _check_input(x, type(self).__name__)
            seed, offset = self.next_stream(self.mask_elements(x))
        return drop_path(
            x,
            self.p,
            self.training,
            seed=seed,
            offset=offset,
            scale=self.scale,
            sampler=self.sampler,
            mode=self.mode,
            groups=self._groups,
        )

    def mask_elements(self, x: torch.Tensor) -> int:
        """Stream elements a training call on ``x`` draws: one per sample
        (``mode="row"``), one per batch (``"batch"``)."""
        return int(x.shape[0]) if self.mode == "row" else self._groups

    def extra_repr(self) -> str:
        parts = [f"p={self.p}", self.stream_repr(), f"scale={self.scale!r}"]
        if self.mode != "row":
            parts.append(f"mode={self.mode!r}")
        return ", ".join(filter(None, parts))
