"""The variants' fused kernels, chosen for a tensor as ``masked_scale``'s kernel is.

Each function returns the variant's result from a fused kernel, or None when
no fused kernel takes the tensor; the variant then runs its reference code.
The choice follows :func:`droplab.kernels.select` exactly: where it picks the
Numba ``masked_scale`` (a CPU tensor, Numba installed, no forced backend), the
Numba kernels of :mod:`droplab.kernels.cpu_variants`; where it picks the
Triton one (CUDA, or ``DROPLAB_BACKEND=triton`` under ``TRITON_INTERPRET=1``),
those of :mod:`droplab.kernels.gpu_variants`; under
``DROPLAB_BACKEND=reference``, none. Neither Numba nor Triton is imported
before a tensor asks for it.

Arguments are assumed valid (the variants check them at their door).
"""

from __future__ import annotations

from typing import Any

import torch

from droplab import kernels
from droplab._validation import FLOAT_DTYPES

__all__ = [
    "alpha_dropout",
    "backend",
    "concrete_grad",
    "concrete_scale",
    "drop_block",
    "gaussian_noise",
    "uniform_logits",
]

_BY_MODULE = {"droplab.kernels.cpu": "numba", "droplab.kernels.gpu": "triton"}


def backend(t: torch.Tensor, *, any_layout: bool = False) -> str:
    """``"numba"``, ``"triton"`` or ``""`` (no fused kernel) for tensor ``t``.

    Only for a contiguous ``t``, unless ``any_layout`` (a kernel whose wrapper
    takes every layout: a dense copy in, the result in ``t``'s layout).

    >>> backend(torch.zeros(2)) in ("numba", "")
    True
    """
    if t.dtype not in FLOAT_DTYPES:
        return ""
    if not (any_layout or t.is_contiguous()):  # the reference code keeps the layout
        return ""
    try:
        chosen = kernels.select(t)
    except (ValueError, RuntimeError):
        # a DROPLAB_BACKEND that masked_scale refuses: the variants' own code
        # runs (and says so where it calls masked_scale)
        return ""
    return _BY_MODULE.get(chosen.__module__, "")


def gaussian_noise(
    t: torch.Tensor, *, sigma: float, seed: int, offset: int
) -> torch.Tensor | None:
    """``t * round(1 + sigma z)``, ``z`` the normals of ``(seed, offset)``."""
    kind = backend(t)
    if kind == "numba":
        from droplab.kernels import cpu_variants

        return cpu_variants.gaussian_noise(t, sigma=sigma, seed=seed, offset=offset)
    if kind == "triton":
        from droplab.kernels import gpu_variants

        return gpu_variants.gaussian_noise(t, sigma=sigma, seed=seed, offset=offset)
    return None


def alpha_dropout(t: torch.Tensor, **kwargs: Any) -> torch.Tensor | None:
    """Alpha dropout's ``x * a + b`` / ``dropped``; keyword arguments as
    :func:`droplab.kernels.cpu_variants.alpha_dropout`."""
    kind = backend(t)
    if kind == "numba":
        from droplab.kernels import cpu_variants

        return cpu_variants.alpha_dropout(t, **kwargs)
    if kind == "triton":
        from droplab.kernels import gpu_variants

        return gpu_variants.alpha_dropout(t, **kwargs)
    return None


def drop_block(t: torch.Tensor, **kwargs: Any) -> torch.Tensor | None:
    """DropBlock (CPU only); keyword arguments as
    :func:`droplab.kernels.cpu_variants.drop_block`."""
    if backend(t) != "numba":
        return None
    from droplab.kernels import cpu_variants

    return cpu_variants.drop_block(t, **kwargs)


def uniform_logits(
    t: torch.Tensor, *, seed: int, offset: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """Concrete dropout's ``log u - log(1 - u)`` of ``t``'s shape (CPU only)."""
    if backend(t) != "numba":
        return None
    from droplab.kernels import cpu_variants

    return cpu_variants.uniform_logits(
        tuple(t.shape), seed=seed, offset=offset, dtype=dtype
    )


def concrete_scale(t: torch.Tensor, **kwargs: Any) -> torch.Tensor | None:
    """Concrete dropout's forward (CPU only, any layout: the values do not
    depend on it); keyword arguments as
    :func:`droplab.kernels.cpu_variants.concrete_scale`."""
    if backend(t, any_layout=True) != "numba":
        return None
    from droplab.kernels import cpu_variants

    return cpu_variants.concrete_scale(t, **kwargs)


def concrete_grad(
    t: torch.Tensor, grad: torch.Tensor, **kwargs: Any
) -> tuple[torch.Tensor, float] | None:
    """Concrete dropout's backward (CPU only, any layout); arguments as
    :func:`droplab.kernels.cpu_variants.concrete_grad`."""
    if backend(t, any_layout=True) != "numba" or grad.device != t.device:
        return None
    from droplab.kernels import cpu_variants

    return cpu_variants.concrete_grad(t, grad, **kwargs)
