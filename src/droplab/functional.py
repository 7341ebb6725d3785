"""Dropout for torch tensors: seeded, the same mask on every backend, no saved mask.

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014.
  https://jmlr.org/papers/v15/srivastava14a.html

:func:`dropout` multiplies the kept units by a training scale and zeroes the
others, with the mask of :mod:`droplab.masks` drawn from ``(seed, offset)``. Its
backward pass draws the same mask again, so unlike ``torch.nn.functional.dropout``
it keeps nothing of the input's size for backward (no mask, no input): only the
handful of Python numbers that name the mask.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from droplab import _backend
from droplab._validation import (
    SEED_LIMIT,
    check_choice,
    check_offset,
    check_probability,
    check_seed,
    check_shared_dims,
    fail,
)
from droplab.kernels import cpp
from droplab.masks import SAMPLERS, keep_threshold
from droplab.scaling import SCALES, eval_scale, train_scale

__all__ = ["check_bool", "check_floating_tensor", "dropout"]

_DTYPE_NAMES = "float16, bfloat16, float32 or float64"

# The upper bound (exclusive) of check_offset: a stream has 4 * 2**64 elements.
_OFFSET_LIMIT = 4 * SEED_LIMIT


def check_floating_tensor(x: Any, name: str = "x", *, owner: str) -> torch.Tensor:
    """Return ``x`` if it is a torch tensor of a dtype droplab supports.

    Raises TypeError otherwise, naming the argument, what was received and what
    is allowed (the template of :mod:`droplab._validation`).

    >>> check_floating_tensor(torch.arange(3), owner="dropout")
    Traceback (most recent call last):
    ...
    TypeError: The 'x' argument of dropout must be a torch.Tensor of dtype float16, bfloat16, float32 or float64; got a tensor of dtype torch.int64.
    """
    if isinstance(x, torch.Tensor) and x.dtype in _backend.FLOAT_DTYPES:
        return x
    got = (
        f"a tensor of dtype {x.dtype}"
        if isinstance(x, torch.Tensor)
        else f"an object of type {type(x).__qualname__}"
    )
    raise TypeError(
        f"The {name!r} argument of {owner} must be a torch.Tensor of dtype "
        f"{_DTYPE_NAMES}; got {got}."
    )


def check_bool(value: Any, name: str, *, owner: str) -> bool:
    """Return ``value`` if it is a bool; TypeError otherwise (``1`` is refused too)."""
    if not isinstance(value, bool):
        raise fail(name, value, "True or False", owner=owner, kind=TypeError)
    return value


class _MaskedScale(torch.autograd.Function):
    """``y = x * mask * scale``; its backward is the same op on the gradient.

    Only Python numbers are kept on ``ctx``: the mask is redrawn from
    ``(seed, offset)`` in backward. When the backward itself is recorded
    (``create_graph=True``) it calls this Function again, so the double
    backward (and gradgradcheck) works; otherwise it runs the op directly.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        mask_args: tuple[float, int, int, str, str, tuple[int, ...]],
        inplace: bool,
    ) -> torch.Tensor:
        # mask_args = (p, seed, offset, scale, sampler, shared_dims), as one
        # argument: every argument of apply costs a little on every call.
        ctx.mask_args = mask_args
        if inplace:
            ctx.mark_dirty(x)
        return _apply_mask(x, mask_args, out=x if inplace else None)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        # dy/dx = mask * scale: the same op, the same mask, applied to the gradient.
        if torch.is_grad_enabled():
            # create_graph=True: through the Function again, for double backward.
            grad_input = _MaskedScale.apply(grad_output, ctx.mask_args, False)
        else:  # the usual backward: the op itself, without a second graph node
            grad_input = _apply_mask(grad_output, ctx.mask_args)
        return (grad_input, None, None)


def _apply_mask(
    t: torch.Tensor,
    mask_args: tuple[float, int, int, str, str, tuple[int, ...]],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    p, seed, offset, scale, sampler, shared_dims = mask_args
    return _backend.select_backend(t)(
        t,
        p=p,
        seed=seed,
        offset=offset,
        scale=scale,
        sampler=sampler,
        shared_dims=shared_dims,
        out=out,
    )


_CPP_DTYPES = (torch.float32, torch.float64)
# Larger tensors take the usual path: its kernel runs on several threads there.
_CPP_LIMIT = 1 << 19


_cpp_op = cpp.load  # the built C++ op (droplab.kernels.cpp), or None


@functools.lru_cache(maxsize=256)
def _threshold_and_factor(p: float, scale: str) -> tuple[int, float]:
    return keep_threshold(p), train_scale(p, scale)


def _scale_for_eval(x: torch.Tensor, factor: float, inplace: bool) -> torch.Tensor:
    # Same numerics as training: factor rounded to the compute dtype, one multiply.
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    factor_t = torch.tensor(factor, dtype=compute, device=x.device)
    scaled = (x.to(compute) * factor_t).to(x.dtype)
    return x.copy_(scaled) if inplace else scaled


def dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
    shared_dims: Any = (),
    inplace: bool = False,
) -> torch.Tensor:
    """Zero each unit with probability ``p`` and scale the kept ones.

    Args:
        x: float16, bfloat16, float32 or float64 tensor of any shape and strides.
        p: probability of *dropping* a unit (not the keep probability!), in [0, 1].
            ``p = 1`` gives zeros and zero gradients, never a division by zero.
        training: draw a mask if True; otherwise apply the evaluation rule.
        seed: the stream, an int in [0, 2**64). None takes a fresh seed from
            torch's default generator, so ``torch.manual_seed`` reproduces a run.
        offset: the stream element used by the mask's first element. To get a
            fresh mask from the same seed, advance it by
            ``droplab._backend.stream_elements(x.shape, shared_dims)`` (what
            :class:`droplab.nn.Dropout` does).
        scale: ``"inverted"`` (kept units x 1/(1-p)), ``"classic"`` (x 1 in
            training, every unit x (1-p) at evaluation), ``"realized"`` (kept
            units x n/k, k the number kept in that row) or ``"none"``.
        sampler: ``"bernoulli"`` (each unit independently) or ``"fixed"``
            (exactly round(n(1-p)) units kept per row).
        shared_dims: dimensions along which the mask is shared, e.g. ``(2, 3)``
            drops whole channels of an (N, C, H, W) input.
        inplace: write the result into ``x``.

    Returns:
        A tensor of ``x``'s shape and dtype. At evaluation every rule except
        ``classic`` returns ``x`` itself, as ``torch.nn.functional.dropout`` does.

    Shape:
        Input: any. Output: the same. A row (for ``realized`` and ``fixed``) is
        one index of the first dimension; a 0-d or 1-d input is a single row.

    Examples:
        >>> x = torch.ones(2, 4)
        >>> dropout(x, 0.5, seed=0)
        tensor([[2., 0., 0., 0.],
                [0., 2., 0., 2.]])
        >>> dropout(x, 0.5, seed=0, scale="realized")  # row 0 kept 1 of 4: x 4
        tensor([[4., 0., 0., 0.],
                [0., 2., 0., 2.]])
        >>> dropout(x, 0.5, training=False) is x
        True
    """
    owner = "dropout"
    # Every argument is checked on every call. Each test below first accepts,
    # cheaply, exactly the values its check would return unchanged (a float in
    # [0, 1], an int in range, a known word, no shared dims); anything else goes
    # through the check, which converts it or raises its usual error.
    x = check_floating_tensor(x, owner=owner)
    if type(p) is not float or not 0.0 <= p <= 1.0:
        p = check_probability(p, owner=owner)
    if training is not True and training is not False:
        training = check_bool(training, "training", owner=owner)
    if seed is not None and (type(seed) is not int or not 0 <= seed < SEED_LIMIT):
        seed = check_seed(seed, owner=owner)
    if type(offset) is not int or not 0 <= offset < _OFFSET_LIMIT:
        offset = check_offset(offset, owner=owner)
    if type(scale) is not str or scale not in SCALES:
        scale = check_choice(scale, "scale", SCALES, owner=owner)
    if type(sampler) is not str or sampler not in SAMPLERS:
        sampler = check_choice(sampler, "sampler", SAMPLERS, owner=owner)
    if type(shared_dims) is tuple and not shared_dims:
        dims: tuple[int, ...] = ()
    else:
        dims = check_shared_dims(shared_dims, x.ndim, owner=owner)
    if inplace is not True and inplace is not False:
        inplace = check_bool(inplace, "inplace", owner=owner)

    if not training:
        factor = eval_scale(p, scale)
        return x if factor == 1.0 else _scale_for_eval(x, factor, inplace)
    if seed is None:
        seed = _backend.draw_seed()
    if (  # droplab.kernels.cpp, when built: the same op without Python per call
        sampler == "bernoulli"
        and not dims
        and not inplace
        and scale != "realized"
        and x.dtype in _CPP_DTYPES
        and x.device.type == "cpu"
        and 0 < x.numel() < _CPP_LIMIT
        and x.is_contiguous()
        and _cpp_op() is not None
        and not os.environ.get("DROPLAB_BACKEND")
    ):
        threshold, factor = _threshold_and_factor(p, scale)
        return cpp.dropout(x, seed, offset, threshold, factor)
    result: torch.Tensor = _MaskedScale.apply(
        x, (p, seed, offset, scale, sampler, dims), inplace
    )
    return result


# --- the dropout family (droplab.variants) ---
from droplab.variants.alpha import alpha_dropout as alpha_dropout  # noqa: E402
from droplab.variants.alpha import feature_alpha_dropout as feature_alpha_dropout  # noqa: E402
from droplab.variants.channel import dropout1d as dropout1d  # noqa: E402
from droplab.variants.channel import dropout2d as dropout2d  # noqa: E402
from droplab.variants.channel import dropout3d as dropout3d  # noqa: E402
from droplab.variants.channel import (  # noqa: E402
    shared_dims_from_noise_shape as shared_dims_from_noise_shape,
)
from droplab.variants.concrete import concrete_dropout as concrete_dropout  # noqa: E402
from droplab.variants.dropblock import drop_block2d as drop_block2d  # noqa: E402
from droplab.variants.dropconnect import drop_connect_linear as drop_connect_linear  # noqa: E402
from droplab.variants.droppath import drop_path as drop_path  # noqa: E402
from droplab.variants.droppath import linear_drop_rates as linear_drop_rates  # noqa: E402
from droplab.variants.gaussian import gaussian_dropout as gaussian_dropout  # noqa: E402
from droplab.variants.locked import locked_dropout as locked_dropout  # noqa: E402

__all__ += [
    "alpha_dropout",
    "concrete_dropout",
    "drop_block2d",
    "drop_connect_linear",
    "drop_path",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "linear_drop_rates",
    "locked_dropout",
    "shared_dims_from_noise_shape",
]
