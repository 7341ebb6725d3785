"""Per-call cost of droplab's eager ops, against PyTorch and a plain copy.

Run by hand (not collected by pytest), e.g.
``nice python benchmarks/bench_eager_calls.py --threads 1``. It uses only
droplab's public API, so the same script times two checkouts (issue 22 timed
the commit before the one-declaration op and the one after, alternating, in
one sitting: ``--label`` names each run's lines).

Each case is timed round-robin with its PyTorch counterpart and ``x.clone()``
in this one process (best of ``--repeats`` blocks of ``--number`` calls), so
the ratios are fair when the machine's load drifts. Inputs require grad where
the case has a backward; "no_grad" cases run under ``torch.no_grad()``.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import torch
from torch.nn import functional as F

import droplab
import droplab.nn as dnn


def cases(n: int) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(name, droplab call, torch call) for a float32 input of ``n`` elements."""
    x = torch.randn(n, requires_grad=True)
    g = torch.ones(n)
    plain = torch.randn(n)
    ours, theirs = dnn.Dropout(0.5), torch.nn.Dropout(0.5)
    alpha, t_alpha = dnn.AlphaDropout(0.2), torch.nn.AlphaDropout(0.2)
    gauss = dnn.GaussianDropout(0.3)
    path = dnn.DropPath(0.2)

    def timm_drop_path(t: torch.Tensor) -> torch.Tensor:
        # timm.layers.drop_path, written out (timm is not in the base environment)
        keep = 0.8
        shape = (t.shape[0],) + (1,) * (t.ndim - 1)
        return t * t.new_empty(shape).bernoulli_(keep).div_(keep)

    def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()

        return run

    return [
        (
            "dropout(x, seed=1)",
            lambda: droplab.dropout(x, 0.5, seed=1),
            lambda: F.dropout(x, 0.5),
        ),
        ("Dropout()(x)", lambda: ours(x), lambda: theirs(x)),
        (
            "Dropout()(x).backward(g)",
            lambda: ours(x).backward(g),
            lambda: theirs(x).backward(g),
        ),
        (
            "no_grad Dropout()(x)",
            no_grad(lambda: ours(plain)),
            no_grad(lambda: theirs(plain)),
        ),
        (
            "DropPath()(x)",
            lambda: path(x.view(-1, 1)),
            lambda: timm_drop_path(x.view(-1, 1)),
        ),
        (
            "AlphaDropout()(x).backward(g)",
            lambda: alpha(x).backward(g),
            lambda: t_alpha(x).backward(g),
        ),
        (
            "GaussianDropout()(x).backward(g)",
            lambda: gauss(x).backward(g),
            lambda: (x * (1 + 0.65 * torch.randn_like(x))).backward(g),
        ),
    ]


def best(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of one block of ``number`` calls."""
    return timeit.timeit(fn, number=number) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2**15])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--number", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"{args.label} torch {torch.__version__}, droplab {droplab.__version__}, "
        f"{torch.get_num_threads()} threads; µs per call, best of {args.repeats}"
    )
    print("case | elements | droplab | torch | x.clone() | droplab / torch")
    for n in args.sizes:
        clone_x = torch.randn(n)
        for name, ours, theirs in cases(n):
            for fn in (ours, theirs):  # warm up (Numba compiles on first use)
                fn(), fn()
            times: dict[str, list[float]] = {"ours": [], "theirs": [], "copy": []}
            for _ in range(args.repeats):
                times["ours"].append(best(ours, args.number))
                times["theirs"].append(best(theirs, args.number))
                times["copy"].append(best(clone_x.clone, args.number))
            a, b, c = (min(times[k]) * 1e6 for k in ("ours", "theirs", "copy"))
            print(f"{name} | {n} | {a:.2f} | {b:.2f} | {c:.2f} | {a / b:.2f}")


if __name__ == "__main__":
    main()
