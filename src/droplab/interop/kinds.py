"""The one registry of dropout kinds that droplab meets in other people's models.

A :class:`Kind` is one record: the foreign module (torch's, timm's or
torchvision's) and the functions it is called through, how its rate and mode
are read, the droplab module of the same behaviour, and the way back.
:func:`droplab.convert`, :func:`droplab.revert`, :func:`droplab.conversion_plan`,
:func:`droplab.intercept` and :func:`droplab.mc_predict` all read :data:`KINDS`;
adding a kind is adding one record here.

Foreign classes are recognised by their qualified name (``timm.layers.DropPath``
is any class named ``DropPath`` defined in a ``timm`` module), so timm and
torchvision need not be installed, or imported, for droplab to work.

How a kind's draw is reached without conversion (``reach``):

- ``"function"``: its forward calls a torch function (``F.dropout`` and its
  siblings) that :func:`droplab.intercept` catches;
- ``"bernoulli"``: its forward draws with ``Tensor.bernoulli_`` inside a known
  Python function (timm's ``drop_path``, torchvision's ``stochastic_depth``):
  under ``intercept`` that draw is filled from droplab's stream (the mask is
  droplab's, the arithmetic around it the library's own); under
  ``mc_predict`` the module's forward is the one of its droplab twin, so the
  result equals the converted model's bit for bit.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from droplab._core.dropout import Dropout, dropout
from droplab._core.module import StochasticModule
from droplab.variants import (
    AlphaDropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    FeatureAlphaDropout,
    alpha_dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
)
from droplab.variants.channel import channel_elements

__all__ = [
    "DROPOUT_TYPES",
    "KINDS",
    "TORCH_DROPOUTS",
    "FunctionRule",
    "Kind",
    "function_rules",
    "kind_of",
    "kinds_table",
    "random_site",
]


@dataclass(frozen=True)
class FunctionRule:
    """A torch function that :func:`droplab.intercept` computes with droplab's.

    Attributes:
        name: its qualified name, as in the docs.
        function: the function object the mode sees.
        ours: droplab's function, called as ``ours(x, p, True, seed=...,
            offset=..., inplace=...)``.
        training_default: torch's default for its ``training`` argument.
        elements: the stream elements a call on a tensor of this shape draws.
    """

    name: str
    function: Any
    ours: Callable[..., torch.Tensor]
    training_default: bool
    elements: Callable[[torch.Size], int]


@dataclass(frozen=True)
class Kind:
    """One dropout kind: a foreign module and its droplab twin.

    Attributes:
        foreign: the foreign class's qualified name (``"torch.nn.Dropout"``).
        droplab: the droplab class ``convert`` puts in its place.
        reach: how its draw is reached without conversion (see the module's
            docstring): ``"function"`` or ``"bernoulli"``.
        to_droplab: the droplab module of the same behaviour (unseeded).
        to_foreign: the foreign module equal to a droplab module but for the
            stream, or a string saying why there is none.
        functions: the torch functions its forward calls, routed by
            ``intercept``.
        draw_site: for ``reach="bernoulli"``: ``(module, function, rate)``,
            the Python function whose ``bernoulli_`` is the draw and the name
            of its local variable that holds the drop rate.
        rate: what the docs table says about the arguments read.
    """

    foreign: str
    droplab: type[StochasticModule]
    reach: str
    to_droplab: Callable[[nn.Module], StochasticModule]
    to_foreign: Callable[[StochasticModule], nn.Module | str]
    functions: tuple[FunctionRule, ...] = ()
    draw_site: tuple[str, str, str] | None = None
    rate: str = "p, inplace"

    @property
    def library(self) -> str:
        return self.foreign.split(".")[0]

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` is of this kind (its exact class: a subclass may
        have a forward of its own, and is reported rather than swapped)."""
        cls = type(module)
        name = self.foreign.rpartition(".")[2]
        if self.library == "torch":
            return cls is getattr(nn, name, None)
        return cls.__name__ == name and cls.__module__.split(".")[0] == self.library

    def code(self) -> CodeType | None:
        """The code object of ``draw_site``, if its library is imported."""
        if self.draw_site is None:
            return None
        module = sys.modules.get(self.draw_site[0])
        function = getattr(module, self.draw_site[1], None)
        return getattr(function, "__code__", None)


def _channels(name: str) -> Callable[[torch.Size], int]:
    # the stream elements of droplab's channel variant, which the call becomes
    return lambda shape: channel_elements(tuple(shape), name)


def _torch_back(cls: type[nn.Module]) -> Callable[[StochasticModule], nn.Module | str]:
    def back(module: StochasticModule) -> nn.Module | str:
        changed = [
            f"{name}={getattr(module, name)!r}"
            for name, default in (
                ("scale", "inverted"),
                ("sampler", "bernoulli"),
                ("shared_dims", ()),
            )
            if getattr(module, name, default) != default
        ]
        if changed:
            return f"{type(module).__name__} with {', '.join(changed)} behaves unlike torch's"
        return cast(Any, cls)(module.p, module.inplace)

    return back


def _torch_kind(
    cls: type[nn.Module],
    ours_cls: type[StochasticModule],
    rules: tuple[FunctionRule, ...],
) -> Kind:
    return Kind(
        foreign=f"torch.nn.{cls.__name__}",
        droplab=ours_cls,
        reach="function",
        to_droplab=lambda m: cast(Any, ours_cls)(m.p, m.inplace),
        to_foreign=_torch_back(cls),
        functions=rules,
    )


def _timm_to_droplab(module: nn.Module) -> StochasticModule:
    # timm.layers.DropPath(drop_prob, scale_by_keep): inverted scaling, or none.
    scale = "inverted" if getattr(module, "scale_by_keep", True) else "none"
    return DropPath(float(getattr(module, "drop_prob", 0.0)), scale=scale)


def _timm_back(module: StochasticModule) -> nn.Module | str:
    scale = getattr(module, "scale", "inverted")
    if module.sampler != "bernoulli" or scale not in ("inverted", "none"):
        return (
            f"DropPath with sampler={module.sampler!r}, scale={scale!r} "
            "has no timm form"
        )
    if module.mode != "row":
        return "DropPath with mode='batch' has no timm form"
    try:
        from timm.layers import DropPath as TimmDropPath
    except ImportError:
        return "DropPath maps back to timm's DropPath, and timm is not installed"
    return TimmDropPath(module.p, scale_by_keep=scale == "inverted")


def _torchvision_to_droplab(module: nn.Module) -> StochasticModule:
    # torchvision.ops.StochasticDepth(p, mode): inverted scaling, row or batch.
    foreign = cast(Any, module)
    return DropPath(float(foreign.p), mode=str(foreign.mode))


def _torchvision_back(module: StochasticModule) -> nn.Module | str:
    if module.sampler != "bernoulli" or module.scale != "inverted":
        return (
            f"DropPath with sampler={module.sampler!r}, "
            f"scale={module.scale!r} has no torchvision form"
        )
    try:
        from torchvision.ops import StochasticDepth
    except ImportError:
        return "DropPath maps back to torchvision's StochasticDepth, and torchvision is not installed"
    return StochasticDepth(module.p, module.mode)


_DROPOUT_RULES = (
    FunctionRule("torch.nn.functional.dropout", F.dropout, dropout, True, math.prod),
    FunctionRule("torch.dropout", torch.dropout, dropout, True, math.prod),
)

# The registry: one record per kind, in the order convert tries them.
KINDS: tuple[Kind, ...] = (
    _torch_kind(nn.Dropout, Dropout, _DROPOUT_RULES),
    _torch_kind(
        nn.Dropout1d,
        Dropout1d,
        (
            FunctionRule(
                "torch.nn.functional.dropout1d",
                F.dropout1d,
                dropout1d,
                True,
                _channels("dropout1d"),
            ),
        ),
    ),
    _torch_kind(
        nn.Dropout2d,
        Dropout2d,
        (
            FunctionRule(
                "torch.nn.functional.dropout2d",
                F.dropout2d,
                dropout2d,
                True,
                _channels("dropout2d"),
            ),
        ),
    ),
    _torch_kind(
        nn.Dropout3d,
        Dropout3d,
        (
            FunctionRule(
                "torch.nn.functional.dropout3d",
                F.dropout3d,
                dropout3d,
                True,
                _channels("dropout3d"),
            ),
        ),
    ),
    _torch_kind(
        nn.AlphaDropout,
        AlphaDropout,
        (
            FunctionRule(
                "torch.nn.functional.alpha_dropout",
                F.alpha_dropout,
                alpha_dropout,
                False,
                math.prod,
            ),
        ),
    ),
    _torch_kind(
        nn.FeatureAlphaDropout,
        FeatureAlphaDropout,
        (
            FunctionRule(
                "torch.nn.functional.feature_alpha_dropout",
                F.feature_alpha_dropout,
                feature_alpha_dropout,
                False,
                lambda s: s[0] * s[1],
            ),
        ),
    ),
    Kind(
        foreign="timm.layers.DropPath",
        droplab=DropPath,
        reach="bernoulli",
        to_droplab=_timm_to_droplab,
        to_foreign=_timm_back,
        draw_site=("timm.layers.drop", "drop_path", "drop_prob"),
        rate="drop_prob, scale_by_keep",
    ),
    Kind(
        foreign="torchvision.ops.StochasticDepth",
        droplab=DropPath,
        reach="bernoulli",
        to_droplab=_torchvision_to_droplab,
        to_foreign=_torchvision_back,
        draw_site=("torchvision.ops.stochastic_depth", "stochastic_depth", "p"),
        rate='p, mode ("row" or "batch")',
    ),
)


# torch.nn's dropout classes (identity at evaluation), and those with droplab's
# base class: the modules a Sequential's dropout sites are (ensemble).
TORCH_DROPOUTS: tuple[type[nn.Module], ...] = tuple(
    getattr(nn, kind.foreign.rpartition(".")[2])
    for kind in KINDS
    if kind.library == "torch"
)
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (*TORCH_DROPOUTS, StochasticModule)


def kind_of(module: nn.Module) -> Kind | None:
    """The record of ``module``'s kind, or None."""
    for kind in KINDS:
        if kind.matches(module):
            return kind
    return None


def function_rules() -> dict[Any, FunctionRule]:
    """Every function rule of the registry, by function object."""
    return {rule.function: rule for kind in KINDS for rule in kind.functions}


def random_site(code: CodeType) -> tuple[Kind, str] | None:
    """The kind whose ``draw_site`` is ``code``, with its rate variable's name."""
    for kind in KINDS:
        if kind.draw_site is not None and kind.code() is code:
            return kind, kind.draw_site[2]
    return None


def droplab_back(module: StochasticModule) -> nn.Module | str:
    """The foreign module equal to droplab's ``module`` but for the stream.

    The kind ``convert`` made it from, where it did (``converted_from``);
    else the first kind whose droplab class is exactly ``module``'s.
    """
    origin = getattr(module, "converted_from", None)
    reasons = []
    for kind in KINDS:
        if type(module) is not kind.droplab:
            continue
        if origin is not None and kind.foreign != origin:
            continue
        form = kind.to_foreign(module)
        if not isinstance(form, str):
            return form
        reasons.append(form)
    return (
        reasons[0] if reasons else f"{type(module).__name__} has no torch counterpart"
    )


def kinds_table() -> str:
    """The registry as a Markdown table (docs/mc-any-model.md includes it)."""
    rows = [
        "| foreign module | reads | droplab module | functions intercepted | reached without conversion by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind in KINDS:
        functions = ", ".join(f"`{rule.name}`" for rule in kind.functions)
        if kind.draw_site is not None:
            module, function, _ = kind.draw_site
            functions = f"`{module}.{function}` (its `bernoulli_`)"
        reach = (
            "the functions it calls"
            if kind.reach == "function"
            else "its `bernoulli_` draw (intercept); its droplab twin's forward (mc_predict)"
        )
        rows.append(
            f"| `{kind.foreign}` | {kind.rate} | `droplab.nn.{kind.droplab.__name__}` "
            f"| {functions} | {reach} |"
        )
    return "\n".join(rows)
