"""The one masked-scale autograd path: ``y = t * mask * scale``, backward the same op.

:func:`dropout` and every variant that scales the kept units of a mask (channel,
locked, DropPath, DropConnect, weight drop, and alpha dropout's kept part) go
through :class:`MaskedScale`. Only Python numbers are kept on ``ctx``: the mask
is redrawn from ``(seed, offset)`` in backward, so nothing of the input's size
is saved. The implementation is chosen by :func:`droplab.kernels.select`; the
numerics contract is the one of :mod:`droplab.kernels.reference`.
"""

from __future__ import annotations

from typing import Any

import torch

from droplab import kernels
from droplab.scaling import compute_dtype

__all__ = ["MaskArgs", "MaskedScale", "apply_mask", "keep_scale", "masked_scale"]

# (p, seed, offset, scale, sampler, shared_dims), as one argument: every
# argument of apply costs a little on every call.
MaskArgs = tuple[float, int, int, str, str, tuple[int, ...]]


class MaskedScale(torch.autograd.Function):
    """``y = x * mask * scale``; its backward is the same op on the gradient.

    Only Python numbers are kept on ``ctx``: the mask is redrawn from
    ``(seed, offset)`` in backward. When the backward itself is recorded
    (``create_graph=True``) it calls this Function again, so the double
    backward (and gradgradcheck) works; otherwise it runs the op directly.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, mask_args: MaskArgs, inplace: bool
    ) -> torch.Tensor:
        ctx.mask_args = mask_args
        if inplace:
            ctx.mark_dirty(x)
        return apply_mask(x, mask_args, out=x if inplace else None)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        # dy/dx = mask * scale: the same op, the same mask, applied to the gradient.
        if torch.is_grad_enabled():
            # create_graph=True: through the Function again, for double backward.
            grad_input = MaskedScale.apply(grad_output, ctx.mask_args, False)
        else:  # the usual backward: the op itself, without a second graph node
            grad_input = apply_mask(grad_output, ctx.mask_args)
        return (grad_input, None, None)


def apply_mask(
    t: torch.Tensor, mask_args: MaskArgs, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The op without autograd, on the kernel :func:`droplab.kernels.select` picks."""
    p, seed, offset, scale, sampler, shared_dims = mask_args
    return kernels.select(t)(
        t,
        p=p,
        seed=seed,
        offset=offset,
        scale=scale,
        sampler=sampler,
        shared_dims=shared_dims,
        out=out,
    )


def masked_scale(
    t: torch.Tensor,
    *,
    p: float,
    seed: int,
    offset: int,
    scale: str,
    sampler: str,
    shared_dims: tuple[int, ...],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``t * mask * train-scale`` without autograd; arguments already validated.

    For callers that manage their own backward or write in place (the stacked
    UCI trainer); everyone else calls :func:`droplab.dropout`.

    Args:
        t: float16, bfloat16, float32 or float64 tensor, any shape, strides, device.
        p: drop probability in [0, 1].
        seed: the stream, an int in [0, 2**64).
        offset: the stream element of the mask's first element.
        scale: one of :data:`droplab.scaling.SCALES`.
        sampler: one of :data:`droplab.masks.SAMPLERS`.
        shared_dims: normalised sorted tuple of the dimensions the mask is shared along.
        out: where to write the result (may be ``t`` itself, for in-place).

    Examples:
        >>> x = torch.ones(2, 3)
        >>> masked_scale(x, p=0.5, seed=0, offset=0, scale="inverted",
        ...              sampler="bernoulli", shared_dims=())
        tensor([[2., 0., 0.],
                [0., 0., 2.]])
    """
    return apply_mask(t, (p, seed, offset, scale, sampler, shared_dims), out=out)


def keep_scale(
    t: torch.Tensor,
    c: float,
    p: float,
    seed: int,
    offset: int,
    shared_dims: tuple[int, ...] = (),
) -> torch.Tensor:
    """Differentiable ``t * c`` where the mask of ``(p, seed, offset)`` keeps, ``+0.0``
    elsewhere (alpha dropout's kept part).

    :class:`MaskedScale` with scale ``"none"`` keeps ``t`` exactly (or gives
    ``+0.0``); the product with ``c`` is then taken in the compute dtype, so
    the result equals ``where(keep, (t * c).to(t.dtype), +0.0)`` for ``c >= 0``.
    """
    masked: torch.Tensor = MaskedScale.apply(
        t, (p, seed, offset, "none", "bernoulli", shared_dims), False
    )
    # A Python float: torch rounds it to the compute dtype (as a 0-d tensor of
    # that dtype would be), and the multiply saves no tensor for backward.
    return (masked.to(compute_dtype(t.dtype)) * c).to(t.dtype)
