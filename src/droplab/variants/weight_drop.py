"""Weight-dropped LSTM (AWD-LSTM): DropConnect on the recurrent weights.

- Paper: Merity, Keskar and Socher, "Regularizing and optimizing LSTM language
  models", ICLR 2018. https://arxiv.org/abs/1708.02182
- Locked dropout: Gal and Ghahramani, "A theoretically grounded application of
  dropout in recurrent neural networks", NeurIPS 2016.
  https://arxiv.org/abs/1512.05287

The hidden-to-hidden matrices ``weight_hh`` of an LSTM are dropped (DropConnect)
once per forward pass, so one mask holds for every time step of the sequence,
and cuDNN-style fused LSTM code stays usable: the layer is a stack of
single-layer ``torch.nn.LSTM`` modules, each run through
``torch.func.functional_call`` with its ``weight_hh_l0`` replaced by the masked
weight. Inputs, the outputs of every layer but the last, and the final output
get locked dropout (one mask per sequence; AWD-LSTM's ``dropouti``,
``dropouth`` and ``dropouto``).

Stream order in one call (each through the module's ``(seed, offset)``): the
input mask (``N * input_size`` elements), then for each layer its weight mask
(``4 H * H`` elements, the size of ``weight_hh``) followed, except
after the last layer, by the between-layer mask (``N * H``), then the output
mask (``N * H``). The weight mask is drawn with
:func:`droplab.functional.dropout`, so backward regenerates it.
"""

from __future__ import annotations

import warnings
from typing import cast

import torch
from torch import nn

from droplab._core.dropout import dropout
from droplab._core.module import StochasticModule
from droplab._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_int,
    check_probability,
    fail,
)
from droplab.variants.locked import locked_dropout

__all__ = ["WeightDropLSTM"]


class WeightDropLSTM(StochasticModule):
    """An LSTM with dropped recurrent weights and locked dropout between layers.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first: as
            ``torch.nn.LSTM`` (unidirectional, no projections).
        weight_p: probability of dropping each hidden-to-hidden weight, one mask
            per forward pass (AWD-LSTM's ``wdrop``).
        input_p: locked dropout on the input sequence (``dropouti``).
        hidden_p: locked dropout between layers (``dropouth``).
        output_p: locked dropout on the output sequence (``dropouto``).
        scale: ``"inverted"`` (default) or ``"classic"`` for every dropout here.
        seed: the stream (None: a fresh seed per draw).

    Attributes:
        layers: ``nn.ModuleList`` of single-layer ``torch.nn.LSTM``; their
            parameters are the raw (undropped) weights.

    Shape:
        Input ``(T, N, input_size)`` (``(N, T, ...)`` with ``batch_first``) or
        unbatched ``(T, input_size)``; optional ``(h_0, c_0)`` each
        ``(num_layers, N, hidden_size)``. Output as ``torch.nn.LSTM``.

    Examples:
        >>> lstm = WeightDropLSTM(3, 4, num_layers=2, weight_p=0.5, seed=0)
        >>> out, (h, c) = lstm(torch.zeros(5, 2, 3))
        >>> out.shape, h.shape
        (torch.Size([5, 2, 4]), torch.Size([2, 2, 4]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        *,
        weight_p: float = 0.5,
        input_p: float = 0.0,
        hidden_p: float = 0.0,
        output_p: float = 0.0,
        scale: str = "inverted",
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        owner = type(self).__name__
        self.input_size = check_int(input_size, "input_size", low=1, owner=owner)
        self.hidden_size = check_int(hidden_size, "hidden_size", low=1, owner=owner)
        self.num_layers = check_int(num_layers, "num_layers", low=1, owner=owner)
        self.batch_first = check_bool(batch_first, "batch_first", owner=owner)
        self.weight_p = check_probability(weight_p, "weight_p", owner=owner)
        self.input_p = check_probability(input_p, "input_p", owner=owner)
        self.hidden_p = check_probability(hidden_p, "hidden_p", owner=owner)
        self.output_p = check_probability(output_p, "output_p", owner=owner)
        self.scale = check_choice(scale, "scale", ("inverted", "classic"), owner=owner)
        bias = check_bool(bias, "bias", owner=owner)
        self.layers = nn.ModuleList(
            nn.LSTM(
                input_size if i == 0 else hidden_size,
                hidden_size,
                1,
                bias=bias,
                batch_first=batch_first,
            )
            for i in range(num_layers)
        )

    def _locked(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if not self.training:
            return locked_dropout(x, p, False, scale=self.scale)
        batch, features = x.shape[0 if self.batch_first else 1], x.shape[2]
        seed, offset = self.next_stream(batch * features)
        return locked_dropout(
            x,
            p,
            True,
            batch_first=self.batch_first,
            seed=seed,
            offset=offset,
            scale=self.scale,
        )

    def _weight_hh(self, raw: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return dropout(raw, self.weight_p, False, scale=self.scale)
        seed, offset = self.next_stream(raw.numel())
        return dropout(
            raw, self.weight_p, True, seed=seed, offset=offset, scale=self.scale
        )

    def forward(
        self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        owner = type(self).__name__
        x = check_floating_tensor(x, owner=owner)
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise fail(
                "x",
                f"a tensor of shape {tuple(x.shape)}",
                f"a 3-d (or unbatched 2-d) sequence with {self.input_size} "
                f"features in the last dimension",
                owner=owner,
            )
        unbatched = x.ndim == 2
        if unbatched:
            x = x.unsqueeze(1 if not self.batch_first else 0)
            if hx is not None:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        h_n, c_n = [], []
        out = self._locked(x, self.input_p)
        for i, layer in enumerate(self.layers):
            state = None if hx is None else (hx[0][i : i + 1], hx[1][i : i + 1])
            weights = {
                "weight_hh_l0": self._weight_hh(cast(torch.Tensor, layer.weight_hh_l0))
            }
            with warnings.catch_warnings():
                # cuDNN warns that the weights are not one contiguous chunk: the
                # dropped weight_hh is a fresh tensor on every call, by design.
                warnings.filterwarnings(
                    "ignore", message="RNN module weights are not part of single"
                )
                out, (h, c) = torch.func.functional_call(layer, weights, (out, state))
            h_n.append(h)
            c_n.append(c)
            if i < self.num_layers - 1:
                out = self._locked(out, self.hidden_p)
        out = self._locked(out, self.output_p)
        h_all, c_all = torch.cat(h_n), torch.cat(c_n)
        if unbatched:
            out = out.squeeze(1 if not self.batch_first else 0)
            h_all, c_all = h_all.squeeze(1), c_all.squeeze(1)
        return out, (h_all, c_all)

    def extra_repr(self) -> str:
        parts = [
            f"{self.input_size}, {self.hidden_size}",
            f"num_layers={self.num_layers}",
            f"weight_p={self.weight_p}",
            f"input_p={self.input_p}",
            f"hidden_p={self.hidden_p}",
            f"output_p={self.output_p}",
            self.stream_repr(),
        ]
        return ", ".join(filter(None, parts))
