"""Dropout as a module: a drop-in for ``torch.nn.Dropout`` that owns its stream.

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014.
  https://jmlr.org/papers/v15/srivastava14a.html
- Monte-Carlo dropout: Gal and Ghahramani, "Dropout as a Bayesian
  approximation", ICML 2016. https://proceedings.mlr.press/v48/gal16.html

:class:`Dropout` takes the same positional arguments as ``torch.nn.Dropout``
(``p``, ``inplace``) and behaves the same in ``train()`` and ``eval()``; the
keyword-only extras choose the seed, the scaling rule, the sampler and the
dimensions along which the mask is shared. :func:`mc_dropout` turns sampling on
in the dropout modules of a model, and only in them, for Monte-Carlo prediction.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from droplab import _backend
from droplab._module import StochasticModule
from droplab._validation import (
    check_choice,
    check_probability,
    check_shared_dims,
    fail,
)
from droplab.functional import check_bool, check_floating_tensor, dropout
from droplab.masks import SAMPLERS
from droplab.scaling import SCALES

__all__ = ["DROPOUT_TYPES", "Dropout", "StochasticModule", "mc_dropout"]

# The torch.nn modules that mc_dropout switches to sampling, besides droplab's own.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    StochasticModule,
)

ModelT = TypeVar("ModelT", bound=nn.Module)


class Dropout(StochasticModule):
    """Zero each unit with probability ``p`` during training and scale the rest.

    A drop-in for ``torch.nn.Dropout``: the same positional arguments, identity in
    ``eval()`` for the default ``inverted`` rule. With an int ``seed`` the module
    owns that stream: every training call uses the next
    ``_backend.stream_elements(x.shape, shared_dims)`` elements of it, and
    ``(seed, offset)`` are saved in ``state_dict``, so a resumed run draws the
    same masks. Nothing of the input's size is saved for backward.

    Args:
        p: probability of *dropping* a unit (not the keep probability!), in [0, 1].
        inplace: overwrite the input.
        seed: an int in ``[0, 2**64)``, or None for a fresh seed from torch's
            default generator on every call.
        scale: ``"inverted"``, ``"classic"``, ``"realized"`` or ``"none"``
            (see :mod:`droplab.scaling`).
        sampler: ``"bernoulli"`` or ``"fixed"`` (see :mod:`droplab.masks`).
        shared_dims: dimensions along which the mask is shared (negative ones count
            from the end), e.g. ``(2, 3)`` drops whole channels of (N, C, H, W).

    Shape:
        Input: any. Output: the same as the input.

    Examples:
        >>> m = Dropout(0.5, seed=0)
        >>> m
        Dropout(p=0.5, inplace=False, seed=0, offset=0)
        >>> m(torch.ones(2, 4))
        tensor([[2., 0., 0., 0.],
                [0., 2., 0., 2.]])
        >>> m.offset
        8
        >>> _ = m.eval(); m(torch.ones(2, 4)).sum().item()
        8.0
    """

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        seed: int | None = None,
        scale: str = "inverted",
        sampler: str = "bernoulli",
        shared_dims: Any = (),
    ) -> None:
        super().__init__(seed=seed)
        owner = type(self).__name__
        self.p = check_probability(p, owner=owner)
        self.inplace = check_bool(inplace, "inplace", owner=owner)
        self.scale = check_choice(scale, "scale", SCALES, owner=owner)
        self.sampler = check_choice(sampler, "sampler", SAMPLERS, owner=owner)
        self.shared_dims = _check_dims_type(shared_dims, owner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return dropout(
                x,
                self.p,
                False,
                scale=self.scale,
                sampler=self.sampler,
                shared_dims=self.shared_dims,
                inplace=self.inplace,
            )
        owner = type(self).__name__
        x = check_floating_tensor(x, owner=owner)
        shared_dims = self.shared_dims
        if type(shared_dims) is tuple and not shared_dims:  # the common case
            dims: tuple[int, ...] = ()
            n = x.numel()  # = stream_elements(x.shape, ()), the mask covers x
        else:
            dims = check_shared_dims(shared_dims, x.ndim, owner=owner)
            n = _backend.stream_elements(x.shape, dims)
        seed, offset = self.next_stream(n)
        return dropout(
            x,
            self.p,
            True,
            seed=seed,
            offset=offset,
            scale=self.scale,
            sampler=self.sampler,
            shared_dims=dims,
            inplace=self.inplace,
        )

    def extra_repr(self) -> str:
        parts = [f"p={self.p}", f"inplace={self.inplace}"]
        if self.stream_repr():
            parts.append(self.stream_repr())
        if self.scale != "inverted":
            parts.append(f"scale={self.scale!r}")
        if self.sampler != "bernoulli":
            parts.append(f"sampler={self.sampler!r}")
        if self.shared_dims:
            parts.append(f"shared_dims={self.shared_dims}")
        return ", ".join(parts)


def _check_dims_type(shared_dims: Any, owner: str) -> tuple[int, ...]:
    """A tuple of distinct ints; their range is checked against each input's ndim."""
    allowed = "an int or a tuple of distinct ints"
    if isinstance(shared_dims, numbers.Integral) and not isinstance(shared_dims, bool):
        dims: tuple[Any, ...] = (shared_dims,)
    elif isinstance(shared_dims, Iterable) and not isinstance(shared_dims, str):
        dims = tuple(shared_dims)
    else:
        raise fail("shared_dims", shared_dims, allowed, owner=owner, kind=TypeError)
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in dims):
        raise fail("shared_dims", shared_dims, allowed, owner=owner, kind=TypeError)
    if len(set(dims)) != len(dims):
        raise fail("shared_dims", shared_dims, allowed, owner=owner)
    return tuple(int(d) for d in dims)


@contextlib.contextmanager
def mc_dropout(model: ModelT) -> Iterator[ModelT]:
    """Sample dropout masks at prediction time, with everything else in eval mode.

    Inside the block, the dropout modules of ``model`` (droplab's
    :class:`StochasticModule` subclasses and torch.nn's ``Dropout``,
    ``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout``) are in
    training mode and every other module (BatchNorm included) is in eval mode.
    On exit every module gets back the ``training`` flag it had, even when the
    block raises. Dropout built into other modules (the ``dropout`` argument of
    ``nn.LSTM``, of attention layers) is not a dropout module and stays off.

    Args:
        model: any ``nn.Module``.

    Yields:
        ``model`` itself.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), Dropout(0.5))
        >>> with mc_dropout(net):
        ...     [m.training for m in net]
        [False, False, True]
        >>> [m.training for m in net]
        [True, True, True]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            "The 'model' argument of mc_dropout must be a torch.nn.Module; "
            f"got an object of type {type(model).__qualname__}."
        )
    saved = [(module, module.training) for module in model.modules()]
    try:
        for module, _ in saved:
            # Set the flag itself: Module.train() recurses, and some overrides
            # of train() do more than flip this module's flag.
            module.training = isinstance(module, DROPOUT_TYPES)
        yield model
    finally:
        for module, training in saved:
            module.training = training


# --- the dropout family (droplab.variants) ---
from droplab.variants.alpha import AlphaDropout as AlphaDropout  # noqa: E402
from droplab.variants.alpha import FeatureAlphaDropout as FeatureAlphaDropout  # noqa: E402
from droplab.variants.channel import Dropout1d as Dropout1d  # noqa: E402
from droplab.variants.channel import Dropout2d as Dropout2d  # noqa: E402
from droplab.variants.channel import Dropout3d as Dropout3d  # noqa: E402
from droplab.variants.concrete import ConcreteDropout as ConcreteDropout  # noqa: E402
from droplab.variants.dropblock import DropBlock2d as DropBlock2d  # noqa: E402
from droplab.variants.dropconnect import DropConnectLinear as DropConnectLinear  # noqa: E402
from droplab.variants.droppath import DropPath as DropPath  # noqa: E402
from droplab.variants.gaussian import GaussianDropout as GaussianDropout  # noqa: E402
from droplab.variants.locked import LockedDropout as LockedDropout  # noqa: E402
from droplab.variants.weight_drop import WeightDropLSTM as WeightDropLSTM  # noqa: E402

__all__ += [
    "AlphaDropout",
    "ConcreteDropout",
    "DropBlock2d",
    "DropConnectLinear",
    "DropPath",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
    "WeightDropLSTM",
]
