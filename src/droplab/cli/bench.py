"""``droplab bench``: time droplab's dropout against PyTorch's, in one process.

Everything is measured in the same process, interleaved, so ratios are fair on
a machine whose load changes: for each size, droplab's dropout, PyTorch's
``torch.nn.functional.dropout`` and a plain ``x.clone()`` (the cost of reading
and writing the tensor once), forward and forward+backward, as nanoseconds per
element and as ratios. Also: bytes saved for backward (counted with
``torch.autograd.graph.saved_tensors_hooks``), a training step of a
40-512-512-10 MLP, and the first-call cost of the Numba kernels (in fresh
processes, with a cold and a warm on-disk cache).

Timings are the best of several repeats (the least disturbed by other work);
no timing is ever asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from droplab import functional, nn
from droplab.cli._args import int_at_least, real_in
from droplab.cli._timing import bind_forward, bind_forward_backward, saved_bytes

__all__ = [
    "add_arguments",
    "bind_forward",
    "bind_forward_backward",
    "format_table",
    "jit_warmup",
    "mlp_step",
    "run_cli",
    "saved_bytes",
    "size_sweep",
]


def best_seconds(
    fns: dict[str, Callable[[], Any]],
    repeats: int = 5,
    spread: dict[str, float] | None = None,
) -> dict[str, float]:
    """Best time per call of each function, measured round-robin.

    Each repeat runs every function in turn for enough calls to last ~20 ms,
    so slow drifts of the machine's load hit all of them alike. When
    ``spread`` is given, it receives for each function how far the median
    repeat lies above the best one (0.1: 10 %), the sign of a busy machine.
    """
    loops = {}
    for name, fn in fns.items():
        fn()  # warm-up (and JIT compilation)
        start = time.perf_counter()
        fn()
        loops[name] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            times[name].append((time.perf_counter() - start) / loops[name])
    best = {name: min(values) for name, values in times.items()}
    if spread is not None:
        for name, values in times.items():
            middle = sorted(values)[len(values) // 2]
            spread[name] = middle / best[name] - 1.0 if best[name] > 0 else 0.0
    return best


def size_sweep(
    exponents: range,
    p: float = 0.5,
    repeats: int = 5,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """ns/element of droplab, torch and clone, forward and forward+backward, float32.

    Each row also holds ``spread``: the largest median-over-best excess of its
    timings (see :func:`best_seconds`). ``on_row`` is called with each row as
    soon as it is measured (progress for a long sweep).
    """
    ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "droplab": lambda v: functional.dropout(v, p, seed=1234),
        "torch": lambda v: torch.nn.functional.dropout(v, p),
        "clone": lambda v: v.clone(),
    }
    rows = []
    for e in exponents:
        n = 1 << e
        x = torch.randn(n)
        xg = x.clone().requires_grad_()
        grad = torch.randn(n)
        fns: dict[str, Callable[[], Any]] = {}
        for name, op in ops.items():
            fns[f"fwd_{name}"] = bind_forward(op, x)
            fns[f"fb_{name}"] = bind_forward_backward(op, xg, grad)
        spread: dict[str, float] = {}
        seconds = best_seconds(fns, repeats, spread)
        row: dict[str, Any] = {"n": n, "log2n": e}
        row.update({k: v / n * 1e9 for k, v in seconds.items()})
        row["spread"] = max(spread.values())
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


NOISY = 0.25  # median repeat this far above the best: the machine is busy
# Ratios no quiet run has given (docs/performance.md: torch/droplab 1.2-18x,
# droplab/clone 0.4-17 from 2^12 to 2^26): past them a timing was disturbed.
TORCH_OVER_DROPLAB_MAX = 50.0
DROPLAB_OVER_CLONE_MIN = 0.1


def _implausible(row: dict[str, Any]) -> bool:
    for kind in ("fwd", "fb"):
        mine = row.get(f"{kind}_droplab")
        torch_, clone = row.get(f"{kind}_torch"), row.get(f"{kind}_clone")
        if mine is None or mine <= 0:
            continue
        if torch_ is not None and torch_ / mine > TORCH_OVER_DROPLAB_MAX:
            return True
        if clone is not None and clone > 0 and mine / clone < DROPLAB_OVER_CLONE_MIN:
            return True
    return False


def noise_warning(
    rows: list[dict[str, Any]],
    threads: int,
    load: float | None = None,
    cores: int | None = None,
) -> str | None:
    """Warnings, one a line, when a sweep's timings cannot be trusted (None: none).

    Three signs: the repeats disagree (median far above the best); a ratio no
    quiet run gives (every repeat of one timing was disturbed alike, which the
    first sign misses); the load average above the cores (other work competes
    with every timing).

    >>> noise_warning([{"log2n": 12, "spread": 0.05}], 2) is None
    True
    >>> print(noise_warning([{"log2n": 12, "spread": 0.6}], 2))
    warning: repeats disagree (median up to 60 % above the best, at 2^12, 2 threads): the machine is busy, so the ratios can contradict each other; rerun on a quiet machine or with more --repeats
    >>> row = {"log2n": 16, "spread": 0.1, "fwd_droplab": 0.1, "fwd_torch": 16.9,
    ...        "fwd_clone": 0.07}
    >>> print(noise_warning([row], 2, load=7.5, cores=2))
    warning: a ratio no quiet run gives at 2^16 (torch/droplab above 50x or droplab/clone below 0.1): some timings were disturbed in every repeat; the ratios there mean nothing
    warning: the machine is busy (load 7.5 on 2 cores): every timing competes with other work; rerun on a quiet machine
    """
    lines = []
    noisy = [r for r in rows if r.get("spread", 0.0) > NOISY]
    if noisy:
        worst = max(noisy, key=lambda r: r["spread"])
        where = ", ".join(f"2^{r['log2n']}" for r in noisy)
        lines.append(
            f"warning: repeats disagree (median up to {100 * worst['spread']:.0f} % "
            f"above the best, at {where}, {threads} threads): the machine is busy, so "
            "the ratios can contradict each other; rerun on a quiet machine or with "
            "more --repeats"
        )
    odd = [r for r in rows if _implausible(r)]
    if odd:
        where = ", ".join(f"2^{r['log2n']}" for r in odd)
        lines.append(
            f"warning: a ratio no quiet run gives at {where} (torch/droplab above "
            f"{TORCH_OVER_DROPLAB_MAX:g}x or droplab/clone below "
            f"{DROPLAB_OVER_CLONE_MIN:g}): some timings were disturbed in every "
            "repeat; the ratios there mean nothing"
        )
    if load is not None and cores and load > cores:
        lines.append(
            f"warning: the machine is busy (load {load:.1f} on {cores} cores): every "
            "timing competes with other work; rerun on a quiet machine"
        )
    return "\n".join(lines) or None


def mlp_step(steps: int = 200, repeats: int = 5, p: float = 0.5) -> dict[str, float]:
    """Seconds per SGD step of a 40-512-512-10 ReLU MLP, batch 64.

    Dropout after each hidden layer: none, ``torch.nn.Dropout`` or
    ``droplab.nn.Dropout`` (default arguments: a fresh seed per call). Row
    ``multiply`` puts ``x * (1 / (1 - p))`` there instead: one out-of-place
    element-wise op with its C++ backward and no mask, the floor for any
    dropout that writes a new tensor.
    """
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 40, generator=gen)
    labels = torch.randint(0, 10, (64,), generator=gen)

    def model(drop: Callable[[], torch.nn.Module]) -> Callable[[], None]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(40, 512),
            torch.nn.ReLU(),
            drop(),
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            drop(),
            torch.nn.Linear(512, 10),
        )
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(net(inputs), labels).backward()
            opt.step()

        return step

    fns = {
        "none": model(torch.nn.Identity),
        "multiply": model(lambda: _Multiply(1.0 / (1.0 - p))),
        "torch": model(lambda: torch.nn.Dropout(p)),
        "droplab": model(lambda: nn.Dropout(p)),
    }
    return best_seconds({k: _repeat(f, steps) for k, f in fns.items()}, repeats) | {
        "steps": float(steps)
    }


class _Multiply(torch.nn.Module):
    """``x * factor``: an element-wise op of dropout's size, without a mask."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _repeat(fn: Callable[[], None], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


_WARMUP_PROBE = """
import time
start = time.perf_counter()
import torch
from droplab import functional
x = torch.randn(1 << 16)
imported = time.perf_counter()
functional.dropout(x, 0.5, seed=1)
first = time.perf_counter()
functional.dropout(x, 0.5, seed=1, sampler="fixed", scale="realized")
other = time.perf_counter()
functional.dropout(x, 0.5, seed=1)
again = time.perf_counter()
print(imported - start, first - imported, other - first, again - other)
"""


def jit_warmup() -> dict[str, dict[str, float]]:
    """First-call costs in fresh processes: a cold Numba cache, then a warm one.

    Returns, per case, seconds for: importing droplab and torch, the first
    Bernoulli call (compiles or loads the fused kernels), the first
    fixed/realized call (the other kernels), and a call after that.
    """
    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("DROPLAB_BACKEND", None)
        for case in ("cold cache", "warm cache"):
            done = subprocess.run(
                [sys.executable, "-c", _WARMUP_PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            values = [float(v) for v in done.stdout.split()]
            result[case] = dict(
                zip(("import", "first", "other kernels", "again"), values, strict=True)
            )
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`size_sweep` rows.

    >>> row = {"log2n": 12, "fwd_droplab": 1.0, "fwd_torch": 10.0, "fwd_clone": 0.5,
    ...        "fb_droplab": 2.0, "fb_torch": 30.0, "fb_clone": 1.0}
    >>> print(format_table([row]).splitlines()[-1])
    | 2^12 | 1.00 | 10.00 | 0.50 | 10.0x | 2.00 | 2.00 | 30.00 | 1.00 | 15.0x | 2.00 |
    """
    head = (
        "| n | fwd droplab | fwd torch | fwd clone | torch/droplab | droplab/clone "
        "| f+b droplab | f+b torch | f+b clone | torch/droplab | droplab/clone |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| 2^{r['log2n']} | {r['fwd_droplab']:.2f} | {r['fwd_torch']:.2f} "
            f"| {r['fwd_clone']:.2f} | {r['fwd_torch'] / r['fwd_droplab']:.1f}x "
            f"| {r['fwd_droplab'] / r['fwd_clone']:.2f} | {r['fb_droplab']:.2f} "
            f"| {r['fb_torch']:.2f} | {r['fb_clone']:.2f} "
            f"| {r['fb_torch'] / r['fb_droplab']:.1f}x "
            f"| {r['fb_droplab'] / r['fb_clone']:.2f} |"
        )
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"droplab bench: {message} ...", file=sys.stderr, flush=True)


def _log2(text: str) -> int:
    value = int_at_least(1)(text)
    if value > 30:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, 30]; got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of ``droplab bench``."""
    del name  # one command
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where to time (cpu); cuda times with CUDA events, see "
        "droplab.cli.bench_cuda",
    )
    parser.add_argument(
        "--min-log2", type=_log2, help="smallest size, 2^k (12 on cpu, 20 on cuda)"
    )
    parser.add_argument(
        "--max-log2", type=_log2, help="largest size, 2^k (26 on cpu, 28 on cuda)"
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="dtypes of the cuda size sweep (all three; the cpu sweep is float32)",
    )
    parser.add_argument(
        "--p",
        type=real_in(0.0, 1.0, high_open=True),
        default=0.5,
        help="drop probability in [0, 1) (0.5)",
    )
    parser.add_argument(
        "--repeats", type=int_at_least(1), default=5, help="repeats per timing (5)"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["sizes", "saved", "mlp", "jit", "mc", "graph", "compiled"],
        help="parts to leave out (cpu: sizes saved mlp jit; "
        "cuda: sizes saved mc graph compiled)",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        help="torch.set_num_threads first (droplab follows it)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmarks and print Markdown tables; 2 on bad options or no CUDA."""
    cuda = args.device == "cuda"
    if args.min_log2 is None:
        args.min_log2 = 20 if cuda else 12
    if args.max_log2 is None:
        args.max_log2 = 28 if cuda else 26
    if args.min_log2 > args.max_log2:
        print(
            f"droplab bench: error: argument --max-log2: must be >= --min-log2 "
            f"({args.min_log2}); got {args.max_log2} (see droplab bench --help)",
            file=sys.stderr,
        )
        return 2
    if cuda:
        return _run_cuda(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        "ns per element, float32, best of repeats"
    )
    if "sizes" not in args.skip:
        sizes = range(args.min_log2, args.max_log2 + 1)
        _progress(f"timing {len(sizes)} sizes, 2^{args.min_log2} to 2^{args.max_log2}, "
                  f"{args.repeats} repeats each (a row per size as it finishes)")  # fmt: skip
        print(format_table([]), flush=True)

        def show(row: dict[str, Any]) -> None:
            print(format_table([row]).splitlines()[-1], flush=True)

        rows = size_sweep(sizes, args.p, args.repeats, on_row=show)
        results["sizes"] = rows
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        warning = noise_warning(rows, torch.get_num_threads(), load, os.cpu_count())
        if warning:
            print(warning, file=sys.stderr, flush=True)
    if "saved" not in args.skip:
        _progress("counting bytes saved for backward")
        results["saved"] = saved_bytes(p=args.p)
        print("bytes saved for backward, 2^20 float32 elements:", results["saved"])
    if "mlp" not in args.skip:
        _progress(f"timing an MLP training step, 4 variants x {args.repeats} repeats")
        mlp = mlp_step(repeats=args.repeats, p=args.p)
        results["mlp"] = mlp
        steps = mlp.pop("steps")
        base = mlp["none"]
        for key, seconds in mlp.items():
            print(
                f"MLP step ({key}{'' if key == 'multiply' else ' dropout'}): "
                f"{seconds / steps * 1e3:.3f} ms "
                f"({(seconds / base - 1) * 100:+.1f} % over none)"
            )
    if "jit" not in args.skip:
        _progress("first-call cost of the kernels, in two fresh processes")
        results["jit"] = jit_warmup()
        for case, parts in results["jit"].items():
            print(
                f"JIT, {case}: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


def _run_cuda(args: argparse.Namespace) -> int:
    """``droplab bench --device cuda``: CUDA-event timings, one part after another.

    A part that fails (a capture the op does not support, a compile error) is
    reported with its error and the others still run.
    """
    if not torch.cuda.is_available():
        print(
            "droplab bench: --device cuda needs a CUDA device, and torch sees none "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
            "run it on a machine with an NVIDIA GPU, or use --device cpu",
            file=sys.stderr,
        )
        return 2
    from droplab import kernels
    from droplab.cli import bench_cuda as cuda_bench

    if not kernels.triton_available():
        print(
            "droplab bench: --device cuda needs Triton (pip install 'droplab[gpu]'); "
            "without it droplab runs its reference path on the GPU",
            file=sys.stderr,
        )
        return 2
    import triton

    props = torch.cuda.get_device_properties(0)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "memory_gib": props.total_memory / 2**30,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "p": args.p,
    }
    print(
        f"{results['device']} ({results['memory_gib']:.0f} GiB), torch "
        f"{torch.__version__}, CUDA {torch.version.cuda}, Triton {triton.__version__}; "
        f"p = {args.p}; medians of {args.repeats} repeats timed with CUDA events",
        flush=True,
    )

    def part(name: str, run: Callable[[], Any]) -> None:
        if name in args.skip:
            return
        try:
            results[name] = run()
        except Exception as error:  # one failing part must not hide the others
            results[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
            print(f"{name}: failed: {results[name]['error']}", flush=True)
        torch.cuda.synchronize()

    dtypes = [cuda_bench.DTYPES[d] for d in (args.dtypes or cuda_bench.DTYPES)]

    def sizes() -> list[dict[str, Any]]:
        print(cuda_bench.format_size_table([]), flush=True)

        def show(row: dict[str, Any]) -> None:
            print(cuda_bench.format_size_table([row]).splitlines()[-1], flush=True)

        return cuda_bench.size_sweep(
            range(args.min_log2, args.max_log2 + 1),
            dtypes,
            p=args.p,
            repeats=args.repeats,
            on_row=show,
        )

    part("sizes", sizes)
    part("saved", lambda: saved_bytes(p=args.p, device="cuda"))
    if isinstance(results.get("saved"), dict) and "error" not in results["saved"]:
        print("bytes saved for backward, 2^20 float32 elements:", results["saved"])
    part("mc", lambda: cuda_bench.mc_replicated(p=args.p, repeats=args.repeats))
    if "mc" in results and "error" not in results["mc"]:
        mc = results["mc"]
        print(
            f"MC dropout, T = {mc['samples']} on a batch of {mc['batch']} "
            f"(width {mc['width']}): droplab mc_predict {mc['droplab_ms']:.2f} ms, "
            f"torch replicated batch {mc['torch_ms']:.2f} ms "
            f"(torch/droplab {mc['torch_over_droplab']:.2f}x)",
            flush=True,
        )
    part("compiled", cuda_bench.compiled_path)
    if "compiled" in results:
        print("compiled path:", results["compiled"], flush=True)
    # Last: a failed capture can leave the CUDA context unusable.
    part("graph", lambda: cuda_bench.graph_step(p=args.p))
    if "graph" in results:
        print("CUDA graph of a training step:", results["graph"], flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0
