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

from droplab._core.base import DropoutBase, choice_check
from droplab._core.dropout import _dropout, check_arguments
from droplab._validation import (
    check_choice,
    check_floating_tensor,
    check_int,
    check_probability,
    fail,
    fail_ndim,
)

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

    Returns:
        A tensor of ``x``'s shape and dtype.

    Examples:
        >>> drop_path(torch.ones(4, 2), 0.5, seed=0)
        tensor([[2., 2.],
                [0., 0.],
                [0., 0.],
                [0., 0.]])
    """
    owner = "drop_path"
    x = _check_input(x, owner)
    if type(mode) is not str or mode not in MODES:
        mode = check_choice(mode, "mode", MODES, owner=owner)
    inplace = False
    p, training, seed, offset, scale, sampler, inplace = check_arguments(
        owner, p, training, seed, offset, scale, sampler, inplace
    )
    return _drop_path(x, p, training, seed, offset, scale, sampler, mode, 1)


def _drop_path(
    x: torch.Tensor,
    p: float,
    training: bool,
    seed: Any,
    offset: Any,
    scale: str,
    sampler: str,
    mode: str,
    groups: int,
) -> torch.Tensor:
    """:func:`drop_path` on checked arguments.

    ``groups`` (``mode="batch"``): the batch holds ``groups`` batches one after
    the other along dim 0, each with its own draw (``groups`` stream
    elements): the replicated batch of :func:`droplab.mc_predict`, declared by
    :meth:`DropPath.replicated`.
    """
    if mode == "batch":
        # (groups, rest): the mask has one element per group
        grouped = x.reshape(groups, -1) if x.numel() else x
        out = _drop_path(grouped, p, training, seed, offset, scale, sampler, "row", 1)
        return out.reshape(x.shape)
    if sampler == "fixed":
        # one row holding the whole batch: exactly round(N (1-p)) samples kept
        flat = x.reshape(1, x.shape[0], -1) if x.numel() else x.reshape(1, *x.shape)
        shared = tuple(range(2, flat.ndim))
        out = _dropout(flat, p, training, seed, offset, scale, sampler, shared, False)
        return out.reshape(x.shape)
    shared = (
        _AFTER_FIRST[x.ndim] if x.ndim < len(_AFTER_FIRST) else tuple(range(1, x.ndim))
    )
    return _dropout(x, p, training, seed, offset, scale, sampler, shared, False)


# tuple(range(1, ndim)) for the usual ndims: every dim but the batch's
_AFTER_FIRST = tuple(tuple(range(1, ndim)) for ndim in range(9))


class DropPath(DropoutBase):
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
        DropPath(p=0.2, seed=0, offset=0, mode='batch')
    """

    traceable = True  # draws only through dropout(): compiles into the graph
    checks = DropoutBase.with_checks(mode=choice_check("mode", MODES))
    repr_defaults = (("scale", "inverted"), ("sampler", "bernoulli"), ("mode", "row"))
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
        self.p, self.scale, self.sampler, self.mode = p, scale, sampler, mode
        self._groups = 1  # see replicated()

    def replicated(self, groups: int) -> int:
        """Declare that inputs hold ``groups`` batches one after the other along
        dim 0 (the replicated batch of :func:`droplab.mc_predict`): in
        ``mode="batch"`` each gets its own draw. Returns the previous count.
        """
        groups = check_int(
            groups, "groups", low=1, owner=f"{type(self).__name__}.replicated"
        )
        previous, self._groups = self._groups, groups
        return previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seed, offset = None, 0
        if self.training:
            x = _check_input(x, type(self).__name__)
            if self.mode == "batch" and x.shape[0] % self._groups:
                raise fail(
                    "groups",
                    self._groups,
                    f"a divisor of the batch size {x.shape[0]}",
                    owner=type(self).__name__,
                )
            seed, offset = self.next_stream(self.mask_elements(x), x)
        return _drop_path(
            x,
            self.p,
            self.training,
            seed,
            offset,
            self.scale,
            self.sampler,
            self.mode,
            self._groups,
        )

    def mask_elements(self, x: torch.Tensor) -> int:
        """Stream elements a training call on ``x`` draws: one per sample
        (``mode="row"``), one per batch (``"batch"``)."""
        return int(x.shape[0]) if self.mode == "row" else self._groups

    def replica_elements(self, x: torch.Tensor) -> int:
        """:meth:`mask_elements`: one element per sample, or per declared batch."""
        return self.mask_elements(x)
