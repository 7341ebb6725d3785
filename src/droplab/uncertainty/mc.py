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
same seed gives the same masks for any ``chunk`` (:mod:`droplab.interop.passes`
keeps the count). Outputs are then identical
bit for bit where the model's arithmetic does not depend on the number of rows
(element-wise layers); after a matrix product they agree to floating-point
rounding, since BLAS may block a product differently for a different number of
rows. The modules' own seeds and
offsets are restored afterwards.

What a droplab module tells ``mc_predict`` is declared on the base of its
dropout modules (``DropoutBase`` in ``droplab._core.base``): the stream
elements a call draws (``replica_elements``) and, to a module that draws once
per batch, that its input holds ``c`` batches (``replicated``).

Any model. The call runs under :func:`droplab.intercept`: a ``torch.nn``
dropout module (``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
``FeatureAlphaDropout``) draws through droplab's function of the same name from
the stream its place would have in the converted model, so ``mc_predict`` on a
model equals ``mc_predict`` on ``droplab.convert(model)`` bit for bit.
Dropout called functionally in a ``forward`` (``F.dropout(h, self.p,
self.training)``) samples too, whatever its ``training`` argument (Monte-Carlo
dropout keeps every dropout on), from the stream numbered after the modules.
So does attention dropout: ``scaled_dot_product_attention`` with
``dropout_p > 0`` runs as its math form with droplab's mask, and so does the
dropout of ``nn.MultiheadAttention`` (:mod:`droplab.interop.attention`), from
that same last stream; attention modules are in training mode, as
``mc_dropout`` leaves every module that keeps no running statistics, so they
pass their rate on.

The statistics are accumulated pass by pass in pass order, in float64, so they
do not depend on the chunking either. The metrics of the classification and
regression literature (Gaussian test log-likelihood, RMSE, NLL, expected
calibration error, Brier score) are in :mod:`droplab.uncertainty.metrics`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from droplab._core.base import Replicable, shared_mask_elements
from droplab._core.modes import sampling_modes
from droplab._core.module import StochasticModule
from droplab._validation import (
    check_bool,
    check_choice,
    check_int,
    check_seed,
    fail,
)
from droplab.interop.intercept import Interception
from droplab.interop.kinds import Kind, kind_of
from droplab.interop.passes import PassStreams
from droplab.rng import draw_seed

__all__ = ["MCPrediction", "mc_predict"]

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


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Site:
    """A dropout site: a droplab module (``kind`` None) or a foreign module of
    the registry; its index in the plan numbers its streams."""

    name: str
    module: torch.nn.Module
    kind: Kind | None


@dataclass(frozen=True)
class _Plan:
    """What :func:`mc_predict` needs to know of the model, from one walk."""

    modules: list[torch.nn.Module]  # every module once, for the sampling modes
    names: dict[int, str]  # module paths by id, for the interception's messages
    sites: list[_Site]  # droplab's and foreign dropout, in registration order
    device: torch.device  # of the first parameter: where droplab twins go


def _plan(model: torch.nn.Module) -> _Plan:
    # Registration order: a foreign module has the index its droplab twin has
    # in convert(model), so both draw the same streams.
    modules: list[torch.nn.Module] = []
    names: dict[int, str] = {}
    sites: list[_Site] = []
    device: torch.device | None = None
    for name, module in model.named_modules():
        modules.append(module)
        names[id(module)] = name
        if device is None:  # model.parameters()'s first, as it orders them
            first = next(module.parameters(recurse=False), None)
            device = None if first is None else first.device
        if isinstance(module, StochasticModule):
            sites.append(_Site(name, module, None))
            continue
        kind = kind_of(module)
        if kind is not None:
            sites.append(_Site(name, module, kind))
    return _Plan(modules, names, sites, device or torch.device("cpu"))


# ---------------------------------------------------------------- pinning


class _Undeclared:
    """The protocol (``Replicable``, which ``DropoutBase`` declares), read the
    base's way, for a :class:`StochasticModule` without it (``ConcreteDropout``,
    ``WeightDropLSTM``, a user's own): its ``mask_elements`` if it has one,
    else one element per element of its input outside its ``shared_dims``."""

    def __init__(self, module: StochasticModule) -> None:
        self.module = module

    def replica_elements(self, x: torch.Tensor) -> int | None:
        own = getattr(self.module, "mask_elements", None)
        if own is not None:
            return int(own(x))
        return shared_mask_elements(x, getattr(self.module, "shared_dims", ()))

    def replicated(self, groups: int) -> int:
        return 1


_Declared = Replicable | _Undeclared


@dataclass
class _DroplabHooks:
    """The hooks that point a droplab module's calls at the pass streams."""

    index: int
    name: str
    declared: _Declared  # the module, as the protocol reads it
    passes: PassStreams
    expected: int = 0  # the offset the call in flight must end at

    def before(self, module: StochasticModule, args: tuple[Any, ...]) -> None:
        elements = self.declared.replica_elements(args[0])
        if elements is None or elements % self.passes.copies:
            # A mask shared along the batch would give every pass of a
            # chunk the same mask: the replicated batch must run along dim 0.
            raise fail(
                "model",
                f"dropout module {self.name!r} sharing its mask along dim 0",
                "dropout modules whose dim 0 is the batch (not shared)",
                owner="mc_predict",
            )
        module.seed, module.offset = self.passes.take(self.index, elements)
        self.expected = module.offset + elements

    def after(self, module: StochasticModule, args: Any, output: Any) -> None:
        # Passes are contiguous blocks of the stream only for modules that
        # draw one element per mask element of their input, row by row.
        if module.offset != self.expected:
            raise fail(
                "model",
                f"a model whose module {self.name!r} ({type(module).__name__}) "
                "does not draw one stream element per element of its input's mask",
                "a model whose stochastic modules are per-row dropout "
                "(droplab.nn.Dropout and its subclasses)",
                owner="mc_predict",
            )


@dataclass
class _ForeignHooks:
    """The hooks that tell the pass streams which foreign module is running,
    so that the torch function it calls draws that module's stream."""

    index: int
    passes: PassStreams

    def enter(self, module: torch.nn.Module, args: Any) -> None:
        self.passes.active = self.index

    def leave(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.passes.active = None


_MISSING = object()


def _swap_forward(module: torch.nn.Module, forward: Any, undo: ExitStack) -> None:
    """Set ``module.forward`` for the block; the one it had comes back."""
    own = module.__dict__.get("forward", _MISSING)

    def restore() -> None:
        if own is _MISSING:
            del module.forward  # the class's forward again
        else:
            module.forward = own

    undo.callback(restore)
    module.forward = forward


def _restore_stream(module: StochasticModule, seed: int | None, offset: int) -> None:
    module.seed, module.offset = seed, offset


def _pin(
    index: int, site: _Site, plan: _Plan, passes: PassStreams, undo: ExitStack
) -> _Declared | None:
    """Point site ``index`` at its pass streams until ``undo`` closes; returns
    the droplab module that draws for it, if any."""
    target = site.module
    if site.kind is not None and site.kind.reach == "bernoulli":
        # Its draw is a bernoulli_ no mode can tell from other code: for the
        # call, its forward is its droplab twin's, on the twin's stream.
        target = site.kind.to_droplab(site.module).to(plan.device)
        # (its bound __call__: a Module value would register a submodule)
        _swap_forward(site.module, target.__call__, undo)
    if not isinstance(target, StochasticModule):  # draws through torch's functions
        foreign = _ForeignHooks(index, passes)
        undo.callback(site.module.register_forward_pre_hook(foreign.enter).remove)
        undo.callback(
            site.module.register_forward_hook(foreign.leave, always_call=True).remove
        )
        return None
    # (a structural check: it holds for any class that has the two methods)
    declared = target if isinstance(target, Replicable) else _Undeclared(target)
    undo.callback(_restore_stream, target, target.seed, target.offset)
    undo.callback(declared.replicated, declared.replicated(1))
    hooks = _DroplabHooks(index, site.name, declared, passes)
    undo.callback(target.register_forward_pre_hook(hooks.before).remove)
    undo.callback(target.register_forward_hook(hooks.after).remove)
    return declared


@contextmanager
def _pinned_streams(plan: _Plan, passes: PassStreams) -> Iterator[list[_Declared]]:
    """Point each dropout site's calls at its pass streams while open.

    droplab's modules get their stream through hooks; foreign modules whose
    forward calls a torch dropout function, and functional dropout, through
    the interception, which draws from ``passes``; foreign modules that draw
    with ``bernoulli_`` (timm's ``DropPath``, torchvision's
    ``StochasticDepth``) run their droplab twin's forward, hooked as droplab's
    modules are. Yields the droplab modules that draw, to which each chunk
    declares its replicated batch. On exit, even after an error, every
    module's seed, offset, declared batch and ``forward`` attribute are as
    before and every hook added here is removed.
    """
    with ExitStack() as undo:
        pinned = [
            _pin(index, site, plan, passes, undo)
            for index, site in enumerate(plan.sites)
        ]
        yield [module for module in pinned if module is not None]


# ---------------------------------------------------------------- the call


@dataclass(frozen=True)
class _Request:
    """mc_predict's arguments, checked."""

    samples: int
    seed: int
    chunk: int
    task: str
    keep_samples: bool
    output: str | Callable[[Any], torch.Tensor] | None
    model_kwargs: Mapping[str, Any]
    strict: bool


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
    request = _checked_request(
        model,
        x,
        samples=samples,
        seed=seed,
        chunk=chunk,
        task=task,
        keep_samples=keep_samples,
        output=output,
        model_kwargs=model_kwargs,
        strict=strict,
    )
    plan = _plan(model)
    passes = PassStreams(request.seed, [site.name for site in plan.sites])
    interception = Interception(
        strict=request.strict, names=plan.names, passes=passes, owner="mc_predict"
    )
    statistics = _Statistics(request)
    with torch.no_grad(), sampling_modes(plan.modules):
        with _pinned_streams(plan, passes) as declared:
            for first, size in _chunks(request.samples, request.chunk):
                passes.start(first, size)
                for module in declared:  # one draw per pass, not per chunk
                    module.replicated(size)
                args, kwargs = _replicated_inputs(x, request.model_kwargs, size)
                with interception:
                    out = model(args, **kwargs)
                statistics.add(out, size, x.shape[0])
    return statistics.result()


def _checked_request(
    model: Any,
    x: Any,
    *,
    samples: Any,
    seed: Any,
    chunk: Any,
    task: Any,
    keep_samples: Any,
    output: Any,
    model_kwargs: Any,
    strict: Any,
) -> _Request:
    """mc_predict's arguments checked, in the order their errors are raised;
    the seed drawn and the chunk picked where they are None."""
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
    if chunk is None:
        chunk = max(1, DEFAULT_MAX_ROWS // max(x.shape[0], 1))
    chunk = min(check_int(chunk, "chunk", low=1, owner="mc_predict"), passes)
    return _Request(
        passes, seed, chunk, task, keep_samples, output, model_kwargs or {}, strict
    )


def _chunks(samples: int, chunk: int) -> Iterator[tuple[int, int]]:
    """``(first pass, passes)`` of each forward call, in pass order."""
    for first in range(0, samples, chunk):
        yield first, min(chunk, samples - first)


class _Statistics:
    """The running statistics of mc_predict, one accumulator per output leaf."""

    def __init__(self, request: _Request) -> None:
        self.request = request
        self.by_path: dict[str, _Accumulator] = {}

    def add(self, out: Any, size: int, batch: int) -> None:
        """The output of a forward call of ``size`` passes over ``batch`` rows."""
        request = self.request
        classify = request.task == "classification"
        for path, leaf in _picked(out, request.output, size * batch, classify).items():
            if path not in self.by_path:
                self.by_path[path] = _Accumulator(
                    request.task, request.samples, request.keep_samples
                )
            self.by_path[path].add(leaf.reshape(size, batch, *leaf.shape[1:]))

    def result(self) -> MCPrediction | dict[str, MCPrediction]:
        """One prediction, or a dict by leaf path when they are of several leaves."""
        seed = self.request.seed
        if list(self.by_path) == [""]:  # the output was a tensor
            return self.by_path[""].result(seed)
        if self.request.output == "all" or len(self.by_path) > 1:
            return {path: acc.result(seed) for path, acc in self.by_path.items()}
        (only,) = self.by_path.values()
        return only.result(seed)


def _replicated_inputs(
    x: torch.Tensor, model_kwargs: Mapping[str, Any], size: int
) -> tuple[Any, dict[str, Any]]:
    """The model's input and keyword arguments for ``size`` passes at once."""
    batch = x.shape[0]
    args = _replicated(x, size, batch)
    return args, {key: _replicated(v, size, batch) for key, v in model_kwargs.items()}


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
