"""Model transforms: Monte-Carlo sampling and weight scaling, by asking each module.

- Monte-Carlo dropout: Gal and Ghahramani, "Dropout as a Bayesian
  approximation", ICML 2016. https://proceedings.mlr.press/v48/gal16.html
  :func:`mc_dropout` switches a model to sampling for Monte-Carlo prediction:
  every module in training mode except those that keep running statistics.
- Weight scaling (:func:`weight_scaled`); paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014,
  section 10 (and Hinton et al. 2012). https://jmlr.org/papers/v15/srivastava14a.html

A network trained with ``classic`` dropout (kept units times 1) is evaluated by
multiplying each dropped layer's outputs by ``1 - p``. Since the next layer is
linear, ``W ((1 - p) h) + b = ((1 - p) W) h + b``: the factor can move into the
weights and the dropout layer can go. :func:`weight_scaled` does exactly that on
a copy of the model, which is then a plain deterministic network.

Neither transform lists droplab's classes: a dropout module is a
:class:`~droplab._core.module.StochasticModule` (or a foreign module of the
registry :mod:`droplab.interop.kinds`), and what weight scaling does with it is its own
:meth:`~droplab._core.module.StochasticModule.weight_scaled_form`. A new
variant overrides that method if its evaluation is not "identity times
``eval_scale(p, scale)``".
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import nn

from droplab._core.module import StochasticModule
from droplab._validation import fail

__all__ = [
    "keeps_running_statistics",
    "mc_dropout",
    "weight_scaled",
]

ModelT = TypeVar("ModelT", bound=nn.Module)


def _is_foreign_dropout(module: nn.Module) -> bool:
    # The registry sits above _core (it maps torch's classes to droplab's):
    # imported on use.
    from droplab.interop.kinds import kind_of

    return kind_of(module) is not None


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


# Layers the factor can move into (linear and without a bias on the input side).
_FOLD_INTO = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Layers that commute with a scalar factor and may sit in between.
_PASS_THROUGH = (nn.Identity, nn.Flatten, nn.Unflatten)


def _first_layer(modules: list[nn.Module]) -> nn.Module | None:
    """The first module that is not a pass-through, entering nested Sequentials."""
    for module in modules:
        if isinstance(module, _PASS_THROUGH):
            continue
        if isinstance(module, nn.Sequential):
            inner = _first_layer(list(module))
            if inner is None:  # an empty or pass-through-only Sequential
                continue
            return inner
        return module
    return None


def _fold(container: nn.Sequential, index: int, factor: float, where: str) -> None:
    target = _first_layer(list(container)[index + 1 :])
    if isinstance(target, _FOLD_INTO):
        with torch.no_grad():
            target.weight.mul_(factor)
        return
    raise ValueError(
        f"weight_scaled cannot fold the 'classic' dropout {where!r}: the factor "
        f"1 - p needs a Linear or Conv layer right after it (only Identity/Flatten "
        f"in between) in the same nn.Sequential."
    )


def weight_scaled(model: ModelT) -> ModelT:
    """A deterministic copy of ``model`` with its dropout folded into weights.

    In the copy (the original is untouched), every dropout layer is replaced by
    ``nn.Identity``:

    - droplab dropouts with the ``classic`` rule (evaluation factor ``1 - p``)
      first multiply the weight of the next ``Linear`` / ``Conv`` layer of their
      ``nn.Sequential`` by ``1 - p`` (the bias is unchanged); only ``Identity``,
      ``Flatten`` and ``Unflatten`` may sit in between, and the next layer may be
      the first of a nested ``nn.Sequential``;
    - every other dropout (droplab's whose evaluation is the identity, and
      torch.nn's ``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
      ``FeatureAlphaDropout``, timm's ``DropPath`` and torchvision's
      ``StochasticDepth``: the registry's kinds) is simply removed;
    - a :class:`~droplab.variants.concrete.ConcreteDropout` is replaced by the
      layer it wraps;
    - in general, each droplab module says what takes its place
      (:meth:`~droplab._core.module.StochasticModule.weight_scaled_form`).

    The copy is in eval mode, and equals ``model.eval()`` on every input (up to
    float rounding; exactly when ``1 - p`` is a power of two).

    Raises:
        ValueError: a ``classic`` dropout is not followed by a Linear or Conv
            layer in an ``nn.Sequential``, or a ``DropConnectLinear`` uses a
            random inference (``"gaussian"`` or ``"mc"``).

    Examples:
        >>> from droplab.nn import Dropout
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), Dropout(0.5, scale="classic"),
        ...                     nn.Linear(4, 2))
        >>> folded = weight_scaled(net)
        >>> folded
        Sequential(
          (0): Linear(in_features=3, out_features=4, bias=True)
          (1): ReLU()
          (2): Identity()
          (3): Linear(in_features=4, out_features=2, bias=True)
        )
        >>> x = torch.randn(5, 3)
        >>> bool(torch.equal(folded(x), net.eval()(x)))
        True
    """
    if not isinstance(model, nn.Module):
        raise fail(
            "model", model, "a torch.nn.Module", owner="weight_scaled", kind=TypeError
        )
    result = copy.deepcopy(model)
    for parent_name, parent in list(result.named_modules()):
        for index, (name, child) in enumerate(list(parent.named_children())):
            where = f"{parent_name}.{name}" if parent_name else name
            replacement: nn.Module
            if _is_foreign_dropout(child):
                replacement, factor = nn.Identity(), 1.0
            elif isinstance(child, StochasticModule):
                replacement, factor = child.weight_scaled_form(where)
            else:
                continue
            if factor != 1.0:
                if not isinstance(parent, nn.Sequential):
                    raise ValueError(
                        f"weight_scaled cannot fold the 'classic' dropout {where!r}: "
                        f"it is not inside an nn.Sequential, so the layer after it "
                        f"is unknown."
                    )
                _fold(parent, index, factor, where)
            if replacement is not child:
                setattr(parent, name, replacement)
    return result.eval()


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
        raise TypeError(
            "The 'model' argument of mc_dropout must be a torch.nn.Module; "
            f"got an object of type {type(model).__qualname__}."
        )
    saved = [(module, module.training) for module in model.modules()]
    try:
        for module, _ in saved:
            # Set the flag itself: Module.train() recurses, and some overrides
            # of train() do more than flip this module's flag.
            module.training = not keeps_running_statistics(module)
        yield model
    finally:
        for module, training in saved:
            module.training = training
