"""Monte-Carlo dropout: predictive statistics from T stochastic forward passes.

Paper: Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
Uncertainty in Deep Learning", ICML 2016, https://arxiv.org/abs/1506.02142.

Keeping dropout on at prediction time and averaging ``T`` stochastic passes
approximates the Bayesian model average of a network trained with dropout.
:func:`mc_predict` does that in one call: the batch is replicated ``c`` times
and ``c`` passes run in a single forward call (chunked to a memory budget), with
dropout sampling on (``droplab.mc_dropout``) and every other module in eval mode.

Reproducibility. Every droplab dropout module owns a Philox stream
``(seed, offset)``. For the duration of the call, the ``k``-th call of the
``m``-th dropout module in a forward pass draws from the stream whose seed is
:func:`droplab.rng.stream_seed` ``(seed, m, k)``, and pass ``t`` uses the elements
``t * E .. (t + 1) * E`` of it, ``E`` being the mask elements of one pass. The
mask of a replicated batch of ``c * B`` rows at offset ``o`` covers the elements
``o .. o + c * E`` row by row, so setting ``o = t0 * E`` for the chunk that starts
at pass ``t0`` gives pass ``t`` the same mask whatever chunk it falls in: the
same seed gives the same masks for any ``chunk``. Outputs are then identical
bit for bit where the model's arithmetic does not depend on the number of rows
(element-wise layers); after a matrix product they agree to floating-point
rounding, since BLAS may block a product differently for a different number of
rows. The modules' own seeds and
offsets are restored afterwards.

Any model. The call runs under :func:`droplab.intercept`: a ``torch.nn``
dropout module (``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
``FeatureAlphaDropout``) draws through droplab's function of the same name from
the stream its place would have in the converted model, so ``mc_predict`` on a
model equals ``mc_predict`` on ``droplab.convert(model)`` bit for bit.
Dropout called functionally in a ``forward`` (``F.dropout(h, self.p,
self.training)``) samples too, whatever its ``training`` argument (Monte-Carlo
dropout keeps every dropout on), from the stream numbered after the modules.
Attention dropout drawn inside ``scaled_dot_product_attention`` cannot be
replayed: such a call with ``dropout_p > 0`` is an error (attention modules in
eval mode, as ``mc_dropout`` leaves them, pass 0).

The statistics are accumulated pass by pass in pass order, in float64, so they
do not depend on the chunking either. The metrics of the classification and
regression literature (Gaussian test log-likelihood, RMSE, NLL, expected
calibration error, Brier score) are in :mod:`droplab.uncertainty.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from droplab import masks
from droplab._core.modes import TORCH_DROPOUTS, mc_dropout
from droplab._core.module import StochasticModule
from droplab._validation import (
    check_choice,
    check_int,
    check_seed,
    check_shared_dims,
    fail,
)
from droplab.interop.convert import is_timm_drop_path
from droplab.interop.intercept import Interception
from droplab.rng import draw_seed, stream_seed
from droplab.variants import drop_path

__all__ = ["MCPrediction", "dropout_modules", "mc_predict"]

TASKS = ("regression", "classification")

# Rows of the replicated batch per forward call when ``chunk`` is not given:
# large enough to amortise Python overhead, small enough that the masks and
# activations of one call stay in cache for small networks.
DEFAULT_MAX_ROWS = 8192


@dataclass(frozen=True)
class MCPrediction:
    """What :func:`mc_predict` returns. Tensors are float64 on the input's device.

    Attributes:
        mean: (B, *out) mean over the T passes of the output (regression) or of
            the softmax probabilities (classification): the predictive mean.
        variance: (B, *out) variance over the passes (divided by T, not T - 1).
        samples: (T, B, *out) every pass (outputs, or probabilities for
            classification) when ``keep_samples=True``, else None.
        entropy: (B,) predictive entropy ``H[mean p]`` in nats (classification).
        mutual_information: (B,) BALD, ``H[mean p] - mean_t H[p_t]`` (classification).
        variation_ratio: (B,) ``1 - f / T`` with ``f`` the number of passes whose
            arg-max is the most frequent class (classification).
        seed: the seed the streams were derived from (replays the call).
    """

    mean: torch.Tensor
    variance: torch.Tensor
    samples: torch.Tensor | None
    entropy: torch.Tensor | None
    mutual_information: torch.Tensor | None
    variation_ratio: torch.Tensor | None
    seed: int


def dropout_modules(model: torch.nn.Module) -> list[tuple[str, StochasticModule]]:
    """The droplab dropout modules of ``model``, in registration order, by name."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, StochasticModule)
    ]


def _dropout_sites(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    # droplab's modules and torch's, in registration order: a torch module has
    # the index its droplab twin has in droplab.convert(model).
    # timm's DropPath too (its forward calls no torch dropout function: its
    # draw is replaced while mc_predict runs, see _pinned_streams).
    kinds: tuple[type[torch.nn.Module], ...] = (StochasticModule, *TORCH_DROPOUTS)
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, kinds) or is_timm_drop_path(module)
    ]


@dataclass
class _Chunk:
    """The chunk in flight, read by the hooks: its first pass and size, the
    number of calls each module (and, last, functional dropout) has had in this
    forward pass, and the torch dropout module being called, if any."""

    first_pass: int
    size: int
    calls: list[int]
    active: int | None = None


@contextmanager
def _pinned_streams(
    sites: list[tuple[str, torch.nn.Module]], seed: int
) -> Iterator[tuple[_Chunk, Interception]]:
    """Point each module call at its derived stream while the context is open.

    droplab's modules get their stream through hooks; torch's dropout modules
    and functional dropout through the yielded interception, which the caller
    enters around each forward call after updating the yielded :class:`_Chunk`.
    The modules' seeds and offsets are restored on exit, even after an error.
    """
    modules = [(i, name, m) for i, (name, m) in enumerate(sites)]
    ours = [(i, n, m) for i, n, m in modules if isinstance(m, StochasticModule)]
    chunk = _Chunk(0, 1, [0] * (len(sites) + 1))
    saved = [(module, module.seed, module.offset) for _, _, module in ours]
    handles = []

    def stream(elements: int) -> tuple[int, int]:
        # A torch dropout module's call, or functional dropout (index len(sites)).
        index = len(sites) if chunk.active is None else chunk.active
        if elements % chunk.size:
            where = "functional dropout" if chunk.active is None else sites[index][0]
            raise fail(
                "model",
                f"dropout ({where!r}) whose input does not hold the batch along dim 0",
                "dropout applied to tensors whose dim 0 is the batch",
                owner="mc_predict",
            )
        drawn = stream_seed(seed, index, chunk.calls[index])
        chunk.calls[index] += 1
        return drawn, chunk.first_pass * (elements // chunk.size)

    def enter(index: int) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            chunk.active = index

        return hook

    def leave(module: torch.nn.Module, args: Any, output: Any) -> None:
        chunk.active = None

    def make_hook(index: int, name: str) -> Any:
        def hook(module: StochasticModule, args: tuple[Any, ...]) -> None:
            x = args[0]
            own = getattr(module, "mask_elements", None)
            if own is not None:  # channel dropout, DropPath: one draw per (N, C) / N
                shared: tuple[int, ...] = ()
                elements = own(x)
            else:
                shared = check_shared_dims(getattr(module, "shared_dims", ()), x.dim())
                elements = math.prod(masks.mask_shape(x.shape, shared))
            if 0 in shared or elements % chunk.size:
                # A mask shared along the batch would give every pass of a
                # chunk the same mask: the replicated batch must run along dim 0.
                raise fail(
                    "model",
                    f"dropout module {name!r} sharing its mask along dim 0",
                    "dropout modules whose dim 0 is the batch (not shared)",
                    owner="mc_predict",
                )
            module.seed = stream_seed(seed, index, chunk.calls[index])
            module.offset = chunk.first_pass * (elements // chunk.size)
            chunk.calls[index] += 1
            expected[index] = module.offset + elements

        return hook

    def make_check(index: int, name: str) -> Any:
        def check(module: StochasticModule, args: Any, output: Any) -> None:
            # Passes are contiguous blocks of the stream only for modules that
            # draw one element per mask element of their input, row by row.
            if module.offset != expected[index]:
                raise fail(
                    "model",
                    f"a model whose module {name!r} ({type(module).__name__}) "
                    "does not draw one stream element per element of its input's mask",
                    "a model whose stochastic modules are per-row dropout "
                    "(droplab.nn.Dropout and its subclasses)",
                    owner="mc_predict",
                )

        return check

    def timm_drop_path(index: int, module: torch.nn.Module) -> Any:
        # timm's DropPath draws with bernoulli_ on a new tensor, which no mode
        # can tell from other code: while the context is open its forward is
        # droplab's drop_path on the stream its converted twin would get.
        scale = "inverted" if getattr(module, "scale_by_keep", True) else "none"
        p = float(getattr(module, "drop_prob", 0.0))

        def forward(x: torch.Tensor) -> torch.Tensor:
            chunk.active = index
            try:
                drawn, offset = stream(int(x.shape[0]))
            finally:
                chunk.active = None
            return drop_path(x, p, True, seed=drawn, offset=offset, scale=scale)

        return forward

    expected = [0] * len(sites)
    patched = []
    for index, name, module in modules:
        if is_timm_drop_path(module):
            module.forward = timm_drop_path(index, module)
            patched.append(module)
        elif isinstance(module, StochasticModule):
            handles.append(module.register_forward_pre_hook(make_hook(index, name)))
            handles.append(module.register_forward_hook(make_check(index, name)))
        else:
            handles.append(module.register_forward_pre_hook(enter(index)))
            handles.append(module.register_forward_hook(leave))
    interception = Interception(attention="error", sample_all=True, streams=stream)
    try:
        yield chunk, interception
    finally:
        for handle in handles:
            handle.remove()
        for module in patched:
            del module.forward  # the class's forward again
        for stochastic, old_seed, old_offset in saved:
            stochastic.seed = old_seed
            stochastic.offset = old_offset


def mc_predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    samples: int = 100,
    seed: int | None = None,
    chunk: int | None = None,
    task: str = "regression",
    keep_samples: bool = False,
) -> MCPrediction:
    """Monte-Carlo dropout prediction: ``samples`` stochastic passes of ``model``.

    Args:
        model: a module that maps a batch to a batch row by row (dim 0 is the
            batch), with droplab's or torch's dropout modules, or functional
            dropout in its ``forward`` (see the module's docstring).
            Dropout is switched on and everything else set to eval for the call
            (``droplab.mc_dropout``);
            every module's mode, seed and offset are restored afterwards.
        x: (B, ...) input batch.
        samples: T, the number of stochastic passes.
        seed: the seed the dropout streams are derived from; the same seed gives
            the same result for any ``chunk``. None draws one from torch's
            default generator (so ``torch.manual_seed`` reproduces the call).
        chunk: passes per forward call (the batch is replicated ``chunk`` times);
            None picks ``max(1, 8192 // B)``, capped at ``samples``.
        task: ``"regression"`` (statistics of the raw outputs) or
            ``"classification"`` (outputs are logits over the last dim; the
            statistics are of their softmax, plus entropy, BALD, variation ratio).
        keep_samples: also return every pass, shape (T, B, *out).

    Returns:
        An :class:`MCPrediction`.

    Shape:
        x: (B, ...); mean, variance: (B, *out); samples: (T, B, *out).

    Examples:
        >>> import droplab.nn
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), droplab.nn.Dropout(0.5),
        ...                           torch.nn.Linear(8, 1))
        >>> x = torch.randn(4, 3)
        >>> a = mc_predict(net, x, samples=30, seed=7, chunk=30)
        >>> b = mc_predict(net, x, samples=30, seed=7, chunk=4)
        >>> a.mean.shape, bool(torch.allclose(a.mean, b.mean, rtol=0, atol=1e-12))
        (torch.Size([4, 1]), True)
    """
    if not isinstance(model, torch.nn.Module):
        raise fail(
            "model", model, "a torch.nn.Module", owner="mc_predict", kind=TypeError
        )
    if not isinstance(x, torch.Tensor):
        raise fail("x", x, "a torch.Tensor", owner="mc_predict", kind=TypeError)
    if x.dim() == 0:
        raise fail(
            "x", "a 0-d tensor", "a batch with dim 0 as the batch", owner="mc_predict"
        )
    passes = check_int(samples, "samples", low=1, owner="mc_predict")
    task = check_choice(task, "task", TASKS, owner="mc_predict")
    if seed is None:
        seed = draw_seed()
    seed = check_seed(seed, owner="mc_predict")
    batch = x.shape[0]
    if chunk is None:
        chunk = max(1, DEFAULT_MAX_ROWS // max(batch, 1))
    chunk = min(check_int(chunk, "chunk", low=1, owner="mc_predict"), passes)

    sites = _dropout_sites(model)
    acc = _Accumulator(task, passes, keep_samples)
    reps = (1,) * (x.dim() - 1)
    with torch.no_grad(), mc_dropout(model):
        with _pinned_streams(sites, seed) as (state, interception):
            start = 0
            while start < passes:
                size = min(chunk, passes - start)
                state.first_pass, state.size = start, size
                state.calls = [0] * (len(sites) + 1)
                with interception:
                    out = model(x.repeat(size, *reps) if size > 1 else x)
                acc.add(out.reshape(size, batch, *out.shape[1:]))
                start += size
    return acc.result(seed)


class _Accumulator:
    """Running float64 statistics, updated one pass at a time in pass order
    (Welford's mean and variance), so they do not depend on the chunking."""

    def __init__(self, task: str, passes: int, keep: bool) -> None:
        self.task, self.passes, self.keep = task, passes, keep
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None  # sum of squared deviations
        self.entropy_sum: torch.Tensor | None = None
        self.votes: torch.Tensor | None = None
        self.kept: list[torch.Tensor] = []

    def add(self, outputs: torch.Tensor) -> None:  # (c, B, *out)
        values = outputs.to(torch.float64)
        if self.task == "classification":
            values = torch.softmax(values, dim=-1)
        for value in values:  # (B, *out), one pass
            self.count += 1
            if self.mean is None or self.squares is None:
                self.mean = value.clone()
                self.squares = torch.zeros_like(value)
            else:
                delta = value - self.mean
                self.mean += delta / self.count
                self.squares += delta * (value - self.mean)
            if self.task == "classification":
                entropy = _entropy(value)
                votes = torch.nn.functional.one_hot(value.argmax(-1), value.shape[-1])
                if self.entropy_sum is None or self.votes is None:
                    self.entropy_sum = torch.zeros_like(entropy)
                    self.votes = torch.zeros_like(votes)
                self.entropy_sum += entropy
                self.votes += votes
        if self.keep:
            self.kept.append(values)

    def result(self, seed: int) -> MCPrediction:
        if self.mean is None or self.squares is None:  # pragma: no cover
            raise RuntimeError("no passes were run")
        variance = self.squares / self.count
        samples = torch.cat(self.kept) if self.keep else None
        entropy = mutual = ratio = None
        if self.entropy_sum is not None and self.votes is not None:
            entropy = _entropy(self.mean)
            mutual = (entropy - self.entropy_sum / self.count).clamp_min(0.0)
            ratio = 1.0 - self.votes.max(-1).values.to(torch.float64) / self.count
        return MCPrediction(self.mean, variance, samples, entropy, mutual, ratio, seed)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last dim, with 0 log 0 = 0."""
    logs = torch.log(torch.where(probs > 0, probs, torch.ones_like(probs)))
    return -(probs * logs).sum(-1)
