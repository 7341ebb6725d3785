"""The streams of Monte-Carlo passes that run together on a replicated batch.

:func:`droplab.mc_predict` runs ``copies`` passes in one forward call, on the
batch replicated ``copies`` times along dim 0. The model's dropout sites are
numbered in registration order (droplab's modules and the registry's foreign
ones); functional and attention dropout, caught by
:class:`droplab.interop.Interception`, come last. For the duration of the
call, the ``k``-th call of site ``m`` in a forward pass draws from the stream
whose seed is :func:`droplab.rng.stream_seed` ``(seed, m, k)``, and pass ``t``
uses its elements ``t * E .. (t + 1) * E``, ``E`` being the elements one pass
draws. A call on the ``copies * B`` rows of the chunk that starts at pass
``t0`` draws ``copies * E`` elements from offset ``t0 * E``, row by row, so
each pass gets the same mask whatever chunk it falls in.

:class:`PassStreams` keeps that count. ``mc_predict``'s hooks on droplab's
modules take their streams from it, and so does the interception, through
:meth:`PassStreams.draw`: nothing in the interception calls back into
``mc_predict``.
"""

from __future__ import annotations

from collections.abc import Sequence

from droplab._validation import fail
from droplab.rng import stream_seed

__all__ = ["SHARED_DRAW", "PassStreams"]

# Added to the message naming an unreplayed draw when passes run chunked.
SHARED_DRAW = (
    "; with chunk > 1 the passes of a chunk run as one batch and share such a "
    "draw: a per-pass draw (layerdrop, stochastic depth by torch.rand) is then "
    "the same for every pass of the chunk, and the variance between passes it "
    "should add collapses (to exactly 0 where it is the only randomness); pass "
    "chunk=1 to draw it once per pass"
)


class PassStreams:
    """The per-call streams of the passes of one :func:`droplab.mc_predict` call.

    Args:
        seed: the seed every stream is derived from.
        sites: the names (module paths) of the model's dropout sites, by index.

    Attributes:
        first_pass: the first pass of the chunk in flight.
        copies: the passes in the chunk (the copies of the batch along dim 0).
        calls: the calls each site (and, last, functional dropout) has had in
            this forward call.
        active: the index of the foreign dropout module being called, whose
            torch function the interception catches; None outside one
            (functional dropout).
    """

    def __init__(self, seed: int, sites: Sequence[str]) -> None:
        self.seed = seed
        self.sites = tuple(sites)
        self.first_pass = 0
        self.copies = 1
        self.calls = [0] * (len(self.sites) + 1)
        self.active: int | None = None

    def start(self, first_pass: int, copies: int) -> None:
        """A forward call of passes ``first_pass .. first_pass + copies``."""
        self.first_pass, self.copies = first_pass, copies
        self.calls = [0] * (len(self.sites) + 1)

    def take(self, index: int, elements: int) -> tuple[int, int]:
        """``(seed, offset)`` of site ``index``'s next call, which draws
        ``elements`` stream elements (``copies`` equal parts, pass by pass)."""
        seed = stream_seed(self.seed, index, self.calls[index])
        self.calls[index] += 1
        return seed, self.first_pass * (elements // self.copies)

    def draw(self, elements: int) -> tuple[int, int]:
        """:meth:`take` for a call the interception caught: of the foreign
        module being called, else of functional dropout (the last stream)."""
        index = len(self.sites) if self.active is None else self.active
        if elements % self.copies:
            where = "functional dropout" if self.active is None else self.sites[index]
            raise fail(
                "model",
                f"dropout ({where!r}) whose input does not hold the batch along dim 0",
                "dropout applied to tensors whose dim 0 is the batch",
                owner="mc_predict",
            )
        return self.take(index, elements)

    def advice(self) -> str:
        """What to add to the message naming a draw droplab does not replay."""
        return SHARED_DRAW if self.copies > 1 else ""
