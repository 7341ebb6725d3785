"""DropConnect: drop weights, not units, of a linear layer.

- Paper: Wan, Zeiler, Zhang, LeCun and Fergus, "Regularization of neural
  networks using DropConnect", ICML 2013.
  https://proceedings.mlr.press/v28/wan13.html

Training: ``y = x (M * W)^T s + b`` with ``M`` a 0/1 mask of the weight matrix
(keep probability ``1 - p``) and ``s`` the training scale of ``scale``
(``inverted``: ``1/(1-p)``; ``classic``: 1, as in the paper). The bias is never
dropped (the paper folds biases into ``W``; common implementations keep them).
The mask is either one per call, shared by the whole batch (``per_sample=False``,
the default and the cheap one), or one per sample (``per_sample=True``, the
paper's definition, ``B`` times the memory while the forward runs).

Inference (``DropConnectLinear(inference=...)``), for ``a`` the activation:

- ``"mean"``: ``a(E[u])``, the deterministic weight-scaling approximation;
- ``"gaussian"``: the paper's moment matching (its Algorithm 2): the
  pre-activation ``u`` is approximated by a normal with the mask's mean and
  variance, ``E[u] = q s x W^T + b`` and ``Var[u] = q (1 - q) s^2 (x^2) (W^2)^T``
  (``q = 1 - p``), and the output is the mean of ``a(u_k)`` over ``samples``
  draws ``u_k`` (normals from the stream, Box-Muller as in
  :mod:`droplab._core.stream`);
- ``"mc"``: the mean of ``a`` over ``samples`` forward passes with fresh masks.

The weight masks come from :func:`droplab.functional.dropout` applied to the
weight (per sample: to the weight expanded to ``(B, out, in)``), so the stream
is element ``offset +`` the flat index in ``(out, in)`` or ``(B, out, in)``.
Backward regenerates the mask: the layer saves ``x`` and ``W`` (as any linear
layer does) and no mask and no masked weight.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from droplab._core.base import DropoutBase, bool_check, choice_check, int_check
from droplab._core.dropout import dropout
from droplab._core.stream import normal_noise
from droplab._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_probability,
    fail,
)
from droplab.masks import SAMPLERS
from droplab.mesh import is_dtensor
from droplab.rng import draw_seed
from droplab.scaling import SCALES, eval_scale, train_scale

__all__ = ["INFERENCE", "DropConnectLinear", "drop_connect_linear"]

INFERENCE = ("mean", "gaussian", "mc")


def _masked_weight(w: torch.Tensor, batch: int, args: tuple[Any, ...]) -> torch.Tensor:
    p, seed, offset, scale, sampler, per_sample = args
    target = w.expand(batch, *w.shape) if per_sample else w
    return dropout(
        target, p, True, seed=seed, offset=offset, scale=scale, sampler=sampler
    )


class _DropConnect(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, *args: Any) -> torch.Tensor:
        ctx.args = args
        ctx.save_for_backward(x, w)  # the inputs of any linear layer; no mask
        wm = _masked_weight(w, x.shape[0], args)
        if args[-1]:
            return torch.einsum("boi,bi->bo", wm, x)
        return x @ wm.T

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, w = ctx.saved_tensors
        args = ctx.args
        p, seed, offset, scale, sampler, per_sample = args
        wm = _masked_weight(w, x.shape[0], args)  # regenerated, differentiable
        if per_sample:
            grad_x = torch.einsum("boi,bo->bi", wm, grad)
            outer = torch.einsum("bo,bi->boi", grad, x)
        else:
            grad_x = grad @ wm
            outer = grad.T @ x
        # d y / d W = the same mask and scale applied to the outer product
        grad_w = dropout(
            outer, p, True, seed=seed, offset=offset, scale=scale, sampler=sampler
        )
        if per_sample:
            grad_w = grad_w.sum(0)
        return (grad_x, grad_w, *([None] * len(args)))


def drop_connect_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
    per_sample: bool = False,
) -> torch.Tensor:
    """``x (M * W)^T s + b`` in training; ``x W^T e + b`` otherwise (``e`` the eval scale).

    Args:
        x: ``(..., in_features)``, any float dtype.
        weight: ``(out_features, in_features)``; bias: ``(out_features,)`` or None.
        p: probability of dropping a *weight*.
        training: mask the weights if True; else the mean (weight-scaled) layer.
        seed, offset: the stream; a call uses ``out * in`` elements, or
            ``B * out * in`` with ``per_sample`` (``B = prod(x.shape[:-1])``).
        scale, sampler: as :func:`droplab.functional.dropout`, over the weight
            (a row is an output unit's weights; with ``per_sample``, a sample's mask).
        per_sample: one mask per sample instead of one per call.

    With a DTensor ``weight`` (sharded by a TP plan) and ``x``, the weight's
    mask is that of the logical, unsharded weight on every mesh
    (docs/mesh.md); ``per_sample`` is then refused.

    Returns:
        ``(..., out_features)``.

    Examples:
        >>> w = torch.ones(2, 3)
        >>> drop_connect_linear(torch.ones(1, 3), w, None, 0.5, seed=0)  # masks [[1,0,0],[0,0,1]]
        tensor([[2., 2.]])
    """
    owner = "drop_connect_linear"
    x = check_floating_tensor(x, owner=owner)
    weight = check_floating_tensor(weight, "weight", owner=owner)
    sharded = is_dtensor(x) or is_dtensor(weight)
    if sharded and per_sample is not False:
        raise TypeError(
            f"The 'x' and 'weight' arguments of {owner} include a DTensor: a "
            f"per-sample weight mask is drawn for local tensors only (pass "
            f"per_sample=False, or call it on to_local() tensors)."
        )
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise fail(
            "weight",
            f"a tensor of shape {tuple(weight.shape)}",
            f"a 2-d (out_features, {x.shape[-1] if x.ndim else '?'}) tensor "
            f"matching x of shape {tuple(x.shape)}",
            owner=owner,
        )
    p = check_probability(p, owner=owner)
    training = check_bool(training, "training", owner=owner)
    scale = check_choice(scale, "scale", SCALES, owner=owner)
    sampler = check_choice(sampler, "sampler", SAMPLERS, owner=owner)
    per_sample = check_bool(per_sample, "per_sample", owner=owner)
    if not training:
        w_eval = weight * eval_scale(p, scale) if scale == "classic" else weight
        return torch.nn.functional.linear(x, w_eval, bias)
    if seed is None:
        seed = draw_seed()
    if sharded:
        # A sharded weight (a TP plan's): the masked weight is a DTensor whose
        # shards draw their part of the logical weight's mask (droplab.mesh),
        # and DTensor's linear does the rest; the mask is replayed in backward.
        masked = dropout(
            weight, p, True, seed=seed, offset=offset, scale=scale, sampler=sampler
        )
        return torch.nn.functional.linear(x, masked, bias)
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    out = _DropConnect.apply(flat, weight, p, seed, offset, scale, sampler, per_sample)
    out = out.reshape(*lead, weight.shape[0])
    return out if bias is None else out + bias


class DropConnectLinear(DropoutBase):
    """A ``torch.nn.Linear`` whose weights are dropped in training (DropConnect).

    Parameters ``weight`` and ``bias`` are named and initialised as in
    ``torch.nn.Linear``, so its ``state_dict`` loads into one (plus the stream).

    Args:
        in_features, out_features, bias: as ``torch.nn.Linear``.
        p: probability of dropping a weight.
        per_sample: one weight mask per sample (the paper) instead of per call.
        scale: ``"inverted"`` (default) or ``"classic"`` (the paper: no training
            scale; weights times ``1 - p`` in the mean inference).
        sampler: ``"bernoulli"`` or ``"fixed"`` (per output unit's weights).
        inference: ``"mean"``, ``"gaussian"`` or ``"mc"`` (module docstring).
        samples: draws for ``"gaussian"`` and ``"mc"`` inference.
        activation: a callable applied after the layer in every mode (needed for
            the ``"gaussian"`` and ``"mc"`` averages to differ from ``"mean"``).
        seed: the stream (None: a fresh seed per call).

    Examples:
        >>> layer = DropConnectLinear(4, 3, p=0.5, seed=0)
        >>> layer(torch.ones(2, 4)).shape, layer.offset
        (torch.Size([2, 3]), 12)
    """

    checks = DropoutBase.with_checks(
        in_features=int_check("in_features", 1),
        out_features=int_check("out_features", 1),
        per_sample=bool_check("per_sample"),
        scale=choice_check("scale", ("inverted", "classic")),
        inference=choice_check("inference", INFERENCE),
        samples=int_check("samples", 1),
    )

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        p: float = 0.5,
        *,
        per_sample: bool = False,
        scale: str = "inverted",
        sampler: str = "bernoulli",
        inference: str = "mean",
        samples: int = 100,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(seed=seed)
        owner = type(self).__name__
        # each assignment is checked (DropoutBase.checks)
        self.in_features, self.out_features = in_features, out_features
        self.p, self.per_sample, self.scale, self.sampler = (
            p,
            per_sample,
            scale,
            sampler,
        )
        self.inference, self.samples = inference, samples
        if activation is not None and not callable(activation):
            raise fail(
                "activation",
                activation,
                "a callable or None",
                owner=owner,
                kind=TypeError,
            )
        self.activation = activation
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias = (
            torch.nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        )
        torch.nn.Linear.reset_parameters(self)  # type: ignore[arg-type]

    def _act(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.activation is None else self.activation(u)

    def _draw(self, x: torch.Tensor) -> torch.Tensor:
        batch = x[..., 0].numel() if self.per_sample else 1
        # a DTensor weight (a TP plan's) draws its logical mask: no rank fold
        seed, offset = self.next_stream(batch * self.weight.numel(), self.weight)
        return drop_connect_linear(
            x,
            self.weight,
            self.bias,
            self.p,
            True,
            seed=seed,
            offset=offset,
            scale=self.scale,
            sampler=self.sampler,
            per_sample=self.per_sample,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self._act(self._draw(x))
        if self.inference == "mc":
            return torch.stack(
                [self._act(self._draw(x)) for _ in range(self.samples)]
            ).mean(0)
        # E[u] = q s x W^T + b, and q s is the eval scale of both rules
        mean = drop_connect_linear(
            x, self.weight, self.bias, self.p, False, scale=self.scale
        )
        if self.inference == "mean":
            return self._act(mean)
        s, q = train_scale(self.p, self.scale), 1.0 - self.p
        var = q * (1.0 - q) * s**2 * torch.nn.functional.linear(x * x, self.weight**2)
        seed, offset = self.next_stream(2 * self.samples * mean.numel())
        z = normal_noise(
            (self.samples, *mean.shape),
            seed=seed,
            offset=offset,
            dtype=mean.dtype,
            device=mean.device,
        )
        return self._act(mean + var.sqrt() * z).mean(0)

    def weight_scaled_form(self, where: str) -> tuple[torch.nn.Module, float]:
        """Kept as it is in a weight-scaled copy; only the ``"mean"`` inference
        is deterministic."""
        if self.inference != "mean":
            raise ValueError(
                f"weight_scaled cannot make {where!r} deterministic: it is a "
                f"DropConnectLinear with inference={self.inference!r}; use "
                f"inference='mean'."
            )
        return self, 1.0

    def extra_repr(self) -> str:
        parts = [
            f"in_features={self.in_features}",
            f"out_features={self.out_features}",
            f"bias={self.bias is not None}",
            f"p={self.p}",
            f"per_sample={self.per_sample}",
            f"inference={self.inference!r}",
            self.stream_repr(),
        ]
        return ", ".join(filter(None, parts))
