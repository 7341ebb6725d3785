"""One place to check user arguments, with one message template.

Every public function of droplab validates its arguments through these helpers,
so that every error names the argument, the value received and what is allowed::

    The 'p' argument of dropout must be a real number in [0, 1]; got 1.5.

ValueError is raised for a value of the right type that is out of range or
unknown; TypeError for a value of the wrong type. Library code never uses
``assert`` on user input.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "check_choice",
    "check_int",
    "check_offset",
    "check_probability",
    "check_seed",
    "check_shared_dims",
    "fail",
]

SEED_LIMIT = 2**64


def _where(name: str, owner: str | None) -> str:
    return f"The {name!r} argument" + (f" of {owner}" if owner else "")


def fail(
    name: str,
    value: Any,
    allowed: str,
    *,
    owner: str | None = None,
    kind: type[Exception] = ValueError,
) -> Exception:
    """Build (not raise) the error for argument ``name``; callers ``raise`` it.

    >>> str(fail("p", 1.5, "a real number in [0, 1]", owner="dropout"))
    "The 'p' argument of dropout must be a real number in [0, 1]; got 1.5."
    """
    return kind(f"{_where(name, owner)} must be {allowed}; got {value!r}.")


def check_probability(p: Any, name: str = "p", *, owner: str | None = None) -> float:
    """Return ``p`` as a float after checking it is a real number in [0, 1].

    Booleans are refused: ``p=True`` is almost always a mistake for ``training``.

    >>> check_probability(0.25)
    0.25
    >>> check_probability(2)
    Traceback (most recent call last):
    ...
    ValueError: The 'p' argument must be a real number in [0, 1]; got 2.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise fail(name, p, "a real number in [0, 1]", owner=owner, kind=TypeError)
    value = float(p)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise fail(name, p, "a real number in [0, 1]", owner=owner)
    return value


def check_int(
    value: Any,
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    owner: str | None = None,
) -> int:
    """Return ``value`` as an int in ``[low, high)`` (either bound may be open)."""
    lo = "-inf" if low is None else str(low)
    hi = "inf" if high is None else str(high)
    allowed = f"an integer in [{lo}, {hi})"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(name, value, allowed, owner=owner, kind=TypeError)
    result = int(value)
    if (low is not None and result < low) or (high is not None and result >= high):
        raise fail(name, value, allowed, owner=owner)
    return result


def check_seed(seed: Any, name: str = "seed", *, owner: str | None = None) -> int:
    """Return ``seed`` as an int in [0, 2**64).

    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    ValueError: The 'seed' argument must be an integer in [0, 18446744073709551616); got -1.
    """
    return check_int(seed, name, low=0, high=SEED_LIMIT, owner=owner)


def check_offset(offset: Any, name: str = "offset", *, owner: str | None = None) -> int:
    """Return ``offset`` as a non-negative int (the element counter of a stream)."""
    return check_int(offset, name, low=0, high=SEED_LIMIT * 4, owner=owner)


def check_choice(
    value: Any, name: str, choices: Sequence[str], *, owner: str | None = None
) -> str:
    """Return ``value`` if it is one of ``choices`` (strings).

    >>> check_choice("inverse", "scale", ("inverted", "classic"))
    Traceback (most recent call last):
    ...
    ValueError: The 'scale' argument must be one of 'inverted', 'classic'; got 'inverse'.
    """
    allowed = "one of " + ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise fail(name, value, allowed, owner=owner, kind=TypeError)
    if value not in choices:
        raise fail(name, value, allowed, owner=owner)
    return value


def check_shared_dims(
    shared_dims: Any, ndim: int, name: str = "shared_dims", *, owner: str | None = None
) -> tuple[int, ...]:
    """Normalise ``shared_dims`` for a tensor of ``ndim`` dimensions.

    Accepts an int or an iterable of ints, negative indices counting from the
    end (as in PyTorch). Returns a sorted tuple of distinct non-negative dims.

    >>> check_shared_dims((-1, 1), 3)
    (1, 2)
    >>> check_shared_dims((3,), 3)
    Traceback (most recent call last):
    ...
    ValueError: The 'shared_dims' argument must be distinct dimensions in [-3, 2] for a 3-d input; got (3,).
    """
    allowed = f"distinct dimensions in [{-ndim}, {ndim - 1}] for a {ndim}-d input"
    if isinstance(shared_dims, numbers.Integral) and not isinstance(shared_dims, bool):
        dims: Iterable[Any] = (shared_dims,)
    elif isinstance(shared_dims, Iterable) and not isinstance(shared_dims, str):
        dims = tuple(shared_dims)
    else:
        raise fail(
            name, shared_dims, "an int or a tuple of ints", owner=owner, kind=TypeError
        )
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise fail(
                name,
                shared_dims,
                "an int or a tuple of ints",
                owner=owner,
                kind=TypeError,
            )
        if not -ndim <= int(d) < ndim:
            raise fail(name, shared_dims, allowed, owner=owner)
        out.append(int(d) % ndim)
    if len(set(out)) != len(out):
        raise fail(name, shared_dims, allowed, owner=owner)
    return tuple(sorted(out))
