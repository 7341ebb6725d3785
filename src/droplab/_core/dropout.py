"""Dropout: the function and its module, side by side (as ``torch.nn.functional``).

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014.
  https://jmlr.org/papers/v15/srivastava14a.html

:func:`dropout` multiplies the kept units by a training scale and zeroes the
others, with the mask of :mod:`droplab.masks` drawn from ``(seed, offset)``. Its
backward pass draws the same mask again, so unlike ``torch.nn.functional.dropout``
it keeps nothing of the input's size for backward (no mask, no input): only the
handful of Python numbers that name the mask.

:class:`Dropout` takes the same positional arguments as ``torch.nn.Dropout``
(``p``, ``inplace``) and behaves the same in ``train()`` and ``eval()``; the
keyword-only extras choose the seed, the scaling rule, the sampler and the
dimensions along which the mask is shared.
"""

from __future__ import annotations

from typing import Any

import torch

from droplab._core.base import DropoutBase
from droplab._core.fx import Proxy, as_module_node, function_node
from droplab._core.op import MASKED_SCALE, check_stream
from droplab._validation import (
    FLOAT_DTYPES,
    check_bool,
    check_choice,
    check_floating_tensor,
    check_probability,
    check_shared_dims,
)
from droplab.masks import SAMPLERS, stream_elements
from droplab.scaling import SCALES, compute_dtype, eval_scale

__all__ = ["Dropout", "dropout"]


def _scale_for_eval(x: torch.Tensor, factor: float, inplace: bool) -> torch.Tensor:
    # Same numerics as training: factor rounded to the compute dtype, one multiply.
    compute = compute_dtype(x.dtype)
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
            ``droplab.masks.stream_elements(x.shape, shared_dims)`` (what
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
        A tensor of ``x``'s shape and dtype, laid out as ``torch.empty_like(x)``
        (a channels_last input gives a channels_last result; the mask is on the
        logical index, so the layout never changes a value). At evaluation every
        rule except ``classic``, and in training ``p = 0`` or an empty ``x``,
        return ``x`` itself, as ``torch.nn.functional.dropout`` does.

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
    if type(x) is not torch.Tensor and isinstance(x, Proxy):  # torch.fx tracing
        kwargs = dict(seed=seed, offset=offset, scale=scale, sampler=sampler)
        kwargs.update(shared_dims=shared_dims, inplace=inplace)
        return function_node(dropout, (x, p, training), kwargs)
    x = check_floating_tensor(x, owner=owner)
    p, training, seed, offset, scale, sampler, inplace = check_arguments(
        owner, p, training, seed, offset, scale, sampler, inplace
    )
    if type(shared_dims) is tuple and not shared_dims:
        dims: tuple[int, ...] = ()
    else:
        dims = check_shared_dims(shared_dims, x.ndim, owner=owner)
    return _dropout(x, p, training, seed, offset, scale, sampler, dims, inplace)


def check_arguments(
    owner: str,
    p: Any,
    training: Any,
    seed: Any,
    offset: Any,
    scale: Any,
    sampler: Any,
    inplace: Any,
) -> tuple[float, bool, Any, int, str, str, bool]:
    """The arguments :func:`dropout` and the variants built on it share, checked.

    The door of every public function that ends in :func:`_dropout`; each
    check is one comparison when the value is already right.
    """
    if type(p) is not float or not 0.0 <= p <= 1.0:
        p = check_probability(p, owner=owner)
    if training is not True and training is not False:
        training = check_bool(training, "training", owner=owner)
    # in a graph a module's stream arrives as its tensor (next_state)
    seed, offset = check_stream(seed, offset, owner)
    if type(scale) is not str or scale not in SCALES:
        scale = check_choice(scale, "scale", SCALES, owner=owner)
    if type(sampler) is not str or sampler not in SAMPLERS:
        sampler = check_choice(sampler, "sampler", SAMPLERS, owner=owner)
    if inplace is not True and inplace is not False:
        inplace = check_bool(inplace, "inplace", owner=owner)
    return p, training, seed, offset, scale, sampler, inplace


def _dropout(
    x: torch.Tensor,
    p: float,
    training: bool,
    seed: Any,
    offset: Any,
    scale: str,
    sampler: str,
    dims: tuple[int, ...],
    inplace: bool,
) -> torch.Tensor:
    """:func:`dropout` on arguments already checked: the trusted internal form.

    What modules and variants call once their own door has checked the
    arguments (``dims`` normalised for ``x.ndim``); in a graph ``seed`` may be
    a module's stream tensor.
    """
    if not training:
        factor = eval_scale(p, scale)
        return x if factor == 1.0 else _scale_for_eval(x, factor, inplace)
    if p == 0.0 or x.numel() == 0:
        # Every rule keeps every unit with factor 1: x itself, as torch returns
        # its input here (the stream elements stay used, so later masks do not move).
        return x
    # The one entry: the registered op in a graph, the eager Function (or the
    # kernel itself) otherwise; seed=None draws from torch's default generator.
    return MASKED_SCALE(x, seed, offset, p, scale, sampler, dims, inplace=inplace)


class Dropout(DropoutBase):
    """Zero each unit with probability ``p`` during training and scale the rest.

    A drop-in for ``torch.nn.Dropout``: the same positional arguments, identity in
    ``eval()`` for the default ``inverted`` rule. With an int ``seed`` the module
    owns that stream: every training call uses the next
    ``masks.stream_elements(x.shape, shared_dims)`` elements of it, and
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

    traceable = True  # draws only through dropout(): compiles into the graph
    records_fx_node = True  # forward turns a Proxy into its call_module node
    repr_always = ("p", "inplace")
    repr_defaults = (
        ("scale", "inverted"),
        ("sampler", "bernoulli"),
        ("shared_dims", ()),
    )

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
        # each assignment is checked once, here (DropoutBase.checks)
        self.p, self.inplace = p, inplace
        self.scale, self.sampler, self.shared_dims = scale, sampler, shared_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is not torch.Tensor:
            if isinstance(x, Proxy):  # torch.fx.symbolic_trace: one node
                return as_module_node(self, (x,), {})
            x = check_floating_tensor(x, owner=type(self).__name__)
        elif (
            x.dtype not in FLOAT_DTYPES or x.layout is not torch.strided or x.is_nested
        ):
            x = check_floating_tensor(x, owner=type(self).__name__)  # raises
        dims = self.shared_dims
        if not self.training:
            seed, offset = None, 0
        elif not dims:  # the common case: the mask covers x
            seed, offset = self.next_stream(x.numel(), x)
        else:
            dims = check_shared_dims(dims, x.ndim, owner=type(self).__name__)
            seed, offset = self.next_stream(stream_elements(x.shape, dims), x)
        # In a graph, seed is the module's stream as a tensor (next_stream).
        return _dropout(
            x,
            self.p,
            self.training,
            seed,
            offset,
            self.scale,
            self.sampler,
            dims,
            self.inplace,
        )
