"""The base class of every droplab module that draws random numbers.

A :class:`StochasticModule` owns one Philox stream (see :mod:`droplab.rng`): a
``seed`` and an ``offset``, the stream element its next draw starts at. Every
draw goes through :meth:`StochasticModule.next_stream`, which hands out the
``(seed, offset)`` for a call and advances the offset past the elements used, so

- consecutive calls draw fresh, non-overlapping parts of the stream;
- a run can be replayed from ``(seed, offset)``, which travel in the module's
  ``state_dict`` (as Python ints, so every seed in ``[0, 2**64)`` survives);
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
from types import ModuleType
from typing import Any

from torch import nn

from droplab._validation import (
    OFFSET_LIMIT,
    check_int,
    check_offset,
    check_seed,
    fail,
)
from droplab.rng import draw_seed
from droplab.scaling import eval_scale

__all__ = ["StochasticModule"]


@functools.cache
def _distributed() -> ModuleType:
    """The :mod:`droplab.distributed` module, imported on first use."""
    from droplab import distributed

    return distributed


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
        >>> StochasticModule(seed=1).get_extra_state()
        {'seed': 1, 'offset': 0}
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self._seed: int | None = None
        self._offset = 0
        self.seed = seed

    @property
    def seed(self) -> int | None:
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        owner = type(self).__name__
        self._seed = None if value is None else check_seed(value, owner=owner)

    @property
    def offset(self) -> int:
        return self._offset

    @offset.setter
    def offset(self, value: int) -> None:
        self._offset = check_offset(value, owner=type(self).__name__)

    def _effective_seed(self, seed: int) -> int:
        """The key a draw actually uses, from the module's (or a drawn) seed.

        The single place where the process rank folds into the key, so that
        ranks draw disjoint streams: ``droplab.distributed.fold_rank(seed,
        current_rank())``, which is ``seed`` itself on rank 0 and in a single
        process (see :mod:`droplab.distributed`).
        """
        # Looked up at call time: droplab.distributed stays out of the package's
        # import chain, so a doctest run of that file alone imports it only once.
        distributed = _distributed()
        rank = distributed.current_rank()
        # fold_rank(seed, 0) is the seed itself: skip the call (and its checks
        # of a seed that was validated when it was set) in a single process.
        return seed if rank == 0 else distributed.fold_rank(seed, rank)

    def next_stream(self, n: int) -> tuple[int, int]:
        """The ``(seed, offset)`` for a draw of ``n`` stream elements.

        With an owned seed, returns the current offset and advances it by ``n``;
        with ``seed=None``, returns a fresh seed from torch's default generator
        and offset 0 (the module's offset does not move).

        Args:
            n: stream elements the call uses (for masks:
                ``droplab.masks.stream_elements(shape, shared_dims)``).
        """
        if type(n) is not int or n < 0:  # else check_int would return n as is
            n = check_int(n, "n", low=0, owner=f"{type(self).__name__}.next_stream")
        if self._seed is None:
            return self._effective_seed(draw_seed()), 0
        offset = self._offset
        end = offset + n
        if end < OFFSET_LIMIT:  # what the offset setter accepts, without the call
            self._offset = end
        else:
            self.offset = end  # raises: the stream is finite
        return self._effective_seed(self._seed), offset

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
        return "" if self._seed is None else f"seed={self._seed}, offset={self._offset}"

    def get_extra_state(self) -> dict[str, Any]:
        """The stream position, saved in ``state_dict`` as plain Python ints."""
        return {"seed": self._seed, "offset": self._offset}

    def set_extra_state(self, state: Any) -> None:
        """Restore the stream position saved by :meth:`get_extra_state`."""
        if not isinstance(state, dict) or set(state) != {"seed", "offset"}:
            raise fail(
                "state",
                state,
                "a dict with the keys 'seed' and 'offset'",
                owner=f"{type(self).__name__}.set_extra_state",
                kind=TypeError if not isinstance(state, dict) else ValueError,
            )
        self.seed = state["seed"]
        self.offset = state["offset"]

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
        key = prefix + "_extra_state"
        if key in missing_keys:
            missing_keys.remove(key)
