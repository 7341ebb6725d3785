"""A DTensor shard's dropout against plain local dropout of the same local size.

Run by hand (not collected by pytest), e.g.
``nice python benchmarks/bench_mesh.py --threads 1``. No process group is
needed: a shard is simulated by its box (``droplab.mesh.Box``), and the
kernel call a rank makes for it (``droplab.mesh.plan``: the shifted block or
the runs of the logical stream) is timed round-robin against the same
kernel on the same local tensor as a tensor of its own, and against
``x.clone()``, in this one process (best of ``--repeats`` blocks).

Cases: activations ``(B*T, H)`` of a transformer, sharded by rows (``Shard(0)``:
the aligned fast path, an offset shift), by columns (``Shard(1)``, TP degree 2,
4 and 8: runs of ``H / tp``), and attention probabilities ``(B, heads, T, T)``
with heads split (``Shard(1)``: one run per sample); a 2 x 2 mesh on both dims.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import timeit
from collections.abc import Callable
from typing import Any

import torch

from droplab.kernels import cpu
from droplab.mesh import Box, plan


def _shard(shape: tuple[int, ...], dim: int, parts: int, index: int) -> Box:
    size = shape[dim] // parts
    start = tuple(index * size if d == dim else 0 for d in range(len(shape)))
    local = tuple(size if d == dim else s for d, s in enumerate(shape))
    return Box(shape, start, local)


def cases() -> list[tuple[str, Box]]:
    rows, hidden = 8 * 1024, 1024  # (B*T, H): 2**23 elements
    found = [("(B*T, H) Shard(0) of 4", _shard((rows, hidden), 0, 4, 1))]
    for tp in (2, 4, 8):
        found.append((f"(B*T, H) Shard(1) of {tp}", _shard((rows, hidden), 1, tp, 1)))
    attention = (8, 16, 256, 256)  # (B, heads, T, T)
    found.append(("(B, h, T, T) Shard(1) of 4", _shard(attention, 1, 4, 2)))
    both = Box((rows, hidden), (rows // 2, hidden // 2), (rows // 2, hidden // 2))
    found.append(("(B*T, H) 2x2 mesh", both))
    return found


def best(fn: Callable[[], object], number: int, repeats: int) -> list[float]:
    return [t / number for t in timeit.repeat(fn, number=number, repeat=repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--number", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    kw: dict[str, Any] = dict(p=0.1, seed=5, offset=0, scale="inverted")
    kw |= dict(sampler="bernoulli", shared_dims=())
    print(
        f"{'case':32} {'local elements':>15} {'shard ms':>9} {'local ms':>9} "
        f"{'clone ms':>9} {'shard/local':>12} {'local/clone':>12}"
    )
    for name, box in cases():
        where = plan(box, ())
        x = torch.randn(box.local)
        extra = {"offset": where} if isinstance(where, int) else {"runs": where}
        shard = functools.partial(cpu.masked_scale, x, **{**kw, **extra})
        local = functools.partial(cpu.masked_scale, x, **kw)
        clone = x.clone
        shard(), local()  # compile the kernels
        timings: dict[str, list[float]] = {"shard": [], "local": [], "clone": []}
        for _ in range(args.repeats):  # round-robin: fair under a drifting load
            for label, fn in (("shard", shard), ("local", local), ("clone", clone)):
                timings[label] += best(fn, args.number, 1)
        s, loc, c = (min(timings[k]) * 1e3 for k in ("shard", "local", "clone"))
        print(
            f"{name:32} {math.prod(box.local):>15,} {s:9.3f} {loc:9.3f} "
            f"{c:9.3f} {s / loc:12.2f} {loc / c:12.2f}"
        )


if __name__ == "__main__":
    main()
