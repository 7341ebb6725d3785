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

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from droplab import masks
from droplab._core.modes import mc_dropout
from droplab._core.module import StochasticModule
from droplab._validation import (
    check_bool,
    check_choice,
    check_int,
    check_seed,
    check_shared_dims,
    fail,
)
from droplab.interop.intercept import Interception
from droplab.interop.kinds import kind_of
from droplab.rng import draw_seed, stream_seed
from droplab.variants import DropPath

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
    # droplab's modules and the registry's foreign ones, in registration order:
    # a foreign module has the index its droplab twin has in convert(model).
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, StochasticModule) or kind_of(module) is not None
    ]


@dataclass
class _Chunk:
    """The chunk in flight, read by the hooks: its first pass and size, the
    number of calls each module (and, last, functional dropout) has had in this
    forward pass, and the foreign dropout module being called, if any."""

    first_pass: int
    size: int
    calls: list[int]
    active: int | None = None


_MISSING = object()


def _device_of(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


# Added to the message naming an unreplayed draw when passes run chunked.
_SHARED_DRAW = (
    "; with chunk > 1 the passes of a chunk run as one batch and share such a "
    "draw: a per-pass draw (layerdrop, stochastic depth by torch.rand) is then "
    "the same for every pass of the chunk, and the variance between passes it "
    "should add collapses (to exactly 0 where it is the only randomness); pass "
    "chunk=1 to draw it once per pass"
)


@contextmanager
def _pinned_streams(
    model: torch.nn.Module,
    sites: list[tuple[str, torch.nn.Module]],
    seed: int,
    strict: bool,
) -> Iterator[tuple[_Chunk, Interception]]:
    """Point each module call at its derived stream while the context is open.

    droplab's modules get their stream through hooks; foreign modules whose
    forward calls a torch dropout function, and functional dropout, through the
    yielded interception, which the caller enters around each forward call
    after updating the yielded :class:`_Chunk`; foreign modules that draw with
    ``bernoulli_`` (timm's ``DropPath``, torchvision's ``StochasticDepth``)
    run their droplab twin's forward, hooked as droplab's modules are. On exit,
    even after an error, every module's seed, offset and ``forward`` attribute
    are as before and every hook added here is removed.
    """
    chunk = _Chunk(0, 1, [0] * (len(sites) + 1))

    def stream(elements: int) -> tuple[int, int]:
        # A foreign module's call, or functional dropout (index len(sites)).
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
            if isinstance(module, DropPath) and module.mode == "batch":
                module.replicated(chunk.size)  # one draw per pass, not per chunk
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

    expected = [0] * len(sites)
    handles: list[Any] = []
    forwards: list[tuple[torch.nn.Module, Any]] = []
    saved: list[tuple[StochasticModule, int | None, int, int | None]] = []
    try:
        for index, (name, module) in enumerate(sites):
            kind = None if isinstance(module, StochasticModule) else kind_of(module)
            target = module
            if kind is not None and kind.reach == "bernoulli":
                # Its draw is a bernoulli_ no mode can tell from other code: for
                # the call, its forward is its droplab twin's, on the twin's stream.
                target = kind.to_droplab(module).to(_device_of(model))
                forwards.append((module, module.__dict__.get("forward", _MISSING)))
                # (its bound __call__: a Module value would register a submodule)
                module.forward = target.__call__
            if isinstance(target, StochasticModule):
                saved.append(
                    (
                        target,
                        target.seed,
                        target.offset,
                        getattr(target, "_groups", None),
                    )
                )
                handles.append(target.register_forward_pre_hook(make_hook(index, name)))
                handles.append(target.register_forward_hook(make_check(index, name)))
            else:
                handles.append(module.register_forward_pre_hook(enter(index)))
                handles.append(module.register_forward_hook(leave, always_call=True))
        interception = Interception(
            sample_all=True,
            streams=stream,
            strict=strict,
            model=model,
            owner="mc_predict",
            advice=lambda: _SHARED_DRAW if chunk.size > 1 else "",
        )
        yield chunk, interception
    finally:
        for handle in handles:
            handle.remove()
        for module, forward in forwards:
            if forward is _MISSING:
                del module.forward  # the class's forward again
            else:
                module.forward = forward
        for target, old_seed, old_offset, groups in saved:
            target.seed = old_seed
            target.offset = old_offset
            if isinstance(target, DropPath) and groups is not None:
                target.replicated(groups)


def mc_predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    samples: int = 100,
    seed: int | None = None,
    chunk: int | None = None,
    task: str = "regression",
    keep_samples: bool = False,
    output: str | Callable[[Any], torch.Tensor] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Any:
    """Monte-Carlo dropout prediction: ``samples`` stochastic passes of ``model``.

    Args:
        model: a module that maps a batch to a batch row by row (dim 0 is the
            batch): any model with droplab's or foreign dropout modules,
            functional or attention dropout, stochastic depth (see the
            module's docstring and docs/mc-any-model.md). For the call,
            :func:`droplab.mc_dropout` puts every module in training mode
            except those that keep running statistics; afterwards every
            module's mode, seed, offset, hooks and ``forward`` are as before
            (also when the forward raises).
        x: (B, ...) input batch (floating, or integer token ids).
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
        output: what the statistics are of, when the model returns more than a
            tensor (a tuple, list, dict, dataclass or Hugging Face
            ``ModelOutput``). None: the tensor itself; else the leaf named
            ``"logits"`` if there is one; else the only floating tensor leaf;
            else every floating leaf whose dim 0 is the batch, as with
            ``"all"``. A leaf path such as ``"logits"``, ``"0"`` or
            ``"hidden_states.2"`` picks that leaf; a callable picks what it
            returns from the output; ``"all"`` returns a dict, leaf path ->
            :class:`MCPrediction`, for every floating leaf whose dim 0 is the
            batch.
        model_kwargs: keyword arguments of the model (an ``attention_mask``,
            say); the tensors whose dim 0 is the batch are replicated with
            ``x``, the rest passed as they are.
        strict: a random draw in the forward that droplab does not replay
            (torch's generator, NumPy's global generator, Python's
            ``random``) is an error (by default it is named in a
            ``UserWarning``, which says what chunking does to it).

    Returns:
        An :class:`MCPrediction`, or a dict of them by leaf path when the
        statistics are of several leaves (``output="all"``, or a structured
        output without ``logits`` and with several floating leaves).

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
    strict = check_bool(strict, "strict", owner="mc_predict")
    keep_samples = check_bool(keep_samples, "keep_samples", owner="mc_predict")
    if not (output is None or isinstance(output, str) or callable(output)):
        raise fail(
            "output",
            output,
            "None, a leaf path such as 'logits', 'all', or a callable",
            owner="mc_predict",
            kind=TypeError,
        )
    if output == "all" and task != "regression":
        raise fail(
            "task",
            task,
            "'regression' with output='all' (pick one leaf for classification)",
            owner="mc_predict",
        )
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise fail(
            "model_kwargs",
            model_kwargs,
            "a mapping or None",
            owner="mc_predict",
            kind=TypeError,
        )
    if seed is None:
        seed = draw_seed()
    seed = check_seed(seed, owner="mc_predict")
    batch = x.shape[0]
    if chunk is None:
        chunk = max(1, DEFAULT_MAX_ROWS // max(batch, 1))
    chunk = min(check_int(chunk, "chunk", low=1, owner="mc_predict"), passes)

    sites = _dropout_sites(model)
    accumulators: dict[str, _Accumulator] = {}
    with torch.no_grad(), mc_dropout(model):
        with _pinned_streams(model, sites, seed, strict) as (state, interception):
            start = 0
            while start < passes:
                size = min(chunk, passes - start)
                state.first_pass, state.size = start, size
                state.calls = [0] * (len(sites) + 1)
                args = _replicated(x, size, batch)
                kwargs = {
                    key: _replicated(value, size, batch)
                    for key, value in (model_kwargs or {}).items()
                }
                with interception:
                    out = model(args, **kwargs)
                picked = _picked(out, output, size * batch, task == "classification")
                for path, leaf in picked.items():
                    if path not in accumulators:
                        accumulators[path] = _Accumulator(task, passes, keep_samples)
                    accumulators[path].add(leaf.reshape(size, batch, *leaf.shape[1:]))
                start += size
    if list(accumulators) == [""]:  # the output was a tensor
        return accumulators[""].result(seed)
    if output == "all" or len(accumulators) > 1:
        return {path: acc.result(seed) for path, acc in accumulators.items()}
    (only,) = accumulators.values()
    return only.result(seed)


def _replicated(value: Any, size: int, batch: int) -> Any:
    """``value`` repeated ``size`` times along dim 0 if it is a batch tensor."""
    if size == 1 or not isinstance(value, torch.Tensor):
        return value
    if value.dim() == 0 or value.shape[0] != batch:
        return value
    return value.repeat(size, *((1,) * (value.dim() - 1)))


def _leaves(out: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The tensor leaves of a model output, by path (``"logits"``, ``"0"``,
    ``"hidden_states.2"``): tensors, mappings (Hugging Face's ``ModelOutput``
    is one), tuples, lists, named tuples and dataclasses; None values and other
    objects (a key-value cache) have no leaves."""
    if isinstance(out, torch.Tensor):
        yield prefix, out
        return
    items: Iterable[tuple[Any, Any]]
    if isinstance(out, Mapping):
        items = out.items()
    elif isinstance(out, tuple) and hasattr(out, "_fields"):
        items = zip(out._fields, out, strict=True)
    elif isinstance(out, (tuple, list)):
        items = enumerate(out)
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = ((f.name, getattr(out, f.name)) for f in dataclasses.fields(out))
    else:
        return
    for key, value in items:
        yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))


def _picked(
    out: Any, output: Any, rows: int, task_is_classification: bool = False
) -> dict[str, torch.Tensor]:
    """The leaves the statistics are of (see ``output`` in :func:`mc_predict`)."""
    if callable(output) and not isinstance(output, str):
        out, output = output(out), None
    if isinstance(out, torch.Tensor) and output is None:
        return {"": _batch_leaf("output", out, rows)}
    leaves = dict(_leaves(out))
    floating = {k: v for k, v in leaves.items() if v.is_floating_point()}
    if output == "all":
        picked = {k: v for k, v in floating.items() if v.dim() and v.shape[0] == rows}
        if task_is_classification:
            raise fail(
                "task",
                "classification",
                "'regression' for the statistics of every leaf (pick one leaf "
                "with output=, such as the logits)",
                owner="mc_predict",
            )
        if not picked:
            raise _no_leaf(out, leaves, "no floating tensor leaf holds the batch")
        return picked
    if output is None:
        if "logits" in floating:
            output = "logits"
        elif len(floating) == 1:
            (output,) = floating
        else:
            return _picked(out, "all", rows, task_is_classification)
    if output not in leaves:
        raise _no_leaf(out, leaves, f"no leaf is named {output!r}")
    return {output: _batch_leaf(f"output leaf {output!r}", leaves[output], rows)}


def _batch_leaf(what: str, leaf: torch.Tensor, rows: int) -> torch.Tensor:
    if leaf.dim() == 0 or leaf.shape[0] != rows:
        raise fail(
            "model",
            f"a model whose {what} has shape {tuple(leaf.shape)}",
            f"a model whose outputs hold the (replicated) batch along dim 0 "
            f"({rows} rows here)",
            owner="mc_predict",
        )
    return leaf


def _no_leaf(out: Any, leaves: dict[str, torch.Tensor], why: str) -> Exception:
    listing = ", ".join(
        f"{k!r} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}"
        for k, v in leaves.items()
    )
    return fail(
        "output",
        f"a {type(out).__name__} with the tensor leaves [{listing or 'none'}] ({why})",
        "None, a leaf path, 'all' or a callable that picks a tensor",
        owner="mc_predict",
    )


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
