"""Swap a model's torch dropout modules for droplab's: :func:`convert`.

A model you did not write (timm, Hugging Face, torchvision) builds its dropout
from ``torch.nn.Dropout`` and its siblings, timm's ``DropPath`` and
torchvision's ``StochasticDepth``. :func:`convert` replaces each, in place, by
droplab's module of the same behaviour and arguments (the kinds and their
arguments are the records of :mod:`droplab.interop.kinds`), so every mask comes
from a ``(seed, offset)`` stream that replays, compiles bit-exact
(docs/compile.md) and saves nothing of the input's size for backward.
:func:`conversion_plan` says what it would do, without doing it: what maps, and
what does not (dropout built into another module, such as the ``dropout``
argument of ``nn.MultiheadAttention`` or ``nn.LSTM``, or a dropout class
droplab does not know). Nothing is left out silently:
:func:`convert` logs every swap and warns about every module it could not map.
:func:`revert` is the way back, for handing a model (or its ``state_dict``)
to code without droplab.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

from torch import nn

from droplab._core.module import StochasticModule
from droplab._validation import check_seed, fail
from droplab.interop.kinds import droplab_back, kind_of
from droplab.rng import path_seed

__all__ = [
    "ConversionPlan",
    "conversion_plan",
    "convert",
    "revert",
]

logger = logging.getLogger("droplab")


def _built_in(module: nn.Module) -> str | None:
    """Why ``module`` applies dropout that convert cannot swap, or None."""
    if isinstance(module, nn.MultiheadAttention) and module.dropout > 0.0:
        return (
            f"MultiheadAttention applies dropout={module.dropout} inside its forward; "
            "droplab.intercept and mc_predict draw it from droplab's stream"
        )
    if isinstance(module, nn.RNNBase) and module.dropout > 0.0:
        return (
            f"{type(module).__name__} applies dropout={module.dropout} inside its "
            "forward; the fused RNN kernel draws it, out of droplab's reach "
            "(droplab.intercept warns when it runs)"
        )
    return None


@dataclass(frozen=True)
class ConversionPlan:
    """What :func:`convert` swaps and what it cannot map, by qualified name.

    Attributes:
        swaps: ``(name, torch class, droplab module)`` for each swap, in
            ``named_modules`` order; the droplab modules are new and unseeded.
        unmapped: ``(name, reason)`` for each module that applies dropout that
            :func:`convert` cannot reach.
    """

    swaps: list[tuple[str, str, StochasticModule]] = field(default_factory=list)
    unmapped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line per swap and per unmapped module."""
        lines = [
            f"{name}: {cls} -> droplab {type(new).__name__}({new.extra_repr()})"
            for name, cls, new in self.swaps
        ]
        lines += [f"{name}: not converted ({reason})" for name, reason in self.unmapped]
        return "\n".join(lines)


def _swap(modules: dict[str, nn.Module], name: str, new: nn.Module) -> None:
    """Put ``new`` in the place of submodule ``name``, with its ``training`` flag."""
    new.train(modules[name].training)
    parent_name, _, child = name.rpartition(".")
    setattr(modules[parent_name], child, new)


def conversion_plan(model: nn.Module) -> ConversionPlan:
    """What :func:`convert` would do to ``model``, without changing it.

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1),
        ...                     nn.MultiheadAttention(4, 2, dropout=0.2))
        >>> print(conversion_plan(net).summary())
        1: Dropout -> droplab Dropout(p=0.1, inplace=False)
        2: not converted (MultiheadAttention applies dropout=0.2 inside its forward; droplab.intercept and mc_predict draw it from droplab's stream)
    """
    if not isinstance(model, nn.Module):
        raise fail("model", model, "a torch.nn.Module", owner="convert", kind=TypeError)
    plan = ConversionPlan()
    for name, module in model.named_modules():
        where = name or "<root>"
        kind = kind_of(module)
        if kind is not None:
            new = kind.to_droplab(module)
            new.__dict__["converted_from"] = (
                kind.foreign
            )  # the record revert takes back
            plan.swaps.append((where, type(module).__name__, new))
            continue
        if isinstance(module, StochasticModule):
            continue
        reason = _built_in(module)
        if reason is None and (
            isinstance(module, nn.modules.dropout._DropoutNd)
            or ("drop" in type(module).__name__.lower() and not list(module.children()))
        ):
            reason = f"{type(module).__name__} is not a class droplab maps"
        if reason is not None:
            plan.unmapped.append((where, reason))
    return plan


def convert(model: nn.Module, *, seed: int | None = None) -> nn.Module:
    """Swap, in place, every torch dropout module of ``model`` for droplab's.

    ``nn.Dropout``, ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout``,
    ``nn.FeatureAlphaDropout`` (exactly these classes), timm's ``DropPath``
    and torchvision's ``StochasticDepth`` become :class:`droplab.nn.Dropout`,
    ``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout`` and
    ``DropPath`` (with torchvision's ``mode``) with the same rate, ``inplace``
    and ``training`` flag (the table: :mod:`droplab.interop.kinds`). Each swap is logged (logger ``"droplab"``, INFO); a
    module that applies dropout and cannot be swapped is named in one
    ``UserWarning`` (see :func:`conversion_plan`).

    Args:
        model: any ``nn.Module``; changed in place.
        seed: None keeps torch's behaviour (a fresh seed per call from torch's
            default generator, so ``torch.manual_seed`` reproduces a run); an
            int in ``[0, 2**64)`` gives the swapped module named ``name`` (in
            ``model.named_modules()``) the seed
            ``droplab.rng.path_seed(seed, name)``, so the whole model replays
            from one number, and a pipeline stage that keeps the model's
            module names draws the masks those modules draw in the whole
            model.

    Returns:
        ``model`` itself.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))
        >>> convert(net, seed=0)[1]
        Dropout(p=0.5, inplace=False, seed=3633042681944282055, offset=0)
    """
    plan = conversion_plan(model)
    if seed is not None:
        seed = check_seed(seed, owner="convert")
    modules = dict(model.named_modules())
    for index, (name, _, new) in enumerate(plan.swaps):
        if name == "<root>":
            raise fail(
                "model",
                f"a bare {type(model).__name__}",
                "a model that holds its dropout modules (convert swaps children "
                "in place; build droplab's module directly)",
                owner="convert",
            )
        if seed is not None:
            new.seed = path_seed(seed, name)
        _swap(modules, name, new)
        logger.info("droplab.convert: %s", plan.summary().splitlines()[index])
    if plan.unmapped:
        listing = "; ".join(f"{name}: {reason}" for name, reason in plan.unmapped)
        warnings.warn(
            f"droplab.convert left {len(plan.unmapped)} dropout(s) as they are: "
            f"{listing}",
            UserWarning,
            stacklevel=2,
        )
    return model


def revert(model: nn.Module) -> nn.Module:
    """Swap, in place, droplab's dropout modules back for torch's: :func:`convert` undone.

    :class:`droplab.nn.Dropout`, ``Dropout1d/2d/3d``, ``AlphaDropout`` and
    ``FeatureAlphaDropout`` with torch's behaviour (the default ``scale``,
    ``sampler`` and ``shared_dims``) become ``torch.nn``'s class with the same
    ``p``, ``inplace`` and ``training`` flag; ``DropPath`` becomes what
    :func:`convert` made it from (torchvision's ``StochasticDepth`` or timm's
    ``DropPath``), else timm's when timm is installed, else torchvision's. The streams are dropped: afterwards the model's
    ``state_dict`` is the one the torch model writes, for handing weights to
    code without droplab (``droplab.revert(copy.deepcopy(model)).state_dict()``
    keeps the droplab model as it is). A droplab module with no torch
    equivalent is left in place and named in one ``UserWarning``; each swap
    is logged (logger ``"droplab"``, INFO).

    Returns:
        ``model`` itself.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))
        >>> sorted(convert(net, seed=0).state_dict())
        ['0.bias', '0.weight', '1._extra_state', '2.bias', '2.weight']
        >>> sorted(revert(net).state_dict()), net[1]
        (['0.bias', '0.weight', '2.bias', '2.weight'], Dropout(p=0.5, inplace=False))
    """
    if not isinstance(model, nn.Module):
        raise fail("model", model, "a torch.nn.Module", owner="revert", kind=TypeError)
    if isinstance(model, StochasticModule):
        raise fail(
            "model",
            f"a bare {type(model).__name__}",
            "a model that holds its dropout modules (revert swaps children in place)",
            owner="revert",
        )
    left: list[str] = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if not isinstance(module, StochasticModule):
            continue
        form = droplab_back(module)
        if isinstance(form, str):
            left.append(f"{name}: {form}")
            continue
        _swap(modules, name, form)
        logger.info(
            "droplab.revert: %s: droplab %s -> %r", name, type(module).__name__, form
        )
    if left:
        warnings.warn(
            f"droplab.revert left {len(left)} droplab module(s) in place: "
            + "; ".join(left),
            UserWarning,
            stacklevel=2,
        )
    return model
