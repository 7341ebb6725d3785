"""Locked (variational) dropout: one mask per sequence, reused at every time step.

- Paper: Gal and Ghahramani, "A theoretically grounded application of dropout
  in recurrent neural networks", NeurIPS 2016. https://arxiv.org/abs/1512.05287
  (as ``LockedDropout`` in Merity, Keskar and Socher's AWD-LSTM, ICLR 2018.)

Dropping different units at each time step destroys what a recurrent network
carries through time; Gal and Ghahramani's variational RNN samples one mask per
sequence and applies it at every step. Here that is
:func:`droplab.functional.dropout` with the mask shared along the time
dimension: it keeps the (seed, offset) contract and saves nothing for backward.

The draw is made in batch-major order whatever the layout: a ``(T, N, H)`` input
and its ``(N, T, H)`` transpose (``batch_first=True``) get the same mask, and
rows (for ``fixed`` and ``realized``) are sequences.
"""

from __future__ import annotations

import math

import torch

from droplab._core.base import DropoutBase
from droplab._core.dropout import _dropout, check_arguments
from droplab._validation import check_bool, check_floating_tensor, fail_ndim

__all__ = ["LockedDropout", "locked_dropout"]


def _batch_major(x: torch.Tensor, batch_first: bool, owner: str) -> torch.Tensor:
    """``x`` as ``(N, T, ...)``, a view; ``x`` and ``batch_first`` are checked."""
    x = check_floating_tensor(x, owner=owner)
    if x.ndim < 2:
        layout = "(N, T, ...)" if batch_first else "(T, N, ...)"
        raise fail_ndim(
            x.ndim,
            f"be a sequence batch {layout} with at least 2 dimensions",
            owner=owner,
        )
    return x if batch_first else x.transpose(0, 1)  # (N, T, ...), a view


def locked_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    batch_first: bool = False,
    seed: int | None = None,
    offset: int = 0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
) -> torch.Tensor:
    """Dropout with one mask per sequence, shared by all its time steps.

    Args:
        x: ``(T, N, ...)``, or ``(N, T, ...)`` with ``batch_first=True``.
        p: probability of dropping a unit (for the whole sequence).
        training: drop if True; else the evaluation rule of ``scale``.
        batch_first: the layout of ``x``, as in ``torch.nn.LSTM``.
        seed, offset: the stream; a call uses ``N * prod(...)`` stream elements.
        scale, sampler: as :func:`droplab.functional.dropout`.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Examples:
        >>> y = locked_dropout(torch.ones(5, 2, 3), 0.5, seed=0)  # (T, N, H)
        >>> bool((y == y[0]).all())  # every time step has the same mask
        True
    """
    owner = "locked_dropout"
    batch_first = check_bool(batch_first, "batch_first", owner=owner)
    work = _batch_major(x, batch_first, owner)
    p, training, seed, offset, scale, sampler, _ = check_arguments(
        owner, p, training, seed, offset, scale, sampler, False
    )
    return _locked(x, work, p, training, batch_first, seed, offset, scale, sampler)


def _locked(
    x: torch.Tensor,
    work: torch.Tensor,
    p: float,
    training: bool,
    batch_first: bool,
    seed: int | None,
    offset: int,
    scale: str,
    sampler: str,
) -> torch.Tensor:
    """Locked dropout of checked arguments; ``work`` is ``x`` as ``(N, T, ...)``."""
    out = _dropout(work, p, training, seed, offset, scale, sampler, (1,), False)
    if out is work:  # evaluation with an identity rule: the input itself
        return x
    return out if batch_first else out.transpose(0, 1)


class LockedDropout(DropoutBase):
    """Module form of :func:`locked_dropout` (AWD-LSTM's ``LockedDropout``).

    Args:
        p: probability of dropping a unit for a whole sequence.
        batch_first: ``(N, T, ...)`` inputs if True, ``(T, N, ...)`` otherwise.
        seed: the stream (None: a fresh seed per call).
        scale, sampler: as :func:`droplab.functional.dropout`.

    Examples:
        >>> m = LockedDropout(0.3, seed=1)
        >>> _ = m(torch.ones(7, 2, 4)); m.offset  # one draw per (sequence, unit)
        8
    """

    traceable = True  # draws only through dropout(): compiles into the graph
    repr_defaults = (
        ("batch_first", False),
        ("scale", "inverted"),
        ("sampler", "bernoulli"),
    )

    def __init__(
        self,
        p: float = 0.5,
        *,
        batch_first: bool = False,
        seed: int | None = None,
        scale: str = "inverted",
        sampler: str = "bernoulli",
    ) -> None:
        super().__init__(seed=seed)
        self.p, self.batch_first, self.scale, self.sampler = (
            p,
            batch_first,
            scale,
            sampler,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = _batch_major(x, self.batch_first, type(self).__name__)
        seed, offset = None, 0
        if self.training:
            seed, offset = self.next_stream(
                work.shape[0] * math.prod(work.shape[2:]), x
            )
        return _locked(
            x,
            work,
            self.p,
            self.training,
            self.batch_first,
            seed,
            offset,
            self.scale,
            self.sampler,
        )
