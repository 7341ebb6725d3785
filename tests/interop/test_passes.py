"""Tests of droplab.interop.passes: the streams of Monte-Carlo passes."""

from __future__ import annotations

import pytest

from droplab.interop.passes import SHARED_DRAW, PassStreams
from droplab.rng import stream_seed


def test_a_pass_gets_the_same_stream_part_whatever_its_chunk() -> None:
    # 6 passes, each drawing E = 4 elements per call of site 0: pass t must
    # start at t * E in the stream of (seed, site, call), in any chunking.
    E = 4
    starts: dict[int, list[tuple[int, int]]] = {}
    for chunk in (1, 2, 4, 6):
        streams = PassStreams(9, ["layer.0", "layer.1"])
        seen = []
        for first in range(0, 6, chunk):
            copies = min(chunk, 6 - first)
            streams.start(first, copies)
            for call in range(2):  # site 0 called twice per forward
                seed, offset = streams.take(0, copies * E)
                assert seed == stream_seed(9, 0, call)
                seen += [(call, offset + t * E) for t in range(copies)]
        starts[chunk] = sorted(seen)
    assert starts[1] == starts[2] == starts[4] == starts[6]
    assert starts[1] == sorted((c, t * E) for c in range(2) for t in range(6))


def test_intercepted_draws_take_the_active_module_or_the_functional_stream() -> None:
    streams = PassStreams(3, ["a", "b"])
    streams.start(4, 2)
    assert streams.draw(10) == (stream_seed(3, 2, 0), 4 * 5)  # functional: last
    streams.active = 1
    assert streams.draw(6) == (stream_seed(3, 1, 0), 4 * 3)
    assert streams.draw(6) == (stream_seed(3, 1, 1), 4 * 3)  # its next call
    assert streams.calls == [0, 2, 1]
    streams.start(6, 1)  # a new forward call: the counts start again
    assert streams.calls == [0, 0, 0]


def test_a_draw_that_does_not_split_into_the_passes_is_refused() -> None:
    streams = PassStreams(3, ["encoder.drop"])
    streams.start(0, 3)
    with pytest.raises(ValueError, match=r"dropout \('functional dropout'\) whose"):
        streams.draw(10)
    streams.active = 0
    with pytest.raises(ValueError, match=r"dropout \('encoder.drop'\) whose input"):
        streams.draw(4)
    assert streams.calls == [0, 0]  # a refused call takes nothing


def test_the_advice_speaks_of_chunks_only_when_passes_share_a_call() -> None:
    streams = PassStreams(0, [])
    assert streams.advice() == ""
    streams.start(0, 2)
    assert streams.advice() == SHARED_DRAW
