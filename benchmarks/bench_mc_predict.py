"""Time mc_predict against a Python loop of T forward passes on the same streams.

The network is the UCI one of Gal & Ghahramani (2016): dropout on the input,
one hidden layer of 50 ReLU units, dropout, a linear output; 100 inputs of 13
features (bostonHousing's width); T = 1000 passes. The loop gives pass t of
dropout module m the stream ``stream_seed(seed, m, 0)`` from offset ``t * E``
(E: the mask elements of one pass), exactly the streams mc_predict uses, so the
two must agree: the script checks the masks are identical (via a final dropout's
zeros) and reports the largest output difference (BLAS may round a product of
100 rows differently from one of c x 100 rows).

Usage: python benchmarks/bench_mc_predict.py [--samples 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from droplab import kernels
from droplab.nn import Dropout, mc_dropout
from droplab.rng import stream_seed
from droplab.uncertainty.mc import DEFAULT_MAX_ROWS, mc_predict


def network(features: int, hidden: int, p: float) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        Dropout(p, seed=1),
        torch.nn.Linear(features, hidden),
        torch.nn.ReLU(),
        Dropout(p, seed=2),
        torch.nn.Linear(hidden, 1),
    )


def python_loop(
    model: torch.nn.Sequential, x: torch.Tensor, samples: int, seed: int
) -> torch.Tensor:
    """T separate forward calls, each pinned to mc_predict's stream elements."""
    drops = [m for m in model if isinstance(m, Dropout)]
    saved = [(m.seed, m.offset) for m in drops]
    outputs = []
    with torch.no_grad(), mc_dropout(model):
        for t in range(samples):
            h = x
            for layer in model:
                if isinstance(layer, Dropout):
                    m = drops.index(layer)
                    layer.seed = stream_seed(seed, m, 0)
                    layer.offset = t * h.numel()  # E = B x width of this layer
                h = layer(h)
            outputs.append(h)
    for m, (s, o) in zip(drops, saved, strict=True):
        m.seed, m.offset = s, o
    return torch.stack(outputs)


def interleaved(
    functions: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Wall times of ``repeats`` runs of each function, alternating, so that the
    load of a shared machine falls on both sides alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--features", type=int, default=13)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (droplab's kernels follow them)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # droplab's CPU kernels follow it too
    model = network(args.features, args.hidden, 0.1)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(args.inputs, args.features, generator=generator)
    seed = 12345

    # Warm-up (kernel compilation, allocator) outside the timings.
    python_loop(model, x, 2, seed)
    mc_predict(model, x, samples=2, seed=seed)
    times = interleaved(
        {
            "loop": lambda: python_loop(model, x, args.samples, seed),
            "mc": lambda: mc_predict(model, x, samples=args.samples, seed=seed),
        },
        args.repeats,
    )

    loop_out = python_loop(model, x, args.samples, seed)
    result = mc_predict(model, x, samples=args.samples, seed=seed, keep_samples=True)
    if result.samples is None:
        raise RuntimeError("mc_predict returned no samples")
    samples = result.samples.to(torch.float32)
    difference = float((samples - loop_out).abs().max())
    # Masks: append a dropout layer whose zeros are its mask, and compare them.
    masked = torch.nn.Sequential(*model, Dropout(0.5, seed=3))
    loop_zeros = python_loop(masked, x, 50, seed) == 0
    masked_result = mc_predict(masked, x, samples=50, seed=seed, keep_samples=True)
    if masked_result.samples is None:
        raise RuntimeError("mc_predict returned no samples")
    mc_zeros = masked_result.samples == 0

    chunk = min(args.samples, max(1, DEFAULT_MAX_ROWS // args.inputs))
    loop_median, mc_median = (statistics.median(times[k]) for k in ("loop", "mc"))
    loop_best, mc_best = min(times["loop"]), min(times["mc"])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()}"
    )
    print(
        f"torch {torch.__version__}, {args.threads} thread(s) (torch and numba); "
        f"dropout backend: {kernels.select(x).__module__}"
    )
    print(
        f"network {args.features}-{args.hidden}-1, {args.inputs} inputs, "
        f"T = {args.samples}, mc_predict chunk = {chunk} passes per call, "
        f"{args.repeats} interleaved runs"
    )
    print(
        f"python loop of T passes: median {loop_median:.3f} s, best {loop_best:.3f} s"
    )
    print(f"mc_predict:              median {mc_median:.3f} s, best {mc_best:.3f} s")
    print(
        f"speed-up: {loop_median / mc_median:.1f}x (medians), "
        f"{loop_best / mc_best:.1f}x (best runs)"
    )
    print(
        f"identical masks: {bool(torch.equal(loop_zeros, mc_zeros))}; "
        f"identical outputs: {bool(torch.equal(samples, loop_out))} "
        f"(largest difference {difference:.3g})"
    )


if __name__ == "__main__":
    main()
