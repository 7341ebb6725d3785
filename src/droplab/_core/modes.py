"""Model transforms by the training flag: Monte-Carlo sampling.

- Monte-Carlo dropout: Gal and Ghahramani, "Dropout as a Bayesian
  approximation", ICML 2016. https://proceedings.mlr.press/v48/gal16.html
  :func:`mc_dropout` switches a model to sampling for Monte-Carlo prediction:
  every module in training mode except those that keep running statistics.

It lists no class of droplab's or torch's: the rule is about the training
flag and running statistics only. (Weight scaling, which must know the
foreign dropout classes, is :mod:`droplab.interop.weight_scaling`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from torch import nn

from droplab._validation import fail

__all__ = ["keeps_running_statistics", "mc_dropout", "sampling_modes"]

ModelT = TypeVar("ModelT", bound=nn.Module)


# Buffers that make a module's training mode update state: such modules stay in
# eval mode under mc_dropout (BatchNorm, InstanceNorm with tracked statistics).
_RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def keeps_running_statistics(module: nn.Module) -> bool:
    """Whether ``module`` updates running statistics in training mode (it holds
    a ``running_mean``, ``running_var`` or ``num_batches_tracked`` buffer that
    is not None): :func:`mc_dropout` leaves such modules in eval mode.

    >>> keeps_running_statistics(nn.BatchNorm1d(3)), keeps_running_statistics(nn.Linear(3, 3))
    (True, False)
    >>> keeps_running_statistics(nn.InstanceNorm1d(3))  # no tracked statistics
    False
    """
    return any(module._buffers.get(name) is not None for name in _RUNNING_STATISTICS)


@contextlib.contextmanager
def mc_dropout(model: ModelT) -> Iterator[ModelT]:
    """Switch ``model`` to sampling for Monte-Carlo prediction, for the block.

    The rule: inside the block every module of ``model`` is in training mode
    except those that keep running statistics
    (:func:`keeps_running_statistics`: BatchNorm, and InstanceNorm with
    ``track_running_stats=True``), which stay in eval mode, so their
    statistics are used and never updated. Training mode is what turns every
    kind of dropout on: dropout modules, droplab's and torch's; dropout that a
    module applies by its own flag (``F.dropout(h, self.p, self.training)``,
    attention modules that pass ``dropout_p=self.p if self.training else 0``
    to their attention function, as in Hugging Face, timm and
    ``nn.MultiheadAttention``); stochastic depth. Anything else that a
    module does differently in training mode happens too; the random draws
    among it are named by :func:`droplab.mc_predict` (it runs under
    :func:`droplab.intercept`). On exit every module gets back the
    ``training`` flag it had, even when the block raises.

    Args:
        model: any ``nn.Module``.

    Yields:
        ``model`` itself.

    Examples:
        >>> from droplab.nn import Dropout
        >>> net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), Dropout(0.5)).eval()
        >>> with mc_dropout(net):
        ...     [m.training for m in net]
        [True, False, True]
        >>> [m.training for m in net]
        [False, False, False]
    """
    if not isinstance(model, nn.Module):
        raise fail(
            "model",
            model,
            "a torch.nn.Module",
            owner="mc_dropout",
            kind=TypeError,
            got=f"an object of type {type(model).__qualname__}",
        )
    with sampling_modes(model.modules()):
        yield model


@contextlib.contextmanager
def sampling_modes(modules: Iterable[nn.Module]) -> Iterator[None]:
    """:func:`mc_dropout`'s rule over ``modules`` (each listed once), for the
    block: for a caller that has walked the model already
    (:func:`droplab.mc_predict`). On exit every module gets its flag back."""
    saved = [(module, module.training) for module in modules]
    try:
        for module, _ in saved:
            # Set the flag itself: Module.train() recurses, and some overrides
            # of train() do more than flip this module's flag.
            module.training = not keeps_running_statistics(module)
        yield
    finally:
        for module, training in saved:
            module.training = training
