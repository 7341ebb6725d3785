"""Weight scaling: a deterministic copy of a model, its dropout folded into weights.

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov,
  "Dropout: a simple way to prevent neural networks from overfitting", JMLR
  15, 2014, section 10 (and Hinton et al. 2012).
  https://jmlr.org/papers/v15/srivastava14a.html

A network trained with ``classic`` dropout (kept units times 1) is evaluated by
multiplying each dropped layer's outputs by ``1 - p``. Since the next layer is
linear, ``W ((1 - p) h) + b = ((1 - p) W) h + b``: the factor can move into the
weights and the dropout layer can go. :func:`weight_scaled` does exactly that on
a copy of the model, which is then a plain deterministic network.

It lists no droplab class: a droplab dropout module says what takes its place
(:meth:`~droplab._core.module.StochasticModule.weight_scaled_form`, which a
variant overrides when its evaluation is not "identity times
``eval_scale(p, scale)``"), and a foreign one is found in the registry
:mod:`droplab.interop.kinds` (which is why this transform lives here, above
the registry, and not in ``_core``).
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

from droplab._core.module import StochasticModule
from droplab._validation import fail
from droplab.interop.kinds import kind_of

__all__ = ["weight_scaled"]

ModelT = TypeVar("ModelT", bound=nn.Module)


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
            if kind_of(child) is not None:  # torch's, timm's, torchvision's
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
