"""Timing helpers shared by ``droplab bench`` and its CUDA part.

Their own module, so that :mod:`droplab.cli.bench` (which runs the CUDA part
on request) and :mod:`droplab.cli.bench_cuda` (which uses these) import it
and not each other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from droplab import functional

__all__ = ["bind_forward", "bind_forward_backward", "saved_bytes"]


def bind_forward(
    op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """A call of ``op`` on ``x``, ready to time."""
    return lambda: op(x)


def bind_forward_backward(
    op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor
) -> Callable[[], None]:
    """Forward and backward of ``op`` on the leaf ``x``, ready to time."""

    def step() -> None:
        x.grad = None
        op(x).backward(grad)

    return step


def saved_bytes(
    n: int = 1 << 20, p: float = 0.5, device: str = "cpu"
) -> dict[str, int]:
    """Bytes each dropout saves for backward on a float32 input of ``n`` elements."""

    def count(op: Callable[[torch.Tensor], torch.Tensor]) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        x = torch.randn(n, device=device, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = op(x)
        y.sum().backward()
        return total

    return {
        "droplab": count(lambda v: functional.dropout(v, p, seed=1)),
        "torch": count(lambda v: torch.nn.functional.dropout(v, p)),
    }
