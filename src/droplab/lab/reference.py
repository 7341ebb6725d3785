"""A NumPy MLP with hand-written backprop through dropout: the oracle for every backend.

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014.
  https://jmlr.org/papers/v15/srivastava14a.html

The network is ``Linear -> ReLU -> ... -> Linear`` with softmax cross-entropy on
the logits and plain SGD, in float64. Dropout may act on the input (``p_input``)
and on the output of each hidden ReLU (``p``). Masks come from
:func:`droplab.masks.make_mask`, one Philox stream (``seed``) for the whole
network: in a forward pass the sites are visited in order (input first), each
using ``batch * width`` stream elements from the network's current ``offset``,
which then advances. Site ``l`` with seed ``s`` and offset ``o`` therefore drops
the same units as ``droplab.functional.dropout(a, p, seed=s, offset=o)`` would.

Everything a lecture would draw is kept: per-layer activations, the per-sample
masks (one subnetwork per sample, as in Mark Cassar's blog post on dropout), the
per-sample gradient terms of every weight, and their average, the update SGD
applies. A dropped unit outputs exactly 0, so it contributes exactly 0.0 to the
per-sample terms of its outgoing weights, and its error signal is exactly 0, so
also to those of its incoming weights and bias.

Weights use PyTorch's layout, ``(out, in)``, so they load into ``torch.nn.Linear``
unchanged (:meth:`ReferenceMLP.to_torch`, :meth:`ReferenceMLP.from_torch`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from droplab._validation import (
    check_choice,
    check_int,
    check_offset,
    check_probability,
    check_seed,
    fail,
)
from droplab.masks import SAMPLERS, make_mask
from droplab.scaling import SCALES, eval_scale, realized_row_scale, train_scale

__all__ = ["Gradients", "ReferenceMLP", "Trace"]

Array = npt.NDArray[np.float64]
_OWNER = "ReferenceMLP"


@dataclass
class Trace:
    """Everything one forward pass computed (lists are indexed by layer ``l``).

    Attributes:
        activations: ``a_l``, the input of dropout site ``l``: ``a_0`` is the
            network's input, ``a_l = relu(z_l)`` for ``l >= 1``. Shape (batch, n_l).
        masks: per-sample keep mask (True = kept) of site ``l``, or None where no
            dropout acted (rate 0, or evaluation). Shape (batch, n_l).
        scales: per-sample factor applied to kept units of site ``l`` (shape
            (batch, 1); realized scaling differs per sample), or None.
        dropped: ``d_l = a_l * mask * scale``, what linear layer ``l`` reads.
        pre_activations: ``z_{l+1} = d_l @ W_l.T + b_l``; the last one is the logits.
        offsets: the stream offset each site's mask started at, or None.
        training: whether dropout sampled (False: deterministic evaluation).
    """

    activations: list[Array]
    masks: list[npt.NDArray[np.bool_] | None]
    scales: list[Array | None]
    dropped: list[Array]
    pre_activations: list[Array]
    offsets: list[int | None]
    training: bool

    @property
    def logits(self) -> Array:
        """The network's output before the softmax, shape (batch, n_out)."""
        return self.pre_activations[-1]


@dataclass
class Gradients:
    """Per-sample gradient terms and their average (what SGD applies).

    ``per_sample_weights[k][i]`` is d loss_i / d W_l for sample ``i`` alone (its own
    subnetwork); ``weights[k]`` is their mean over the batch, the gradient of the
    mean loss. Shapes: (batch, out, in) and (out, in); biases (batch, out), (out,).
    """

    per_sample_weights: list[Array]
    per_sample_biases: list[Array]
    weights: list[Array]
    biases: list[Array]
    losses: Array  # (batch,) cross-entropy of each sample under its own mask

    @property
    def loss(self) -> float:
        """The mean loss of the batch."""
        return float(self.losses.mean())


def _error(name: str, value: Any, allowed: str, kind: type = ValueError) -> Exception:
    return fail(name, value, allowed, owner=_OWNER, kind=kind)


def _softmax(logits: Array) -> Array:
    shifted = logits - logits.max(axis=1, keepdims=True)  # no overflow in exp
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _cross_entropy(logits: Array, y: npt.NDArray[np.int64]) -> Array:
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return lse - logits[np.arange(len(y)), y]


@dataclass
class ReferenceMLP:
    """A float64 MLP with dropout, hand-written forward and backward, and SGD.

    Args:
        widths: layer widths ``(n_in, hidden..., n_out)``; at least two entries.
        p: drop probability (*not* keep probability) after each hidden ReLU: one
            float for all hidden layers or one per hidden layer (0 = no dropout).
        seed: the Philox stream of the masks, also the seed of the initial weights.
        offset: the first stream element the next forward pass uses; it advances.
        scale: rule for kept units, one of ``droplab.scaling.SCALES``.
        sampler: ``"bernoulli"`` or ``"fixed"`` (exact count per sample).
        p_input: drop probability on the network's input (default 0).
        weights: per layer, ``(out, in)`` arrays; drawn U(-1/sqrt(in), 1/sqrt(in))
            like ``torch.nn.Linear`` when not given.
        biases: per layer, ``(out,)`` arrays; drawn like the weights when not given.

    Examples:
        The blog's network: 3 inputs, 4 hidden units, here 2 classes; a batch of 3.

        >>> net = ReferenceMLP((3, 4, 2), p=0.5, seed=7)
        >>> x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [-1.0, 0.0, 1.0]])
        >>> trace = net.forward(x)
        >>> trace.masks[1].astype(int)  # one subnetwork per sample (1 = kept)
        array([[0, 0, 1, 1],
               [1, 0, 1, 0],
               [1, 1, 0, 0]])
        >>> grads = net.backward(trace, np.array([0, 1, 0]))
        >>> grads.per_sample_weights[1].shape  # (batch, out, in) for W_1
        (3, 2, 4)
        >>> (grads.per_sample_weights[1] != 0).any(axis=1).astype(int)  # from unit j
        array([[0, 0, 1, 0],
               [0, 0, 1, 0],
               [0, 1, 0, 0]])

        Dropped units give exactly zero terms; so do kept units whose ReLU is off
        (sample 0's unit 3, sample 1's unit 0).
    """

    widths: Sequence[int]
    p: float | Sequence[float] = 0.5
    seed: int = 0
    offset: int = 0
    scale: str = "inverted"
    sampler: str = "bernoulli"
    p_input: float = 0.0
    weights: list[Array] = field(default_factory=list, repr=False)
    biases: list[Array] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.widths, (str, bytes)) or not isinstance(
            self.widths, Sequence
        ):
            raise _error(
                "widths", self.widths, "a sequence of positive integers", kind=TypeError
            )
        self.widths = tuple(
            check_int(w, "widths", low=1, owner=_OWNER) for w in self.widths
        )
        if len(self.widths) < 2:
            raise _error("widths", self.widths, "at least (n_in, n_out)")
        hidden = len(self.widths) - 2
        if not isinstance(self.p, Sequence) or isinstance(self.p, str):
            hidden_p = (check_probability(self.p, owner=_OWNER),) * hidden
        else:
            hidden_p = tuple(check_probability(q, owner=_OWNER) for q in self.p)
            if len(hidden_p) != hidden:
                raise _error(
                    "p",
                    self.p,
                    f"a float, or a sequence of {hidden} (one per hidden layer)",
                )
        self.rates: tuple[float, ...] = (
            check_probability(self.p_input, "p_input", owner=_OWNER),
            *hidden_p,
        )
        self.seed = check_seed(self.seed, owner=_OWNER)
        self.offset = check_offset(self.offset, owner=_OWNER)
        self.scale = check_choice(self.scale, "scale", SCALES, owner=_OWNER)
        self.sampler = check_choice(self.sampler, "sampler", SAMPLERS, owner=_OWNER)
        shapes = list(zip(self.widths[1:], self.widths[:-1], strict=False))
        if not self.weights and not self.biases:
            rng = np.random.default_rng(self.seed)
            for out, inp in shapes:
                bound = 1.0 / np.sqrt(inp)
                self.weights.append(rng.uniform(-bound, bound, (out, inp)))
                self.biases.append(rng.uniform(-bound, bound, out))
        self.weights = [np.array(w, dtype=np.float64) for w in self.weights]
        self.biases = [np.array(b, dtype=np.float64) for b in self.biases]
        got = [w.shape for w in self.weights], [b.shape for b in self.biases]
        if got != (shapes, [(out,) for out, _ in shapes]):
            raise _error("weights", got, f"weight shapes {shapes} and matching biases")

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        x: npt.ArrayLike,
        *,
        training: bool = True,
        masks: Sequence[npt.ArrayLike | None] | None = None,
    ) -> Trace:
        """Run the network and keep every intermediate (see :class:`Trace`).

        Args:
            x: inputs, shape (batch, n_in).
            training: sample dropout (True) or evaluate deterministically (False:
                ``classic`` multiplies each dropout site by ``1 - p``).
            masks: optional explicit keep masks, one per site (None for no dropout
                there); the stream is then neither used nor advanced.

        Returns:
            The :class:`Trace`; with ``training`` and no ``masks``, ``self.offset``
            has advanced past the elements used.
        """
        a = self._check_x(x)
        batch = a.shape[0]
        if masks is not None and len(masks) != len(self.rates):
            raise _error(
                "masks",
                f"{len(masks)} masks",
                f"{len(self.rates)} masks (one per site; None where no dropout)",
            )
        trace = Trace([], [], [], [], [], [], training)
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            rate, width = self.rates[k], self.widths[k]
            mask, factor, start = None, None, None
            if training and masks is not None and masks[k] is not None:
                mask = np.asarray(masks[k], dtype=bool)
                if mask.shape != (batch, width):
                    raise _error(
                        "masks",
                        f"mask of shape {mask.shape} at site {k}",
                        f"shape {(batch, width)}",
                    )
            elif training and masks is None and rate > 0.0:
                start = self.offset
                mask = make_mask(
                    (batch, width),
                    rate,
                    seed=self.seed,
                    offset=start,
                    sampler=self.sampler,
                )
                self.offset += batch * width
            if mask is not None:
                factor = self._train_factor(mask, rate)
                d = a * mask * factor
            elif not training and rate > 0.0:
                d = a * eval_scale(rate, self.scale)
            else:
                d = a
            z = d @ weight.T + bias
            trace.activations.append(a)
            trace.masks.append(mask)
            trace.scales.append(factor)
            trace.dropped.append(d)
            trace.pre_activations.append(z)
            trace.offsets.append(start)
            a = np.maximum(z, 0.0)
        return trace

    def _train_factor(self, mask: npt.NDArray[np.bool_], rate: float) -> Array:
        if self.scale == "realized":
            kept = mask.sum(axis=1)
            return realized_row_scale(kept, mask.shape[1])[:, None]
        return np.full((mask.shape[0], 1), train_scale(rate, self.scale))

    # --------------------------------------------------------------- backward
    def backward(self, trace: Trace, y: npt.ArrayLike) -> Gradients:
        """Backpropagate softmax cross-entropy through the masks of ``trace``.

        Each sample is differentiated on its own subnetwork, giving per-sample
        terms; their mean is the gradient of the mean loss.

        Args:
            trace: the result of :meth:`forward` on the same weights.
            y: integer class labels, shape (batch,).
        """
        labels = self._check_y(y, trace.logits.shape[0])
        batch = len(labels)
        delta = _softmax(trace.logits)  # d loss_i / d logits_i, per sample
        delta[np.arange(batch), labels] -= 1.0
        per_w: list[Array] = []
        per_b: list[Array] = []
        for k in reversed(range(len(self.weights))):
            per_w.append(delta[:, :, None] * trace.dropped[k][:, None, :])  # (B,o,i)
            per_b.append(delta.copy())
            if k == 0:
                break
            grad = delta @ self.weights[k]  # d loss_i / d d_l
            mask, factor = trace.masks[k], trace.scales[k]
            if mask is not None and factor is not None:
                grad = grad * mask * factor  # a dropped unit passes back exactly 0
            elif not trace.training and self.rates[k] > 0.0:
                grad = grad * eval_scale(self.rates[k], self.scale)
            delta = grad * (trace.pre_activations[k - 1] > 0.0)  # ReLU'
        per_w.reverse()
        per_b.reverse()
        return Gradients(
            per_w,
            per_b,
            [g.mean(axis=0) for g in per_w],
            [g.mean(axis=0) for g in per_b],
            _cross_entropy(trace.logits, labels),
        )

    def step(self, x: npt.ArrayLike, y: npt.ArrayLike, lr: float) -> Gradients:
        """One SGD step on a mini-batch: forward (fresh masks), backward, update.

        Every weight moves by ``-lr`` times the mean of its per-sample terms.
        Returns the gradients used (their ``loss`` is the loss before the step).
        """
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
            raise _error("lr", lr, "a positive real number")
        grads = self.backward(self.forward(x), y)
        for k in range(len(self.weights)):
            self.weights[k] -= lr * grads.weights[k]
            self.biases[k] -= lr * grads.biases[k]
        return grads

    # ------------------------------------------------------------- evaluation
    def predict_proba(self, x: npt.ArrayLike) -> Array:
        """Class probabilities of the deterministic (evaluation) network."""
        return _softmax(self.forward(x, training=False).logits)

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Most likely class of each input under the evaluation network."""
        return self.predict_proba(x).argmax(axis=1)

    def evaluate(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of the evaluation network."""
        logits = self.forward(x, training=False).logits
        labels = self._check_y(y, logits.shape[0])
        loss = float(_cross_entropy(logits, labels).mean())
        return loss, float((logits.argmax(axis=1) == labels).mean())

    # ------------------------------------------------------------------ torch
    def to_torch(self) -> Any:
        """The same network as a float64 ``torch.nn.Sequential`` of Linear/ReLU.

        Dropout is left out on purpose: apply the reference's masks explicitly
        (``a * mask * scale``) or insert droplab's dropout modules.
        """
        import torch

        layers: list[torch.nn.Module] = []
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if k:
                layers.append(torch.nn.ReLU())
            linear = torch.nn.Linear(
                weight.shape[1], weight.shape[0], dtype=torch.float64
            )
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weight))
                linear.bias.copy_(torch.from_numpy(bias))
            layers.append(linear)
        return torch.nn.Sequential(*layers)

    @classmethod
    def from_torch(cls, model: Any, **kwargs: Any) -> ReferenceMLP:
        """Copy the Linear weights of a ``Sequential`` of Linear/ReLU/Dropout.

        Dropout modules (``torch.nn.Dropout`` or droplab's) set the rate of the
        site they act on (a Dropout just before a ReLU is equivalent to one
        just after, since ReLU commutes with a non-negative factor); droplab's
        modules also set ``scale`` and ``sampler`` unless given. Other keyword
        arguments (seed, offset, scale, sampler) go to the constructor.
        """
        linears = [m for m in model if type(m).__name__ == "Linear"]
        if not linears or len(linears) + sum(
            type(m).__name__ in ("ReLU", "Dropout") for m in model
        ) != len(model):
            raise _error(
                "model",
                type(model).__name__,
                "a Sequential of Linear, ReLU and Dropout modules",
                kind=TypeError,
            )
        rates = [0.0] * (len(linears) + 1)
        seen = 0
        for m in model:
            seen += type(m).__name__ == "Linear"
            if type(m).__name__ == "Dropout":
                rates[seen] = float(m.p)  # the site read by the next Linear
                for name in ("scale", "sampler"):  # droplab's modules carry these
                    if isinstance(getattr(m, name, None), str):
                        kwargs.setdefault(name, getattr(m, name))
        if rates[-1] > 0.0:
            raise _error(
                "model",
                "a Dropout after the last Linear",
                "dropout before a Linear only",
            )
        widths = (linears[0].in_features, *(m.out_features for m in linears))
        return cls(
            widths,
            p=rates[1:-1],
            p_input=rates[0],
            weights=[m.weight.detach().double().numpy() for m in linears],
            biases=[m.bias.detach().double().numpy() for m in linears],
            **kwargs,
        )

    # ------------------------------------------------------------- validation
    def _check_x(self, x: npt.ArrayLike) -> Array:
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.widths[0]:
            raise _error(
                "x",
                f"array of shape {a.shape}",
                f"an array of shape (batch, {self.widths[0]})",
            )
        return a

    def _check_y(self, y: npt.ArrayLike, batch: int) -> npt.NDArray[np.int64]:
        labels = np.asarray(y)
        n_out = self.widths[-1]
        if labels.dtype.kind not in "iu":
            raise _error("y", y, "integer class labels", kind=TypeError)
        if labels.shape != (batch,) or labels.min() < 0 or labels.max() >= n_out:
            raise _error("y", y, f"{batch} labels in [0, {n_out})")
        return labels.astype(np.int64)
