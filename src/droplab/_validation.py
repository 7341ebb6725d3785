"""One place to check user arguments, with one message template.

Every public function of droplab validates its arguments through these helpers,
so that every error names the argument, the value received and what is allowed::

    The 'p' argument of dropout must be a real number in [0, 1]; got 1.5.

ValueError is raised for a value of the right type that is out of range or
unknown; TypeError for a value of the wrong type. Library code never uses
``assert`` on user input.

Where PyTorch raises a RuntimeError for the same input (a tensor of the wrong
rank or dtype given to a dropout), droplab's error is also a RuntimeError:
:class:`InputRankError` is a ValueError and a RuntimeError,
:class:`InputDtypeError` a TypeError and a RuntimeError, so code written
against torch's behaviour (``except RuntimeError``) catches droplab's too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "FLOAT_DTYPES",
    "MASK64",
    "OFFSET_LIMIT",
    "SEED_LIMIT",
    "InputDtypeError",
    "InputRankError",
    "check_bool",
    "check_choice",
    "check_dims_type",
    "check_floating_tensor",
    "check_int",
    "check_offset",
    "check_probability",
    "check_seed",
    "check_shared_dims",
    "fail",
    "fail_ndim",
]

# Seeds are in [0, SEED_LIMIT); a stream has 4 * 2**64 elements, so offsets are in
# [0, OFFSET_LIMIT). The stream contract itself is documented in droplab.rng.
SEED_LIMIT = 2**64
OFFSET_LIMIT = 4 * SEED_LIMIT
# Keys and stream positions wrap modulo 2**64: ``value & MASK64``.
MASK64 = SEED_LIMIT - 1

# The dtypes every backend supports; anything else is refused.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DTYPE_NAMES = "float16, bfloat16, float32 or float64"


class InputRankError(ValueError, RuntimeError):
    """A tensor with a number of dimensions the function does not take.

    A ValueError (droplab's rule for a bad value) and a RuntimeError (what
    ``torch.nn.functional.dropout1d`` and its siblings raise for the same input).

    >>> issubclass(InputRankError, ValueError), issubclass(InputRankError, RuntimeError)
    (True, True)
    """


class InputDtypeError(TypeError, RuntimeError):
    """A tensor of a dtype droplab does not take (an integer or complex tensor).

    A TypeError (droplab's rule for a wrong type) and a RuntimeError (torch's
    dropout raises RuntimeError, or its subclass NotImplementedError, for the
    same input).
    """


# Public as droplab.InputRankError and droplab.InputDtypeError: name them so.
InputRankError.__module__ = InputDtypeError.__module__ = "droplab"


def _where(name: str, owner: str | None, what: str = "argument") -> str:
    return f"The {name!r} {what}" + (f" of {owner}" if owner else "")


def fail(
    name: str,
    value: Any,
    allowed: str,
    *,
    owner: str | None = None,
    kind: type[Exception] = ValueError,
    got: str | None = None,
    what: str = "argument",
) -> Exception:
    """Build (not raise) the error for argument ``name``; callers ``raise`` it.

    ``got`` says what was received in words where the value's repr would not
    help (a tensor, an object of some class); ``what`` names what ``name`` is
    when it is not an argument (a config's field).

    >>> str(fail("p", 1.5, "a real number in [0, 1]", owner="dropout"))
    "The 'p' argument of dropout must be a real number in [0, 1]; got 1.5."
    >>> str(fail("model", [], "a torch.nn.Module", owner="mc_dropout",
    ...          got="an object of type list"))
    "The 'model' argument of mc_dropout must be a torch.nn.Module; got an object of type list."
    >>> str(fail("masks", "all", "'blog' or 'sampled'", owner="the gradients Config",
    ...          what="field"))
    "The 'masks' field of the gradients Config must be 'blog' or 'sampled'; got 'all'."
    """
    received = repr(value) if got is None else got
    return kind(f"{_where(name, owner, what)} must be {allowed}; got {received}.")


def fail_ndim(
    ndim: int, allowed: str, *, owner: str, name: str = "x", note: str = ""
) -> InputRankError:
    """Build the error for a tensor of the wrong number of dimensions.

    An :class:`InputRankError`: a ValueError that is also a RuntimeError.

    >>> str(fail_ndim(3, "be a 4-d (N, C, H, W) tensor", owner="drop_block2d"))
    "The 'x' argument of drop_block2d must be a 4-d (N, C, H, W) tensor; got a 3-d tensor."
    """
    return InputRankError(
        f"{_where(name, owner)} must {allowed}; got a {ndim}-d tensor."
        + (f" {note}" if note else "")
    )


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
    return check_int(offset, name, low=0, high=OFFSET_LIMIT, owner=owner)


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


def check_dims_type(
    shared_dims: Any, name: str = "shared_dims", *, owner: str | None = None
) -> tuple[int, ...]:
    """A tuple of distinct ints; their range is checked against each input's ndim.

    What a module stores at construction, before it sees an input (whose ndim
    :func:`check_shared_dims` then checks the dims against).

    >>> check_dims_type(2), check_dims_type([2, 3])
    ((2,), (2, 3))
    """
    allowed = "an int or a tuple of distinct ints"
    if isinstance(shared_dims, numbers.Integral) and not isinstance(shared_dims, bool):
        dims: tuple[Any, ...] = (shared_dims,)
    elif isinstance(shared_dims, Iterable) and not isinstance(shared_dims, str):
        dims = tuple(shared_dims)
    else:
        raise fail(name, shared_dims, allowed, owner=owner, kind=TypeError)
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in dims):
        raise fail(name, shared_dims, allowed, owner=owner, kind=TypeError)
    if len(set(dims)) != len(dims):
        raise fail(name, shared_dims, allowed, owner=owner)
    return tuple(int(d) for d in dims)


def check_floating_tensor(x: Any, name: str = "x", *, owner: str) -> torch.Tensor:
    """Return ``x`` if it is a torch tensor of a dtype droplab supports.

    Raises otherwise, naming the argument, what was received and what is
    allowed (the template of this module): :class:`InputDtypeError` (a
    TypeError and a RuntimeError) for a tensor of another dtype, TypeError for
    anything that is not a tensor and for a sparse or nested tensor.

    >>> check_floating_tensor(torch.arange(3), owner="dropout")
    Traceback (most recent call last):
    ...
    droplab.InputDtypeError: The 'x' argument of dropout must be a torch.Tensor of dtype float16, bfloat16, float32 or float64; got a tensor of dtype torch.int64.
    """
    if isinstance(x, torch.Tensor) and x.dtype in FLOAT_DTYPES:
        if x.layout is torch.strided and not x.is_nested:
            return x
        # Sparse and nested tensors: every op refuses them alike, rather than
        # some returning a sparse result and others failing deep in torch.
        kind_of = "nested" if x.is_nested else f"{x.layout}".removeprefix("torch.")
        fix = ".to_padded_tensor(0.0)" if x.is_nested else ".to_dense()"
        raise fail(
            name,
            x,
            "a dense (strided) torch.Tensor",
            owner=owner,
            kind=TypeError,
            got=f"a {kind_of} tensor (convert it with {fix} first)",
        )
    got = (
        f"a tensor of dtype {x.dtype}"
        if isinstance(x, torch.Tensor)
        else f"an object of type {type(x).__qualname__}"
    )
    kind = InputDtypeError if isinstance(x, torch.Tensor) else TypeError
    raise fail(
        name,
        x,
        f"a torch.Tensor of dtype {_DTYPE_NAMES}",
        owner=owner,
        kind=kind,
        got=got,
    )


def check_bool(value: Any, name: str, *, owner: str) -> bool:
    """Return ``value`` if it is a bool; TypeError otherwise (``1`` is refused too)."""
    if not isinstance(value, bool):
        raise fail(name, value, "True or False", owner=owner, kind=TypeError)
    return value
