"""The base class of every droplab module that draws random numbers.

A :class:`StochasticModule` owns one Philox stream (see :mod:`droplab.rng`): a
``seed`` and an ``offset``, the stream element its next draw starts at. Every
draw goes through :meth:`StochasticModule.next_stream`, which hands out the
``(seed, offset)`` for a call and advances the offset past the elements used, so

- consecutive calls draw fresh, non-overlapping parts of the stream;
- a run can be replayed from ``(seed, offset)``, which travel in the module's
  ``state_dict`` (as an int64 tensor of their two's complements, so every seed
  in ``[0, 2**64)`` survives and safetensors files can hold it);
- a module without a seed has no stream to save: its ``state_dict`` is empty,
  as torch's dropout modules' are, so checkpoints load both ways;
- the pair itself is held in ``rng_state``, a 2-element int64 CPU buffer
  (two's complement of ``[seed, offset]``), so a compiled graph can read and
  advance it without Dynamo guarding on a Python int
  (:meth:`StochasticModule.next_state`, docs/compile.md);
- with ``seed=None`` every call takes a fresh seed from torch's default
  generator (offset 0), so ``torch.manual_seed`` reproduces a run as it does
  for ``torch.nn.Dropout``.

Writing a variant (Gaussian dropout, DropPath, ...)::

    class MyDropout(StochasticModule):
        def __init__(self, p=0.5, *, seed=None):
            super().__init__(seed=seed)        # validates and stores the seed
            self.p = p

        def forward(self, x):
            if not self.training:
                return x
            n = number_of_stream_elements_this_call_uses(x)
            seed, offset = self.next_stream(n)   # the only way to get a key
            return draw_and_apply(x, seed=seed, offset=offset)

Other code (Monte-Carlo prediction, checkpointing) may read and set the public
``seed`` and ``offset`` attributes; both are validated on assignment.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from droplab._core.fx import Proxy, as_module_node
from droplab._core.registered import MASK64, as_int64, drawn_state, snapshot
from droplab._validation import (
    check_int,
    check_offset,
    check_seed,
    fail,
)
from droplab.distributed import current_rank, fold_rank, stream_key
from droplab.mesh import is_dtensor
from droplab.rng import draw_seed
from droplab.scaling import eval_scale

__all__ = ["StochasticModule"]

# Offsets a module holds: rng_state keeps them in 64 bits (the functions take
# offsets up to OFFSET_LIMIT = 2**66; no run comes near either).
_STATE_LIMIT = 2**64


def _current_rank() -> int:
    return int(current_rank())


# Dynamo cannot trace a ContextVar: in a graph the rank is read once, when the
# graph is traced, and treated as a constant (a process keeps its rank).
_traced_rank: Callable[[], int] = torch.compiler.assume_constant_result(_current_rank)


class StochasticModule(nn.Module):
    """An ``nn.Module`` that owns a seed and an offset into the Philox stream.

    Args:
        seed: an int in ``[0, 2**64)`` for a stream this module owns, or None to
            take a fresh seed from torch's default generator on every call.

    Attributes:
        seed: the stream's seed (int) or None. Setting it does not reset ``offset``.
        offset: the stream element the next draw starts at (int >= 0). Stays 0
            while ``seed`` is None.

    Examples:
        >>> m = StochasticModule(seed=2**64 - 1)
        >>> m.next_stream(10), m.next_stream(3), m.offset
        ((18446744073709551615, 0), (18446744073709551615, 10), 13)
        >>> StochasticModule(seed=2**64 - 1).get_extra_state()  # [seed, offset], int64
        tensor([-1,  0])
    """

    # Whether forward draws only through declared ops (StochasticOp: masked
    # scale, alpha dropout, Gaussian noise), which take the tensor stream of
    # next_state in a graph: then it compiles into the graph.
    # A subclass that defines forward without setting it runs its training
    # forward eagerly inside compiled code (a graph break, the eager masks).
    traceable: ClassVar[bool] = False

    # Whether forward itself records its call_module node under
    # torch.fx.symbolic_trace (as_module_node on a Proxy input); else every
    # subclass's forward is wrapped to do it (one more frame on every call).
    records_fx_node: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            forward = cls.__dict__["forward"]
            if not cls.__dict__.get("traceable", False):
                forward = _eager_when_compiled(forward)
            if not cls.__dict__.get("records_fx_node", False):
                forward = _fx_leaf(forward)
            cls.forward = forward

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        # [seed, offset] as int64 two's complement, on the CPU whatever the
        # module's device (see _apply); not persistent: the state_dict keeps
        # get_extra_state's copy of it, which is left out without a seed.
        self.register_buffer(
            "rng_state", torch.zeros(2, dtype=torch.int64), persistent=False
        )
        self._owns_seed = False
        self.seed = seed

    rng_state: torch.Tensor

    @property
    def seed(self) -> int | None:
        if not self._owns_seed:
            return None
        return int(self.rng_state[0]) & MASK64

    @seed.setter
    def seed(self, value: int | None) -> None:
        owner = type(self).__name__
        if value is None:
            self._owns_seed = False
            return
        value = check_seed(value, owner=owner)
        with torch.no_grad():
            self.rng_state[0] = as_int64(value)
        self._owns_seed = True

    @property
    def offset(self) -> int:
        return int(self.rng_state[1]) & MASK64

    @offset.setter
    def offset(self, value: int) -> None:
        owner = type(self).__name__
        value = check_offset(value, owner=owner)
        if value >= 2**64:  # what the int64 state holds
            raise fail("offset", value, "an int in [0, 2**64)", owner=owner)
        with torch.no_grad():
            self.rng_state[1] = as_int64(value)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # .to(device), .cuda(), .half() ... move parameters and buffers; the
        # stream stays on the CPU, where the kernels read it without a device
        # synchronisation (docs/compile.md).
        state = self.rng_state
        result = super()._apply(fn, recurse)
        self._buffers["rng_state"] = state
        return result

    def _effective_seed(self, seed: int) -> int:
        """The key a draw actually uses, from the module's (or a drawn) seed:
        :func:`droplab.distributed.stream_key`, the one place where the process
        rank folds into the key (``seed`` itself on rank 0 and in one process).
        """
        return int(stream_key(seed))

    def next_stream(self, n: int, x: Any = None) -> tuple[int, int]:
        """The ``(seed, offset)`` for a draw of ``n`` stream elements.

        With an owned seed, returns the current offset and advances it by ``n``;
        with ``seed=None``, returns a fresh seed from torch's default generator
        and offset 0 (the module's offset does not move).

        Args:
            n: stream elements the call uses (for masks:
                ``droplab.masks.stream_elements(shape, shared_dims)``), counted
                on the logical tensor when ``x`` is a DTensor.
            x: the input the draw is for. For a DTensor the key is the seed
                itself on every rank (no rank fold): its shards draw their
                parts of one logical mask (:mod:`droplab.mesh`), and every
                rank advances the offset by the same ``n``, so ranks stay in
                step with no communication.
        """
        fold = type(x) is torch.Tensor or x is None or not is_dtensor(x)
        if torch.compiler.is_compiling():
            if type(self).traceable:
                # In a graph the stream is a tensor: (next_state(n), 0), which
                # droplab.dropout takes in place of (seed, offset).
                traced: Any = (self.next_state(n, fold=fold), 0)
                return traced
            return _next_stream_outside_graph(self, n, fold)
        if type(n) is not int or n < 0:  # else check_int would return n as is
            n = check_int(n, "n", low=0, owner=f"{type(self).__name__}.next_stream")
        if not self._owns_seed:
            seed = draw_seed()
            return (self._effective_seed(seed) if fold else seed), 0
        if torch._C._are_functorch_transforms_active():
            # torch.func (vmap, grad ...) has no NumPy view of a tensor: read
            # and advance the buffer outside the transforms
            with torch._C._DisableFuncTorch():
                return self._advance(n, fold)
        return self._advance(n, fold)

    def _advance(self, n: int, fold: bool = True) -> tuple[int, int]:
        words = self._state_words()  # a view: read and advance in place
        seed = int(words[0]) & MASK64
        offset = int(words[1]) & MASK64
        end = offset + n
        if end < _STATE_LIMIT:  # what the offset setter accepts, without the call
            words[1] = as_int64(end)
        else:
            self.offset = end  # raises: the stream is finite
        return (self._effective_seed(seed) if fold else seed), offset

    def _state_words(self) -> Any:
        """``rng_state``'s NumPy view, made once per buffer.

        Kept with the buffer and its data pointer: a new buffer (a copy, a
        replica, a reassignment) or new memory under the same tensor
        (``share_memory()``) makes a new view, so the view always is the
        buffer's. Reading it costs a dict lookup, where ``rng_state.numpy()``
        (the buffer through ``nn.Module.__getattr__``, then the view) costs
        about 1.5 µs on every call.
        """
        state: torch.Tensor = self._buffers["rng_state"]  # type: ignore[assignment]
        cached = self.__dict__.get("_words")
        if cached is None or cached[0] is not state or cached[1] != state.data_ptr():
            cached = (state, state.data_ptr(), state.numpy())
            self.__dict__["_words"] = cached
        return cached[2]

    def next_state(self, n: Any, fold: bool = True) -> torch.Tensor:
        """:meth:`next_stream` as a tensor, for a graph: ``[key, offset]`` (int64).

        What ``torch.compile`` and ``torch.export`` trace (the module's
        ``forward`` calls it when ``torch.compiler.is_compiling()``): a copy of
        ``rng_state`` with the rank folded into the key, after which the offset
        advances by ``n`` in the graph itself. With ``seed=None`` the key is
        drawn when the graph runs, from torch's default generator, in program
        order (``droplab::draw_key``): compiled code draws the seeds eager
        code draws under the same ``torch.manual_seed``.

        Args:
            n: stream elements the call uses (an int, or a SymInt when shapes
                are dynamic).
        """
        if self._owns_seed:
            state = snapshot(self.rng_state)
            self.rng_state[1] += n
        else:  # drawn when the graph runs, as eager code draws it
            state = drawn_state(0)
        rank = _traced_rank() if fold else 0
        if rank:  # the key XOR fold_rank(0, rank), in the graph
            state[0] ^= as_int64(fold_rank(0, rank))
        return state

    def weight_scaled_form(self, where: str) -> tuple[nn.Module, float]:
        """What :func:`droplab.weight_scaled` puts in this module's place.

        Returns ``(replacement, factor)``: the module that takes this one's
        place in the deterministic copy (``self`` to keep it), and the factor
        its evaluation applies, which is folded into the next layer's weights.
        The default suits a dropout with ``p`` (and ``scale``): an
        ``nn.Identity`` and its evaluation factor (``1 - p`` for ``classic``,
        else 1); a module without ``p`` is kept. A variant whose evaluation is
        different overrides this method; ``where`` names it in errors.
        """
        p = getattr(self, "p", None)
        if p is None:
            return self, 1.0
        return nn.Identity(), eval_scale(p, getattr(self, "scale", "inverted"))

    def stream_repr(self) -> str:
        """``"seed=..., offset=..."`` for ``extra_repr``, or ``""`` without a seed."""
        return "" if not self._owns_seed else f"seed={self.seed}, offset={self.offset}"

    def get_extra_state(self) -> torch.Tensor:
        """The stream position, saved in ``state_dict`` as a tensor.

        int64 ``[seed, offset]``, each the two's complement of its value in
        ``[0, 2**64)`` (read back with ``& (2**64 - 1)``): a tensor, so
        safetensors files (``save_pretrained``, ``safetensors.torch.save_model``)
        hold it. Without a seed, an empty tensor (and ``state_dict`` leaves the
        entry out, as torch's dropout modules have none). :meth:`set_extra_state`
        also takes the dict ``{"seed": ..., "offset": ...}`` of droplab 0.1.
        """
        if not self._owns_seed:
            return torch.zeros(0, dtype=torch.int64)
        return self.rng_state.clone()

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # Without a seed there is no stream to save: the state_dict is then the
        # one torch's module writes (none), and loads into it under strict=True.
        if not self._owns_seed:
            destination.pop(prefix + "_extra_state", None)

    def set_extra_state(self, state: Any) -> None:
        """Restore the stream position saved by :meth:`get_extra_state`.

        Takes its int64 tensor (2 elements, or none for no seed) or the dict
        with the keys ``seed`` and ``offset`` that droplab 0.1 wrote.
        """
        seed, offset = self._checked_extra_state(state)
        # Both checked before either is set: a refused state changes nothing.
        self.seed = seed
        if offset is not None:
            self.offset = offset

    def _checked_extra_state(self, state: Any) -> tuple[int | None, int | None]:
        """``(seed or None, offset or None to keep)`` of a saved stream
        position, all of it validated (nothing is set here)."""
        owner = f"{type(self).__name__}.set_extra_state"
        if isinstance(state, torch.Tensor):
            if state.dtype != torch.int64 or tuple(state.shape) not in ((2,), (0,)):
                raise fail(
                    "state",
                    f"a {state.dtype} tensor of shape {tuple(state.shape)}",
                    "an int64 tensor [seed, offset] of shape (2,), or of shape (0,) "
                    "for no seed",
                    owner=owner,
                )
            if state.numel() == 0:
                return None, None
            seed, offset = (int(v) & MASK64 for v in state.tolist())
            return seed, offset
        if not isinstance(state, dict) or set(state) != {"seed", "offset"}:
            raise fail(
                "state",
                state,
                "an int64 tensor [seed, offset], or a dict with the keys 'seed' "
                "and 'offset'",
                owner=owner,
                kind=TypeError if not isinstance(state, dict) else ValueError,
            )
        offset = check_offset(state["offset"], owner=owner)
        if offset >= 2**64:  # what the int64 state holds
            raise fail("offset", offset, "an int in [0, 2**64)", owner=owner)
        if state["seed"] is None:
            return None, offset
        return check_seed(state["seed"], owner=owner), offset

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "_extra_state"
        if key in state_dict:
            # The stream position is checked before anything of this module
            # (its parameters included) is loaded: a refused one changes nothing.
            self._checked_extra_state(state_dict[key])
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
        # A checkpoint written with torch.nn.Dropout in this place has no stream:
        # keep the module's own (seed, offset) rather than refuse a strict load.
        if key in missing_keys:
            missing_keys.remove(key)


@torch.compiler.disable
def _next_stream_outside_graph(
    module: StochasticModule, n: int, fold: bool
) -> tuple[int, int]:
    # A module that draws through Python ints (a variant not on the registered
    # op yet) inside a compiled region: Dynamo breaks the graph here and runs
    # the draw eagerly, on the same rng_state, so masks stay the eager ones.
    if not module._owns_seed:
        seed = draw_seed()
        return (module._effective_seed(seed) if fold else seed), 0
    return module._advance(n, fold)


def _eager_when_compiled(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward``, run outside the graph when training inside compiled code."""
    eager = torch.compiler.disable(forward)

    @functools.wraps(forward)
    def wrapper(self: StochasticModule, *args: Any, **kwargs: Any) -> Any:
        if self.training and torch.compiler.is_compiling():
            return eager(self, *args, **kwargs)
        if self.training and torch._C._are_functorch_transforms_active():
            # its draws are not on a StochasticOp: no vmap rule, no jvp
            raise NotImplementedError(
                f"{type(self).__name__} does not support torch.func transforms "
                "(vmap, grad, jvp ...) in training mode yet: its random draws are "
                "not declared as a droplab op. Use it outside the transform, or in "
                "eval mode; Dropout, Dropout1d/2d/3d, AlphaDropout, "
                "FeatureAlphaDropout, GaussianDropout, DropPath and LockedDropout "
                "support them."
            )
        return forward(self, *args, **kwargs)

    return wrapper


def _fx_leaf(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward``, recorded as one ``call_module`` node under ``symbolic_trace``.

    A ``forward(self, x)`` (every droplab module's) gets a wrapper of the same
    signature: no packing of ``*args`` and ``**kwargs`` on each call.
    """
    if _takes_x_only(forward):

        @functools.wraps(forward)
        def wrapper_x(self: StochasticModule, x: Any) -> Any:
            if type(x) is not torch.Tensor and isinstance(x, Proxy):
                return as_module_node(self, (x,), {})
            return forward(self, x)

        return wrapper_x

    @functools.wraps(forward)
    def wrapper(self: StochasticModule, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], Proxy):
            return as_module_node(self, args, kwargs)
        return forward(self, *args, **kwargs)

    return wrapper


def _takes_x_only(function: Callable[..., Any]) -> bool:
    """Whether ``function``'s signature is ``(self, x)``, both positional or keyword."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    kinds = {inspect.Parameter.POSITIONAL_OR_KEYWORD}
    return (
        len(parameters) == 2
        and parameters[1].name == "x"
        and all(
            p.kind in kinds and p.default is inspect.Parameter.empty for p in parameters
        )
    )
