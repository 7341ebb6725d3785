"""The base of droplab's dropout modules: hyper-parameters checked once.

In the spirit of torch's ``_DropoutNd``, which validates ``p`` once for six
classes: a :class:`DropoutBase` subclass declares its hyper-parameters as data,

- :attr:`DropoutBase.checks`: name -> check, run on every assignment of that
  attribute (in ``__init__`` and whenever user code sets it later), so a
  module never holds an invalid value and ``forward`` trusts what it reads;
- :attr:`DropoutBase.repr_always` and :attr:`DropoutBase.repr_defaults`: the
  one ``extra_repr`` rule: the arguments torch's module shows (``p``,
  ``inplace``), then the stream (``seed``, ``offset``) if the module owns one,
  then each droplab extra whose value differs from its default.

Each variant adds only what is its own (a ``p`` with another range, a
``block_size``, a ``mode``). ``forward`` reads the checked attributes and calls
the variant's trusted internal form: the argument checks of the public
functions run once, at their own door, never again on a module's call.

The base also declares what :func:`droplab.mc_predict` needs from a module,
which runs several passes at once on a batch replicated along dim 0:
:meth:`DropoutBase.replica_elements` (the stream elements a call draws, where
each row of dim 0 has mask elements of its own) and
:meth:`DropoutBase.replicated` (declare the replicated batch to a module that
draws once per batch). A variant whose mask is not the default overrides them.

Examples:
    >>> class Scaled(DropoutBase):
    ...     repr_defaults = (("scale", "inverted"),)
    ...     def __init__(self, p=0.5, *, scale="inverted", seed=None):
    ...         super().__init__(seed=seed)
    ...         self.p, self.scale = p, scale
    >>> Scaled(0.25, scale="classic", seed=1)
    Scaled(p=0.25, seed=1, offset=0, scale='classic')
    >>> Scaled().p = 1.5
    Traceback (most recent call last):
    ...
    ValueError: The 'p' argument of Scaled must be a real number in [0, 1]; got 1.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from droplab._core.module import StochasticModule
from droplab._validation import (
    check_bool,
    check_choice,
    check_dims_type,
    check_int,
    check_probability,
    check_shared_dims,
)
from droplab.masks import SAMPLERS, mask_shape
from droplab.scaling import SCALES

__all__ = [
    "Check",
    "DropoutBase",
    "Replicable",
    "bool_check",
    "choice_check",
    "int_check",
    "shared_mask_elements",
]

Check = Callable[[Any, str], Any]
"""``check(value, owner) -> value``: the checked value, or raises naming ``owner``."""


def bool_check(name: str) -> Check:
    """A check that ``name`` is True or False."""
    return lambda value, owner: check_bool(value, name, owner=owner)


def choice_check(name: str, choices: tuple[str, ...]) -> Check:
    """A check that ``name`` is one of ``choices``."""
    return lambda value, owner: check_choice(value, name, choices, owner=owner)


def int_check(name: str, low: int) -> Check:
    """A check that ``name`` is an int of at least ``low``."""
    return lambda value, owner: check_int(value, name, low=low, owner=owner)


@runtime_checkable
class Replicable(Protocol):
    """What :func:`droplab.mc_predict` needs from a module: the two methods
    :class:`DropoutBase` declares (``replica_elements``, ``replicated``).
    A module of any class that has them is read through them."""

    def replica_elements(self, x: torch.Tensor) -> int | None: ...

    def replicated(self, groups: int) -> int: ...


def shared_mask_elements(x: torch.Tensor, shared_dims: Any) -> int | None:
    """Elements of the mask of ``x`` with size 1 along ``shared_dims`` (one stream
    element each, row by row), or None when the mask is shared along dim 0.

    >>> x = torch.ones(4, 3, 5)
    >>> shared_mask_elements(x, (2,)), shared_mask_elements(x, 0)
    (12, None)
    """
    shared = check_shared_dims(shared_dims, x.dim())
    if 0 in shared:
        return None
    return math.prod(mask_shape(x.shape, shared))


class DropoutBase(StochasticModule):
    """A :class:`StochasticModule` whose hyper-parameters are checked on assignment.

    Subclasses set their attributes in ``__init__`` (after ``super().__init__``)
    and extend the class-level tables below; see the module docstring.
    """

    checks: ClassVar[Mapping[str, Check]] = MappingProxyType(
        {
            "p": lambda value, owner: check_probability(value, owner=owner),
            "inplace": bool_check("inplace"),
            "scale": choice_check("scale", SCALES),
            "sampler": choice_check("sampler", SAMPLERS),
            "shared_dims": lambda value, owner: check_dims_type(value, owner=owner),
            "batch_first": bool_check("batch_first"),
        }
    )
    """Attribute name -> its check; every assignment of the attribute runs it.
    A subclass extends it with :meth:`with_checks`."""

    repr_always: ClassVar[tuple[str, ...]] = ("p",)
    """Attributes ``extra_repr`` always shows, first (torch's arguments)."""

    repr_defaults: ClassVar[tuple[tuple[str, Any], ...]] = ()
    """``(name, default)`` pairs ``extra_repr`` shows after the stream, each
    when the attribute differs from its default."""

    @classmethod
    def with_checks(cls, **checks: Check) -> Mapping[str, Check]:
        """This class's checks, extended or overridden by ``checks``."""
        return MappingProxyType({**cls.checks, **checks})

    def __setattr__(self, name: str, value: Any) -> None:
        check = type(self).checks.get(name)
        if check is not None:
            value = check(value, type(self).__name__)
        super().__setattr__(name, value)

    def extra_repr(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in self.repr_always]
        stream = self.stream_repr()
        if stream:
            parts.append(stream)
        for name, default in self.repr_defaults:
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)

    # What droplab.mc_predict needs from a module (see the module's docstring).

    def replica_elements(self, x: torch.Tensor) -> int | None:
        """Stream elements a training call on ``x`` draws, one per element of its
        mask in row-major order, where each row of dim 0 has mask elements of
        its own; None where the mask is shared along dim 0, so that batches
        stacked along dim 0 (:func:`droplab.mc_predict`'s passes) would share
        it. The base: ``x``'s shape with size 1 along ``shared_dims``, if the
        module has them. (A module that draws otherwise, two words per element
        say, is found out by ``mc_predict`` after its call.)
        """
        return shared_mask_elements(x, getattr(self, "shared_dims", ()))

    def replicated(self, groups: int) -> int:
        """Declare that inputs hold ``groups`` batches one after the other along
        dim 0 (the replicated batch of :func:`droplab.mc_predict`); returns the
        previous count. The base has nothing to change: each row draws its own
        mask elements, so each batch draws its own part of the stream already.
        A variant that draws once per batch overrides it (``DropPath`` with
        ``mode="batch"``).
        """
        check_int(groups, "groups", low=1, owner=f"{type(self).__name__}.replicated")
        return 1
