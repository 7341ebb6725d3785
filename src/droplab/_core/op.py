"""Every random op of droplab, declared once: :class:`StochasticOp`.

An op is ``y = f(x; mask or noise of (seed, offset), params)``, affine in ``x``
with a diagonal linear part (masked scale, alpha dropout, Gaussian noise). Its
author writes three things a single time:

- the **kernel** ``kernel(x, seed, offset, *params, out=None)``, on Python ints
  (the stream element of ``x``'s first element is ``offset``);
- the **linear part** ``linear(t, seed, offset, *params)``: what the op does to
  a tangent or a gradient (``dy/dx`` applied to ``t``), written with droplab's
  op entries, so it runs eager and in a graph alike; ``None`` means the op
  itself (an op linear in ``x``, whose ``dy/dx`` is its own mask or noise);
- the **schema** of its non-tensor parameters.

From that the declaration builds both paths and the choice between them:

- the eager ``torch.autograd.Function`` (``backward`` and ``jvp`` from the
  linear part), in two forms built from the same functions: with
  ``setup_context`` and a ``vmap`` rule for calls under ``torch.func``
  transforms, and the classic form (``forward(ctx, ...)``, no per-call
  argument binding) for every other call; forward-mode AD and double
  backward work in both;
- a registered operator ``torch.ops.droplab.<name>`` for ``torch.compile`` and
  ``torch.export``, whose stream is a 2-element int64 tensor ``[seed, offset]``
  (:mod:`droplab._core.registered`), with its fake kernel (``empty_like``, the
  layout every kernel gives) and its autograd (saving only that state);
- :meth:`StochasticOp.__call__`, the one entry the variants call: in a graph
  the registered operator, eagerly the Function, or the kernel itself when no
  autograd, forward AD or ``torch.func`` transform can see the call.

Nothing of the input's size is saved for backward: the mask is redrawn from
``(seed, offset)``. The numerics contract is the one of
:mod:`droplab.kernels.reference`.

**Under** ``torch.func.vmap`` (the stream rule, docs/compile.md): with
``randomness="same"`` every slice uses the call's ``(seed, offset)``; with
``"different"`` slice ``b`` uses ``(droplab.rng.slice_seed(seed, b), offset)``,
so slices draw independent streams and a module's next call (whose offset
moves on by one slice's elements) overlaps none of them (an input vmap does
not batch is broadcast first, so it too gets a mask per slice); ``"error"``
raises torch's error. A backward or jvp replays the forward's masks: under
``"error"`` (``jacrev``, ``jacfwd``) and ``"same"`` every slice gets the one
mask, under ``"different"`` slice ``b`` the stream of ``slice_seed(seed, b)``,
as its forward drew under that vmap. (So a ``vjp_fn`` vmapped with
``"different"`` over a forward that ran outside that vmap would replay slice
streams the forward never drew: use the default ``"error"`` there.)
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import torch
from torch._C._functorch import TransformType as _TransformType
from torch._functorch import pyfunctorch as _pyfunctorch
from torch.autograd import forward_ad

from droplab import kernels
from droplab._core.registered import MASK64, graph_state
from droplab._validation import OFFSET_LIMIT, SEED_LIMIT, check_offset, check_seed
from droplab.mesh import Runs, box_of, is_dtensor, plan, wrap_like
from droplab.rng import draw_seed, slice_seed

__all__ = [
    "MASKED_SCALE",
    "VMAP_ERROR",
    "StochasticOp",
    "check_graph_seed",
    "check_stream",
]

Kernel = Callable[..., torch.Tensor]
Geometry = Callable[..., tuple[tuple[int, ...], int, str]]
"""``geometry(*params) -> (shared_dims, stream elements per mask element, how)``:
what an op's DTensor path needs to know of its mask. ``how`` says how a shard
that is not one block of the logical stream is drawn: ``"runs"``, the kernel
takes a :class:`~droplab.mesh.Runs` after the params; ``"slices"``,
the op is elementwise (no shared dims, no rows), so each run is one call on a
slice; ``"rows"``, the op needs whole mask rows (refused there)."""

# torch's own message for a random op under vmap(randomness="error").
VMAP_ERROR = (
    "vmap: called random operation while in randomness error mode. Please either "
    "use the 'same' or 'different' randomness flags on vmap or perform the "
    "randomness operation out of vmap"
)

_transforms_active = torch._C._are_functorch_transforms_active

# True while a backward or jvp applies the linear part (a replay of the
# forward's mask, not a draw).
_REPLAY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "droplab_replay", default=False
)


class StochasticOp:
    """One random op: its kernel, its linear part and its parameters' schema.

    Args:
        name: the operator's name, registered as ``torch.ops.droplab.<name>``.
        params: the schema of the parameters after ``x`` and the stream, e.g.
            ``"float p, int[] shared_dims"``.
        kernel: ``kernel(x, seed, offset, *params, out=None) -> Tensor`` on
            Python ints; with ``out`` it writes there and returns it.
        linear: ``linear(t, seed, offset, *params) -> Tensor``, ``dy/dx``
            applied to ``t`` (``seed`` is a state tensor in a graph); None: the
            op itself.

    Calling it, ``op(x, seed, offset, *params, inplace=False)``: ``seed`` is an
    int in ``[0, 2**64)``, None (a fresh seed from torch's default generator),
    or a stream tensor ``[seed, offset]`` (a module's in a graph, or the
    registered op's in its backward; ``offset`` then unused), which always
    takes the registered op. The op trusts its caller: the public functions
    check every argument once, at their door (a tensor seed is refused
    outside a graph by :func:`check_graph_seed`), and pass them on.
    """

    def __init__(
        self,
        name: str,
        params: str,
        kernel: Kernel,
        linear: Callable[..., torch.Tensor] | None = None,
        geometry: Geometry | None = None,
    ) -> None:
        self.name = name
        self.kernel = kernel
        self.geometry = geometry
        self.linear: Callable[..., torch.Tensor] = linear or self
        self.function, self.transformable = _eager_function(self)
        self._apply, self._unwrap = _direct_apply(self.function)
        self.registered = _register(self, params)

    def __repr__(self) -> str:
        return f"StochasticOp(torch.ops.droplab.{self.name})"

    def __call__(
        self,
        x: torch.Tensor,
        seed: Any,
        offset: Any,
        *params: Any,
        inplace: bool = False,
    ) -> torch.Tensor:
        if type(x) is not torch.Tensor and is_dtensor(x):
            return _sharded_call(self, x, seed, offset, params, inplace)
        if (
            type(seed) is not int and isinstance(seed, torch.Tensor)
        ) or torch.compiler.is_compiling():
            # torch.compile, torch.export (and the registered op's own
            # backward): the registered op on the stream as a tensor
            y: torch.Tensor = self.registered(
                x, graph_state(seed, offset, self.name), *params
            )
            return x.copy_(y) if inplace else y
        if seed is None:
            seed = draw_seed()
        # seed and offset are trusted: the public door that called checked them
        if _transforms_active():  # torch.func: vmap, grad, jvp ...
            if not inplace:
                x = _batched_if_vmap_asks(x)
            y = self.transformable.apply(x, (seed, offset, *params), inplace)
            return y
        if (
            inplace  # through the Function, which bumps x's version
            or (x.requires_grad and torch.is_grad_enabled())
            or forward_ad._current_level >= 0  # a dual tensor may carry a tangent
        ):
            return self._apply(self._unwrap(x), (seed, offset, *params), inplace)
        # Nothing can differentiate or transform this call: the kernel itself
        # (the usual backward, and every call under no_grad).
        return self.kernel(x, seed, offset, *params)


@torch.compiler.disable
def _sharded_call(
    op: StochasticOp,
    x: Any,
    seed: Any,
    offset: Any,
    params: tuple[Any, ...],
    inplace: bool,
) -> Any:
    """``op`` on a DTensor: its shard draws its part of the logical tensor's
    mask (:mod:`droplab.mesh`), and the result has ``x``'s placements.

    Run eagerly inside compiled code (a graph break): the eager masks.
    """
    if op.geometry is None:
        raise TypeError(
            f"torch.ops.droplab.{op.name} does not take a DTensor: its draws "
            f"have no declared geometry. Call it on x.to_local() (each shard "
            f"then draws as a tensor of its own)."
        )
    if isinstance(seed, torch.Tensor):  # a module's stream in compiled code
        seed, offset = (int(v) & MASK64 for v in seed.tolist())
    elif seed is None:
        # from torch's default generator: ranks draw alike when seeded alike
        seed = draw_seed()
    shared, per_element, how = op.geometry(*params)
    where = plan(box_of(x, op.name), shared)
    local = x.to_local()
    if local.numel() == 0:  # an empty shard (uneven sharding): nothing to draw
        y = local.clone()
    elif isinstance(where, int):  # the whole mask, or one block of it
        y = op(local, seed, offset + per_element * where, *params, inplace=inplace)
    elif how == "runs":
        y = op(local, seed, offset, *params, where, inplace=inplace)
    elif how == "slices":  # elementwise: each run is a slice of the flat shard
        rows = local.contiguous().view(-1, where.length)
        pieces = [
            op(rows[r], seed, offset + per_element * int(start), *params)
            for r, start in enumerate(where.starts)
        ]
        y = torch.stack(pieces).view(local.shape) if pieces else local.clone()
        if inplace:
            local.copy_(y)
    else:
        raise ValueError(
            f"The 'x' argument of {op.name} is a DTensor with placements "
            f"{tuple(x.placements)}: with these arguments each mask row must lie "
            f"whole on one rank, and it is split along a mask dimension after "
            f"the first. Redistribute to Shard(0) or Replicate() first."
        )
    return x if inplace else wrap_like(y, x)


def _batched_if_vmap_asks(x: torch.Tensor) -> torch.Tensor:
    """``x``, batched at the innermost vmap if it asks for ``"different"``
    randomness and ``x`` is not batched there.

    A Function whose inputs vmap does not batch is called once, unbatched: its
    vmap rule never runs, and every slice would get one mask. torch's own
    random ops draw per slice there; so does droplab: a scalar drawn under the
    vmap (a batched tensor under ``"different"``) broadcasts ``x`` to the
    batch, values unchanged, and the vmap rule then draws per slice.
    """
    interpreter: Any = _pyfunctorch.retrieve_current_functorch_interpreter()
    if interpreter.key() != _TransformType.Vmap:
        return x
    if interpreter.randomness() != "different":
        return x
    if torch._C._functorch.maybe_get_level(x) == interpreter.level():
        return x  # batched already
    probe = torch.rand((), device=x.device)
    return torch.where(probe < 2.0, x, x)


def check_stream(seed: Any, offset: Any, owner: str) -> tuple[Any, int]:
    """``(seed, offset)`` checked as a public function takes them (seed:
    :func:`check_graph_seed`); one comparison each when they are right."""
    if seed is not None and (type(seed) is not int or not 0 <= seed < SEED_LIMIT):
        seed = check_graph_seed(seed, owner)
    if type(offset) is not int or not 0 <= offset < OFFSET_LIMIT:
        offset = check_offset(offset, owner=owner)
    return seed, offset


def check_graph_seed(seed: Any, owner: str) -> Any:
    """``seed`` checked as a public function takes it: None, an int in
    ``[0, 2**64)``, or (only inside a graph) a module's stream tensor."""
    if seed is None or (type(seed) is int and 0 <= seed < SEED_LIMIT):
        return seed
    if isinstance(seed, torch.Tensor) and torch.compiler.is_compiling():
        return seed
    return check_seed(seed, owner=owner)


def _direct_apply(
    function: type[torch.autograd.Function],
) -> tuple[Callable[..., Any], Callable[[torch.Tensor], torch.Tensor]]:
    """``function.apply`` without its Python layer, for calls outside torch.func:
    ``(apply, unwrap)``, called as ``apply(unwrap(x), args, inplace)``.

    ``Function.apply`` (Python) binds nothing for a classic Function and,
    outside torch.func transforms, only unwraps "dead" functorch wrappers from
    its arguments (a tree walk, about 1.2 µs a call here) before the C++
    ``apply``. Our arguments are ``x`` and Python numbers, so ``unwrap`` is
    applied to ``x`` alone before the C++ ``apply``. Where torch lacks either
    piece, the public ``apply`` and the identity.
    """
    c_apply = torch._C._FunctionBase.__dict__.get("apply")
    unwrap = getattr(torch._C._functorch, "unwrap_if_dead", None)
    if c_apply is None or unwrap is None:
        return function.apply, _identity
    return c_apply.__get__(None, function), unwrap


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _eager_function(
    op: StochasticOp,
) -> tuple[type[torch.autograd.Function], type[torch.autograd.Function]]:
    """The eager autograd Functions of ``op``: plain, and for torch.func.

    Both take ``(x, args, inplace)`` with ``args = (seed, offset, *params)``,
    Python numbers only (the mask is redrawn from them in backward): one
    tuple, as every argument of ``apply`` costs a little on every call.
    """
    kernel = op.kernel
    linear = op.linear

    def forward(x: torch.Tensor, args: tuple[Any, ...], inplace: bool) -> torch.Tensor:
        return kernel(x, *args, out=x if inplace else None)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x, ctx.args, ctx.inplace = inputs
        if ctx.inplace:
            ctx.mark_dirty(x)

    def forward_with_ctx(
        ctx: Any, x: torch.Tensor, args: tuple[Any, ...], inplace: bool
    ) -> torch.Tensor:
        # setup_context and forward, inlined: this is every eager training call
        ctx.args, ctx.inplace = args, inplace
        if inplace:
            ctx.mark_dirty(x)
            return kernel(x, *args, out=x)
        return kernel(x, *args)

    def replay(t: torch.Tensor, args: tuple[Any, ...]) -> torch.Tensor:
        # the linear part on the forward's mask: nothing new is drawn. Only a
        # vmap rule reads the flag, and none runs outside torch.func.
        if not _transforms_active():
            return linear(t, *args)
        token = _REPLAY.set(True)
        try:
            return linear(t, *args)
        finally:
            _REPLAY.reset(token)

    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, None, None]:
        if not _transforms_active():  # replay without its flag: one frame less
            return linear(grad, *ctx.args), None, None
        return replay(grad, ctx.args), None, None

    def jvp(ctx: Any, tangent: torch.Tensor, *others: Any) -> torch.Tensor:
        out = replay(tangent, ctx.args)
        # an in-place op updates its input's tangent in place, as torch asks
        return tangent.copy_(out) if ctx.inplace else out

    def vmap(
        info: Any,
        in_dims: tuple[Any, ...],
        x: torch.Tensor,
        args: tuple[Any, ...],
        inplace: bool,
    ) -> tuple[torch.Tensor, int | None]:
        # A backward or jvp replays the forward's mask: no draw, so no error
        # (jacrev and jacfwd vmap it with randomness="error"); "different"
        # keeps the slice streams the forward drew under the same vmap.
        if info.randomness == "error" and not _REPLAY.get():
            raise RuntimeError(VMAP_ERROR)
        seed, offset, *params = args
        x_dim = in_dims[0]
        if x_dim is None and info.randomness == "same":
            return op(x, seed, offset, *params, inplace=inplace), None
        batch = (
            x.movedim(x_dim, 0)
            if x_dim is not None
            else x.expand(info.batch_size, *x.shape)
        )
        different = info.randomness == "different"
        slices = [
            op(batch[b], slice_seed(seed, b) if different else seed, offset, *params)
            for b in range(info.batch_size)
        ]
        result = torch.stack(slices)
        if inplace and x_dim is not None:
            x.copy_(result.movedim(0, x_dim))
            return x, x_dim
        return result, 0

    # Two classes from the same pieces. torch.func needs setup_context (and
    # takes the vmap rule); but Function.apply then binds every call's
    # arguments with inspect.signature, which costs more than the kernel on
    # a small tensor. So plain eager calls take the classic form (forward
    # with ctx), calls under a torch.func transform the other.
    shared = {"backward": staticmethod(backward), "jvp": staticmethod(jvp)}
    classic = type(
        f"_{op.name}_function",
        (torch.autograd.Function,),
        {**shared, "forward": staticmethod(forward_with_ctx)},
    )
    transformable = type(
        f"_{op.name}_transformable",
        (torch.autograd.Function,),
        {
            **shared,
            "forward": staticmethod(forward),
            "setup_context": staticmethod(setup_context),
            "vmap": staticmethod(vmap),
        },
    )
    classic.__doc__ = f"The eager path of ``torch.ops.droplab.{op.name}``."
    transformable.__doc__ = f"``torch.ops.droplab.{op.name}`` under torch.func."
    return classic, transformable


def _register(op: StochasticOp, params: str) -> Any:
    """``torch.ops.droplab.<name>(x, state, *params)``: what a graph records."""

    def impl(x: torch.Tensor, state: torch.Tensor, *params: Any) -> torch.Tensor:
        seed, offset = state.tolist()
        return op.kernel(x, seed & MASK64, offset & MASK64, *params)

    def fake(x: torch.Tensor, state: torch.Tensor, *params: Any) -> torch.Tensor:
        return torch.empty_like(x)  # the layout every kernel gives its result

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        # The 16-byte state and the Python parameters: the mask is redrawn.
        ctx.save_for_backward(inputs[1])
        ctx.params = inputs[2:]

    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        (state,) = ctx.saved_tensors
        # through the registered ops again (the state is a tensor): a double
        # backward works in a graph too
        grad_x = op.linear(grad, state, 0, *ctx.params)
        return (grad_x, None, *([None] * len(ctx.params)))

    registered = torch.library.custom_op(
        f"droplab::{op.name}",
        impl,
        mutates_args=(),
        schema=f"(Tensor x, Tensor state, {params}) -> Tensor",
    )
    registered.register_fake(fake)
    registered.register_autograd(backward, setup_context=setup_context)
    return registered


def _masked_scale_kernel(
    x: torch.Tensor,
    seed: int,
    offset: int,
    p: float,
    scale: str,
    sampler: str,
    shared_dims: Any,
    runs: Runs | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    return kernels.select(x)(
        x,
        p=p,
        seed=seed,
        offset=offset,
        scale=scale,
        sampler=sampler,
        shared_dims=shared_dims if type(shared_dims) is tuple else tuple(shared_dims),
        out=out,
        runs=runs,
    )


def _masked_scale_geometry(
    p: float, scale: str, sampler: str, shared_dims: Any
) -> tuple[tuple[int, ...], int, str]:
    # the kernels draw runs of a Bernoulli mask; fixed counts and realized
    # factors need whole rows
    rows = sampler == "fixed" or scale == "realized"
    return tuple(shared_dims), 1, "rows" if rows else "runs"


MASKED_SCALE = StochasticOp(
    "masked_scale",
    "float p, str scale, str sampler, int[] shared_dims",
    _masked_scale_kernel,
    geometry=_masked_scale_geometry,
)
"""``y = x * mask * scale``, its derivative the same op: dropout and every
variant that scales the kept units of a mask (channel, locked, DropPath,
DropConnect, weight drop). ``torch.ops.droplab.masked_scale`` in a graph."""
