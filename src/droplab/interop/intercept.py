"""Torch's dropout drawing from droplab's contract: :func:`intercept`.

Under ``with droplab.intercept(seed=...)``, a ``TorchFunctionMode`` catches,
wherever they are called (in torch's modules, and in a third-party ``forward``
such as ``F.dropout(attn, self.p, self.training)``):

- the dropout functions of the registry (:mod:`droplab.interop.kinds`):
  ``torch.nn.functional.dropout``, ``dropout1d/2d/3d``, ``alpha_dropout``,
  ``feature_alpha_dropout``, ``torch.dropout``; each is computed by droplab's
  function of the same name;
- attention dropout: ``scaled_dot_product_attention`` with ``dropout_p > 0``
  runs as its math form with droplab's mask (:mod:`droplab.interop.attention`),
  and so does the dropout inside ``F.multi_head_attention_forward``
  (``nn.MultiheadAttention``, both ``need_weights`` paths);
- stochastic depth: the ``bernoulli_`` draw of timm's ``drop_path`` and of
  torchvision's ``stochastic_depth`` is filled from droplab's stream.

Each call takes the next elements of one stream, so the block replays bit for
bit from the seed when the calls come in the same order.

Nothing silent: any other random draw inside the block (``torch.rand*``,
``randn*``, ``randint*``, ``randperm``, ``bernoulli*``, ``normal*``,
``uniform_``, ``exponential_``, ``multinomial``, an RNN's inter-layer dropout,
``rrelu``, ``gumbel_softmax``, ``native_dropout``) comes from torch's generator,
which droplab does not replay: it is named, once per module path, in a
``UserWarning`` (a ``ValueError`` with ``strict=True``). So is a draw from
NumPy's global generator (``np.random.rand``, ``np.random.uniform``, ...; e.g.
the SpecAugment masks of Hugging Face's wav2vec2) or from Python's ``random``:
their states are compared as each module's forward starts and returns, so the
module whose own code drew is named.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from droplab._core.stream import keep_mask
from droplab._validation import check_bool, check_seed, fail
from droplab.distributed import stream_key
from droplab.interop.attention import attention_math, multi_head_attention
from droplab.interop.kinds import FunctionRule, function_rules, random_site
from droplab.interop.passes import PassStreams
from droplab.rng import draw_seed

__all__ = ["RANDOM_FUNCTIONS", "Interception", "intercept"]

_NAMES = ("input", "p", "training", "inplace")
_SDPA_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")


def _random_functions() -> dict[Any, str]:
    names = [
        "rand", "rand_like", "randn", "randn_like", "randint", "randint_like",
        "randperm", "bernoulli", "normal", "poisson", "multinomial",
        "native_dropout", "rrelu", "rrelu_", "binomial",
    ]  # fmt: skip
    methods = [
        "bernoulli", "bernoulli_", "normal_", "uniform_", "random_",
        "exponential_", "geometric_", "cauchy_", "log_normal_", "multinomial",
    ]  # fmt: skip
    table: dict[Any, str] = {}
    for name in names:
        if hasattr(torch, name):
            table[getattr(torch, name)] = f"torch.{name}"
    for name in methods:
        if hasattr(torch.Tensor, name):
            table[getattr(torch.Tensor, name)] = f"Tensor.{name}"
    for name in (
        "rrelu",
        "gumbel_softmax",
        "fractional_max_pool2d",
        "fractional_max_pool3d",
    ):
        table[getattr(F, name)] = f"torch.nn.functional.{name}"
    return table


# The draws of torch's generator that the mode can see, by function.
RANDOM_FUNCTIONS: dict[Any, str] = _random_functions()

# RNN kernels: they draw their inter-layer dropout inside, from torch's generator.
_RNNS = {getattr(torch, name): name for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")}


def _rnn_dropout(args: tuple[Any, ...]) -> float:
    # (input, hx, params, has_biases, num_layers, dropout, train, ...) or, for a
    # packed sequence, (data, batch_sizes, hx, params, has_biases, num_layers,
    # dropout, train, ...): the rate is the float before the train flag.
    for index in (5, 6):
        if len(args) > index + 1 and isinstance(args[index + 1], bool):
            rate, train = args[index], args[index + 1]
            if isinstance(rate, float):
                return rate if train else 0.0
    return 0.0


def _host_states() -> tuple[Any, ...]:
    """The states of NumPy's global generator and of Python's ``random``."""
    numpy = sys.modules.get("numpy")
    state = numpy.random.get_state() if numpy is not None else None
    return (
        None if state is None else (state[0], state[1].tobytes(), *state[2:]),
        random.getstate(),
    )


# What changed between two _host_states(), by position: its name, and how to seed it.
_HOST_GENERATORS = (
    ("numpy.random", "NumPy's global generator", "np.random.seed"),
    ("random", "Python's global random generator", "random.seed"),
)


class _ModulePaths:
    """The module whose forward is running, named, from global module hooks
    installed while an :class:`Interception` is entered; ``on_step`` is called
    as each module's forward starts and returns, while the module whose code
    ran since the previous step is the current one."""

    def __init__(
        self, names: Mapping[int, str], on_step: Callable[[], None] | None = None
    ) -> None:
        self.names = names
        self.stack: list[nn.Module] = []
        self.handles: list[Any] = []
        self.on_step = on_step

    def install(self) -> None:
        hooks = torch.nn.modules.module
        self.stack.clear()
        self.handles = [
            hooks.register_module_forward_pre_hook(self._enter),
            hooks.register_module_forward_hook(self._leave, always_call=True),
        ]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.stack.clear()

    def _enter(self, module: nn.Module, args: Any) -> None:
        if self.on_step is not None:
            self.on_step()  # what the caller's own code did before this call
        self.stack.append(module)

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        try:
            if self.on_step is not None:
                self.on_step()
        finally:
            if self.stack and self.stack[-1] is module:
                self.stack.pop()

    def current(self) -> str:
        """The innermost running module's name in the model (else the chain
        of class names), or ``"<outside any module>"``."""
        if not self.stack:
            return "<outside any module>"
        name = self.names.get(id(self.stack[-1]))
        if name is not None:
            return name or "<root>"
        return ">".join(type(m).__name__ for m in self.stack)


class Interception(TorchFunctionMode):
    """The mode :func:`intercept` returns; see there.

    Attributes:
        seed: the stream's seed, or None (a fresh seed per call).
        offset: the stream element the next intercepted call starts at.
        calls: intercepted calls that drew a mask so far.
        strict: whether a draw droplab does not replay is an error.
        unreplayed: ``(module path, what)`` for each such draw named so far.
        owner: the function the user called, named in errors (``intercept``,
            ``mc_predict``).

    For :func:`droplab.mc_predict`: ``passes`` (a
    :class:`droplab.interop.passes.PassStreams`) gives every call its stream,
    in place of ``seed``, and every dropout samples, whatever its
    ``training`` argument (Monte-Carlo dropout keeps every dropout on);
    ``names`` (module paths by ``id(module)``) names modules in place of
    walking ``model`` again.
    """

    def __init__(
        self,
        seed: int | None = None,
        *,
        strict: bool = False,
        model: nn.Module | None = None,
        names: Mapping[int, str] | None = None,
        passes: PassStreams | None = None,
        owner: str = "intercept",
    ) -> None:
        super().__init__()
        self.owner = owner
        self.seed = None if seed is None else check_seed(seed, owner=owner)
        self.offset = 0
        self.calls = 0
        self.strict = check_bool(strict, "strict", owner=owner)
        if model is not None and not isinstance(model, nn.Module):
            raise fail(
                "model",
                model,
                "a torch.nn.Module or None",
                owner=owner,
                kind=TypeError,
            )
        if names is None:
            names = (
                {} if model is None else {id(m): n for n, m in model.named_modules()}
            )
        self.unreplayed: list[tuple[str, str]] = []
        self._paths = _ModulePaths(names, on_step=self._check_host_draws)
        self._host: tuple[Any, ...] | None = None
        self._passes = passes
        self._sample_all = passes is not None  # Monte-Carlo: every dropout samples
        self._rules: dict[Any, FunctionRule] = function_rules()
        self._depth = 0

    # ------------------------------------------------------------ entering

    def __enter__(self) -> Interception:
        if self._depth == 0:
            self._paths.install()
            self._host = _host_states() if self.replays else None
        self._depth += 1
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._depth -= 1
        if self._depth == 0:
            self._paths.remove()
            if exc[0] is None:  # a draw outside any module
                self._check_host_draws()
            self._host = None

    def _check_host_draws(self) -> None:
        """Name a draw from NumPy's or Python's global generator since the last look."""
        if self._host is None:
            return
        now = _host_states()
        changed = [
            i for i, (a, b) in enumerate(zip(self._host, now, strict=True)) if a != b
        ]
        self._host = now
        for index in changed:
            what, source, fix = _HOST_GENERATORS[index]
            self._name_unreplayed(what, source=source, fix=fix)

    # ------------------------------------------------------------ streams

    def draw(self, elements: int) -> tuple[int, int]:
        """``(key, offset)`` for a call of ``elements`` stream elements: the
        next part of the stream, keyed by :func:`droplab.distributed.stream_key`."""
        if self._passes is not None:
            seed, offset = self._passes.draw(elements)
        elif self.seed is None:
            seed, offset = draw_seed(), 0
        else:
            seed, offset = self.seed, self.offset
            self.offset += elements
        return stream_key(seed), offset

    @property
    def replays(self) -> bool:
        """Whether the calls draw from a stream that replays (a seed, or the
        streams of mc_predict), so torch's own draws are worth naming."""
        return self.seed is not None or self._passes is not None

    # ------------------------------------------------------------ dispatch

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        rule = self._rules.get(func)
        if rule is not None:
            return self._dropout(rule, func, args, kwargs)
        if func is F.scaled_dot_product_attention:
            return self._attention(args, kwargs)
        if func is F.multi_head_attention_forward:
            return self._multi_head(args, kwargs)
        if func in RANDOM_FUNCTIONS or func in _RNNS:
            return self._random(func, args, kwargs)
        return func(*args, **kwargs)

    def _dropout(
        self,
        rule: FunctionRule,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        values = dict(zip(_NAMES, args, strict=False))
        values.update(kwargs)
        if "train" in values:  # torch.dropout(input, p, train)
            values["training"] = values.pop("train")
        x, p = values["input"], values.get("p", 0.5)
        training = values.get("training", rule.training_default)
        inplace = values.get("inplace", False)
        if self._sample_all and p > 0.0:
            training = True  # Monte-Carlo: every dropout samples
        if not training or p == 0.0 or not isinstance(x, torch.Tensor):
            return func(*args, **kwargs)  # torch's own evaluation path
        seed, offset = self.draw(rule.elements(x.shape))
        self.calls += 1
        return rule.ours(x, p, True, seed=seed, offset=offset, inplace=inplace)

    def _attention(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        values = dict(zip(_SDPA_NAMES, args, strict=False))
        values.update(kwargs)
        rate = float(values.get("dropout_p", 0.0))
        if rate <= 0.0:
            return F.scaled_dot_product_attention(*args, **kwargs)
        self.calls += 1
        return attention_math(
            values["query"],
            values["key"],
            values["value"],
            values.get("attn_mask"),
            rate,
            bool(values.get("is_causal", False)),
            scale=values.get("scale"),
            enable_gqa=bool(values.get("enable_gqa", False)),
            draw=self.draw,
        )

    def _multi_head(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # multi_head_attention_forward(..., dropout_p [10], ..., training [13], ...)
        rate = args[10] if len(args) > 10 else kwargs.get("dropout_p", 0.0)
        if self._sample_all and rate > 0.0:
            if len(args) > 13:
                args = (*args[:13], True, *args[14:])
            else:
                kwargs = {**kwargs, "training": True}
        training = args[13] if len(args) > 13 else kwargs.get("training", True)
        if not training or rate <= 0.0:
            return F.multi_head_attention_forward(*args, **kwargs)
        self.calls += 1
        result = multi_head_attention(args, kwargs, self.draw)
        if result is None:  # pragma: no cover - a torch this cannot reach
            self._name_unreplayed("multi_head_attention_forward's dropout")
            return F.multi_head_attention_forward(*args, **kwargs)
        return result

    def _random(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if func is torch.Tensor.bernoulli_ and self.replays:
            site = self._bernoulli_site()
            if site is not None:
                return self._fill(args, site)
        if not self.replays:
            pass  # without a seed, torch's generator is the stream anyway
        elif func in _RNNS:
            if _rnn_dropout(args) > 0.0:
                self._name_unreplayed(f"the inter-layer dropout of torch.{_RNNS[func]}")
        else:
            self._name_unreplayed(RANDOM_FUNCTIONS[func])
        return func(*args, **kwargs)

    def _bernoulli_site(self) -> float | None:
        """The drop rate, where the running ``bernoulli_`` is the draw of a
        registered site (timm's ``drop_path``, torchvision's ``stochastic_depth``)."""
        # this frame, _random, __torch_function__, then the caller
        frame = sys._getframe(3)
        for _ in range(4):
            if frame is None:
                return None
            found = random_site(frame.f_code)
            if found is not None:
                return float(frame.f_locals[found[1]])
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def _fill(self, args: tuple[Any, ...], p: float) -> torch.Tensor:
        noise = args[0]
        seed, offset = self.draw(noise.numel())
        self.calls += 1
        keep = keep_mask(
            tuple(noise.shape), p, seed=seed, offset=offset, device=noise.device
        )
        return noise.copy_(keep)

    def _name_unreplayed(
        self,
        what: str,
        source: str = "torch's generator",
        fix: str = "torch.manual_seed",
    ) -> None:
        path = self._paths.current()
        if (path, what) in self.unreplayed:
            return
        self.unreplayed.append((path, what))
        advice = self._passes.advice() if self._passes is not None else ""
        message = (
            f"{what} in {path!r} draws from {source}, which droplab does "
            f"not replay: the results mix in its random numbers (seed it "
            f"with {fix}, or remove the draw){advice}"
        )
        if self.strict:
            raise fail(
                "model",
                f"a model with a random draw droplab does not replay ({what} in "
                f"{path!r}, from {source}){advice}",
                "a model whose every random draw is dropout droplab replays "
                "(strict=False names such draws in a warning instead)",
                owner=self.owner,
            )
        warnings.warn(message, UserWarning, stacklevel=4)


def intercept(
    seed: int | None = None, *, strict: bool = False, model: nn.Module | None = None
) -> Interception:
    """A context under which torch's dropout draws droplab's masks.

    Every call of ``torch.nn.functional.dropout``, ``dropout1d/2d/3d``,
    ``alpha_dropout``, ``feature_alpha_dropout`` or ``torch.dropout`` in
    training mode (hence every torch dropout module) inside the block is
    computed by droplab's function of the same name, with the same ``p``,
    ``training`` and ``inplace``; attention dropout
    (``scaled_dot_product_attention`` with ``dropout_p > 0``,
    ``nn.MultiheadAttention``) and stochastic depth (timm's ``DropPath``,
    torchvision's ``StochasticDepth`` and ``stochastic_depth``) draw their
    masks from the same stream (see the module's docstring). With an int
    ``seed`` the calls share one stream, each taking the next ``mask
    elements`` of it, so the block replays bit for bit from the seed when the
    calls come in the same order; with None each call takes a fresh seed from
    torch's default generator. The key of every call is
    :func:`droplab.distributed.stream_key` of its seed (the rank folds in as
    for droplab's modules).

    Args:
        seed: an int in ``[0, 2**64)``, or None.
        strict: with a seed, a random draw inside the block that droplab does
            not replay raises a ``ValueError`` instead of a ``UserWarning``.
        model: the model run inside the block, if any: warnings then name the
            module by its path in it (else by the chain of module classes).

    Returns:
        An :class:`Interception`, a ``TorchFunctionMode`` to use with ``with``.

    Examples:
        >>> import torch.nn.functional as F
        >>> from droplab import dropout
        >>> x = torch.ones(2, 4)
        >>> with intercept(seed=0):
        ...     y = F.dropout(x, 0.5)
        >>> torch.equal(y, dropout(x, 0.5, seed=0))  # droplab.dropout
        True
    """
    return Interception(seed, strict=strict, model=model)
