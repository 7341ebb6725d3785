"""Concrete dropout: a dropout rate learned by gradient descent.

- Paper: Gal, Hron and Kendall, "Concrete dropout", NeurIPS 2017.
  https://arxiv.org/abs/1705.07832

The Bernoulli mask is replaced by its continuous relaxation (the Concrete or
relaxed Bernoulli distribution, Maddison et al. 2017; Jang et al. 2017), which is
differentiable in the rate ``p``. For a uniform ``u`` and temperature ``t``:

    drop = sigmoid((log p - log(1 - p) + log u - log(1 - u)) / t),
    y    = x * (1 - drop) / (1 - p).

As ``t -> 0``, ``drop`` tends to a Bernoulli(p) draw. The rate is learned by
adding the layer's regulariser (the KL term of the variational objective) to the
loss:

    weight_regularizer * sum(theta^2) / (1 - p)
    + dropout_regularizer * K * (p log p + (1 - p) log(1 - p)),

``theta`` the parameters of the layer that follows and ``K`` the number of
features dropped per sample. The paper sets ``weight_regularizer = l^2 / (tau N)``
and ``dropout_regularizer = 2 / (tau N)`` (``N`` the data size, ``l`` a length
scale, ``tau`` the model precision).

Here ``p`` is kept inside ``(p_min, p_max)`` by construction:
``p = p_min + (p_max - p_min) * sigmoid(p_logit)``. The uniforms come from the
Philox stream (``u = (word + 1/2) / 2**32``, so no ``eps`` is needed, unlike the
reference code); backward regenerates them and saves only ``x`` (needed for the
gradient of ``p``) and ``p``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from droplab._core.module import StochasticModule
from droplab._core.stream import compute_dtype, uniform_noise
from droplab._validation import (
    check_bool,
    check_floating_tensor,
    check_probability,
    fail,
)
from droplab.kernels import fused
from droplab.mesh import refuse_dtensor
from droplab.rng import resolve_seed

__all__ = ["ConcreteDropout", "concrete_dropout"]


def _ratio(
    x: torch.Tensor, p: torch.Tensor, t: float, seed: int, offset: int
) -> tuple[torch.Tensor, ...]:
    """``(r, drop, keep, p)`` with ``r = (1 - drop) / (1 - p)``, in the compute dtype."""
    compute = compute_dtype(x.dtype)
    # words and both logarithms in one Numba pass (None: not on this tensor)
    logit_u = fused.uniform_logits(x, seed=seed, offset=offset, dtype=compute)
    if logit_u is None:
        u = uniform_noise(
            tuple(x.shape),
            seed=seed,
            offset=offset,
            dtype=torch.float64,
            device=x.device,
        )
        logit_u = (torch.log(u) - torch.log1p(-u)).to(compute)
    p = p.to(compute)
    # in place on the fresh logit_u: the same bits as the out-of-place ops
    drop = logit_u.add_(torch.log(p) - torch.log1p(-p)).div_(t).sigmoid_()
    keep = 1.0 - drop
    return keep / (1.0 - p), drop, keep, p


def _rate(x: torch.Tensor, p: torch.Tensor) -> float:
    """``p`` rounded to ``x``'s compute dtype, as a Python float."""
    return float(p.detach().to(compute_dtype(x.dtype)))


def _relaxed(
    x: torch.Tensor, p: torch.Tensor, t: float, seed: int, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, dr/dp) with ``r = (1 - drop) / (1 - p)``, in the compute dtype."""
    r, drop, keep, p = _ratio(x, p, t, seed, offset)
    d_drop = drop * keep / t * (1.0 / p + 1.0 / (1.0 - p))
    return r, -d_drop / (1.0 - p) + keep / (1.0 - p) ** 2


class _Concrete(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, p: torch.Tensor, t: float, seed: int, offset: int
    ) -> torch.Tensor:
        ctx.args = (t, seed, offset)
        ctx.save_for_backward(x, p)
        # one fused pass where a kernel takes x (the rate in the compute dtype)
        y = fused.concrete_scale(
            x, p=_rate(x, p), temperature=t, seed=seed, offset=offset
        )
        if y is not None:
            return y
        r = _ratio(x, p, t, seed, offset)[0]
        return (x.to(r.dtype) * r).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, p = ctx.saved_tensors
        if not torch.is_grad_enabled():  # no double backward: one fused pass
            t, seed, offset = ctx.args
            fused_grads = fused.concrete_grad(
                x, grad, p=_rate(x, p), temperature=t, seed=seed, offset=offset
            )
            if fused_grads is not None:
                grad_x, total = fused_grads
                grad_p = torch.tensor(total, dtype=p.dtype, device=p.device)
                return grad_x, grad_p, None, None, None
        r, dr_dp = _relaxed(x, p, *ctx.args)  # the noise regenerated
        g = grad.to(r.dtype)
        grad_x = (g * r).to(x.dtype)
        grad_p = (g * x.to(r.dtype) * dr_dp).sum().to(p.dtype).reshape(p.shape)
        return grad_x, grad_p, None, None, None


def concrete_dropout(
    x: torch.Tensor,
    p: float | torch.Tensor,
    temperature: float = 0.1,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Relaxed-Bernoulli dropout, differentiable in ``p``.

    Args:
        x: any float tensor.
        p: drop probability in (0, 1): a float or a 0-d tensor (which gets a
            gradient).
        temperature: the relaxation's temperature ``t > 0`` (paper: 0.1).
        training: apply if True; identity otherwise.
        seed, offset: the stream; a call uses ``x.numel()`` elements.

    Returns:
        A tensor of ``x``'s shape and dtype; ``E[y] = x`` only as ``t -> 0``.

    Examples:
        >>> p = torch.tensor(0.3, requires_grad=True)
        >>> y = concrete_dropout(torch.ones(4), p, seed=0)
        >>> y.sum().backward(); p.grad is not None
        True
    """
    owner = "concrete_dropout"
    x = check_floating_tensor(x, owner=owner)
    refuse_dtensor(x, owner)
    p_t = (
        p
        if isinstance(p, torch.Tensor)
        else torch.tensor(check_probability(p, owner=owner), dtype=torch.float64)
    )
    if p_t.ndim != 0 or not p_t.is_floating_point():
        raise fail(
            "p",
            f"a tensor of shape {tuple(p_t.shape)} and dtype {p_t.dtype}",
            "a float or a 0-d floating tensor",
            owner=owner,
            kind=TypeError,
        )
    if not 0.0 < float(p_t.detach()) < 1.0:
        raise fail("p", float(p_t.detach()), "in the open interval (0, 1)", owner=owner)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature > 0.0
        or math.isinf(temperature)
    ):
        raise fail("temperature", temperature, "a finite real number > 0", owner=owner)
    training = check_bool(training, "training", owner=owner)
    seed_, offset_ = resolve_seed(seed, offset, owner, draw=training)
    if not training:
        return x
    result: torch.Tensor = _Concrete.apply(
        x, p_t.to(x.device), float(temperature), seed_, offset_
    )
    return result


class ConcreteDropout(StochasticModule):
    """Concrete dropout in front of a layer, with a learned and bounded rate.

    ``forward(x) = layer(concrete_dropout(x, p))`` in training and
    ``layer(x)`` at evaluation. Add :meth:`regularizer` to the loss.

    Args:
        layer: the module that follows (its parameters enter the weight term),
            or None for a bare dropout.
        init_p: the rate at initialisation, inside ``(p_min, p_max)``.
        temperature: the relaxation's temperature (paper: 0.1).
        weight_regularizer, dropout_regularizer: the two coefficients.
        p_min, p_max: bounds of the learned rate, ``0 <= p_min < p_max <= 1``.
        seed: the stream (None: a fresh seed per call).

    Examples:
        >>> cd = ConcreteDropout(nn.Linear(4, 2), init_p=0.2, seed=0)
        >>> round(cd.p, 6)
        0.2
        >>> loss = cd(torch.ones(3, 4)).sum() + cd.regularizer()
        >>> loss.backward(); cd.p_logit.grad is not None
        True
    """

    def __init__(
        self,
        layer: nn.Module | None = None,
        *,
        init_p: float = 0.1,
        temperature: float = 0.1,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        p_min: float = 1e-3,
        p_max: float = 0.9,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        owner = type(self).__name__
        p_min = check_probability(p_min, "p_min", owner=owner)
        p_max = check_probability(p_max, "p_max", owner=owner)
        if not p_min < p_max:
            raise fail("p_max", p_max, f"greater than p_min={p_min}", owner=owner)
        init_p = check_probability(init_p, "init_p", owner=owner)
        if not p_min < init_p < p_max:
            raise fail(
                "init_p",
                init_p,
                f"in the open interval ({p_min}, {p_max})",
                owner=owner,
            )
        for name, value in (
            ("weight_regularizer", weight_regularizer),
            ("dropout_regularizer", dropout_regularizer),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value >= 0.0
                or math.isinf(value)
            ):
                raise fail(name, value, "a finite real number >= 0", owner=owner)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not temperature > 0.0
            or math.isinf(temperature)
        ):
            raise fail(
                "temperature", temperature, "a finite real number > 0", owner=owner
            )
        if layer is not None and not isinstance(layer, nn.Module):
            raise fail(
                "layer", layer, "a torch.nn.Module or None", owner=owner, kind=TypeError
            )
        self.layer = layer
        self.temperature = float(temperature)
        self.weight_regularizer = float(weight_regularizer)
        self.dropout_regularizer = float(dropout_regularizer)
        self.p_min, self.p_max = p_min, p_max
        fraction = (init_p - p_min) / (p_max - p_min)
        self.p_logit = nn.Parameter(torch.tensor(math.log(fraction / (1 - fraction))))
        self.input_features: int | None = None

    def p_tensor(self) -> torch.Tensor:
        """The rate as a 0-d tensor that carries the gradient to ``p_logit``."""
        return self.p_min + (self.p_max - self.p_min) * torch.sigmoid(self.p_logit)

    @property
    def p(self) -> float:
        """The current drop rate, always inside ``(p_min, p_max)``."""
        return float(self.p_tensor().detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_floating_tensor(x, owner=type(self).__name__)
        self.input_features = math.prod(x.shape[1:]) if x.ndim > 1 else x.numel()
        if self.training:
            seed, offset = self.next_stream(x.numel())
            x = concrete_dropout(
                x, self.p_tensor(), self.temperature, seed=seed, offset=offset
            )
        return x if self.layer is None else self.layer(x)

    def regularizer(self) -> torch.Tensor:
        """The term to add to the loss (the paper's KL term for this layer).

        ``K`` is the number of features per sample of the last input seen
        (``prod(x.shape[1:])``), so call it after a forward pass.
        """
        if self.input_features is None:
            raise RuntimeError(
                "ConcreteDropout.regularizer() needs the number of input features: "
                "call the module on a batch first."
            )
        p = self.p_tensor()
        squares = (
            sum((w**2).sum() for w in self.layer.parameters())
            if self.layer is not None
            else torch.zeros(())
        )
        weight_term = self.weight_regularizer * squares / (1.0 - p)
        entropy_term = p * torch.log(p) + (1.0 - p) * torch.log1p(-p)
        return (
            weight_term + self.dropout_regularizer * self.input_features * entropy_term
        )

    def weight_scaled_form(self, where: str) -> tuple[nn.Module, float]:
        """In a weight-scaled copy: the layer it wraps (or an identity)."""
        return (self.layer if self.layer is not None else nn.Identity()), 1.0

    def extra_repr(self) -> str:
        parts = [
            f"p={self.p:.4g}",
            f"temperature={self.temperature}",
            f"bounds=({self.p_min}, {self.p_max})",
            self.stream_repr(),
        ]
        return ", ".join(filter(None, parts))
