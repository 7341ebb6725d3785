"""``droplab bench --device cuda``: droplab's dropout on a GPU, timed with CUDA events.

What is measured, all in one process and interleaved (each repeat runs every
contender in turn, so a drift of clocks or load hits all of them alike):

- **sizes**: for n = 2^20 .. 2^28 elements and float32 / bfloat16 / float16,
  droplab's :func:`droplab.functional.dropout` (seeded, so the Triton kernel
  runs), ``torch.nn.functional.dropout``, and a device copy of the same bytes
  (``torch.empty_like(x).copy_(x)``, the floor for any op that reads the input
  once and writes an output once). Forward, and forward+backward (the copy row
  is then two copies: the least any dropout can move is the input and output of
  forward plus the gradient's read and write in backward).
- **mc**: Monte-Carlo prediction with T passes of an MLP on a replicated batch,
  :func:`droplab.uncertainty.mc_predict` against the same network with
  ``torch.nn.Dropout`` run on the batch replicated T times.
- **graph**: a training step of an MLP with seeded droplab dropouts, captured
  once in a CUDA graph and replayed; reports the time per replay against the
  eager step, and whether the masks change from one replay to the next.
- **compiled**: the compiled path of droplab's dropout, where it exists.

Bandwidth counts the bytes an op cannot avoid moving (:func:`effective_bytes`)
and divides by the median time: 2 x n x itemsize for forward (read the input,
write the output), 4 x n x itemsize for forward+backward. "% of copy" is the
copy's time over droplab's on those same bytes. Medians over repeats; each
repeat times ``inner`` back-to-back calls between two CUDA events, so the
figures include the launch cost a user pays in eager mode (at 2^20 elements that
cost, not memory, bounds every contender). No timing is ever asserted in a test.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch

from droplab import functional
from droplab import nn as dnn
from droplab.cli._timing import bind_forward, bind_forward_backward
from droplab.uncertainty import mc_predict

__all__ = [
    "DTYPES",
    "bandwidth",
    "cuda_median_seconds",
    "effective_bytes",
    "format_size_table",
    "graph_step",
    "mc_replicated",
    "size_row",
    "size_sweep",
]

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Passes over the tensor that each measured kind cannot avoid: forward reads x
# and writes y; backward reads the incoming gradient and writes the input's.
_PASSES = {"forward": 2, "forward_backward": 4}


def effective_bytes(n: int, dtype: torch.dtype, kind: str) -> int:
    """Bytes that ``kind`` must move at the least for ``n`` elements of ``dtype``.

    >>> effective_bytes(1 << 20, torch.float32, "forward")
    8388608
    >>> effective_bytes(1 << 20, torch.bfloat16, "forward_backward")
    8388608
    """
    if kind not in _PASSES:
        raise ValueError(f"kind must be one of {sorted(_PASSES)}; got {kind!r} instead")
    itemsize = torch.empty((), dtype=dtype).element_size()
    return _PASSES[kind] * n * itemsize


def bandwidth(num_bytes: float, seconds: float) -> float:
    """Bytes per second; ``nan`` for a non-positive time.

    >>> bandwidth(4e9, 2e-3)
    2000000000000.0
    """
    return num_bytes / seconds if seconds > 0 else math.nan


def size_row(n: int, dtype: torch.dtype, seconds: dict[str, float]) -> dict[str, Any]:
    """One table row from median seconds keyed ``{fwd,fb}_{droplab,torch,copy}``.

    Adds, for ``fwd`` and ``fb``: bandwidth in GB/s of each contender (on the
    :func:`effective_bytes` of the kind), ``torch/droplab`` (above 1: droplab is
    faster) and ``copy_pct`` (the copy's time over droplab's, in %).

    >>> s = {"fwd_droplab": 2e-3, "fwd_torch": 3e-3, "fwd_copy": 1.8e-3,
    ...      "fb_droplab": 4e-3, "fb_torch": 8e-3, "fb_copy": 3.6e-3}
    >>> row = size_row(1 << 28, torch.float32, s)
    >>> round(row["fwd_copy_pct"], 1), round(row["fwd_torch_over_droplab"], 2)
    (90.0, 1.5)
    >>> round(row["fwd_droplab_gbs"])
    1074
    """
    row: dict[str, Any] = {
        "n": n,
        "log2n": int(math.log2(n)) if n > 0 and n & (n - 1) == 0 else None,
        "dtype": str(dtype).removeprefix("torch."),
    }
    for part, kind in (("fwd", "forward"), ("fb", "forward_backward")):
        moved = effective_bytes(n, dtype, kind)
        for who in ("droplab", "torch", "copy"):
            key = f"{part}_{who}"
            if key not in seconds:
                continue
            row[f"{key}_ms"] = seconds[key] * 1e3
            row[f"{key}_gbs"] = bandwidth(moved, seconds[key]) / 1e9
        if f"{part}_droplab" in seconds:
            mine = seconds[f"{part}_droplab"]
            if f"{part}_torch" in seconds:
                row[f"{part}_torch_over_droplab"] = seconds[f"{part}_torch"] / mine
            if f"{part}_copy" in seconds:
                row[f"{part}_copy_pct"] = 100.0 * seconds[f"{part}_copy"] / mine
    return row


def format_size_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`size_row` rows.

    >>> s = {"fwd_droplab": 2e-3, "fwd_torch": 3e-3, "fwd_copy": 1.8e-3,
    ...      "fb_droplab": 4e-3, "fb_torch": 8e-3, "fb_copy": 3.6e-3}
    >>> print(format_size_table([size_row(1 << 28, torch.float32, s)]).splitlines()[-1])
    | 2^28 | float32 | 2.000 | 1074 | 1.50x | 90.0 % | 4.000 | 1074 | 2.00x | 90.0 % |
    """
    head = (
        "| n | dtype | fwd ms | fwd GB/s | torch/droplab | % of copy "
        "| f+b ms | f+b GB/s | torch/droplab | % of copy |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        cells = [
            f"2^{r['log2n']}" if r["log2n"] is not None else str(r["n"]),
            r["dtype"],
        ]
        for part in ("fwd", "fb"):
            cells += [
                f"{r.get(f'{part}_droplab_ms', math.nan):.3f}",
                f"{r.get(f'{part}_droplab_gbs', math.nan):.0f}",
                f"{r.get(f'{part}_torch_over_droplab', math.nan):.2f}x",
                f"{r.get(f'{part}_copy_pct', math.nan):.1f} %",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cuda_median_seconds(
    fns: dict[str, Callable[[], Any]],
    *,
    repeats: int = 10,
    warmup: int = 2,
    min_seconds: float = 2e-3,
) -> dict[str, float]:
    """Median seconds per call of each function, timed with CUDA events.

    Every function is warmed up (Triton compiles on its first call), then given
    ``inner`` calls per repeat, enough for ~``min_seconds`` of GPU time, so
    that event resolution (~0.5 us) does not matter. Repeats go round-robin.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_median_seconds needs a CUDA device; none is available")
    inner: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        start, end = (
            torch.cuda.Event(enable_timing=True),
            torch.cuda.Event(enable_timing=True),
        )
        start.record()
        fn()
        end.record()
        end.synchronize()
        once = start.elapsed_time(end) / 1e3
        inner[name] = max(1, min(1000, math.ceil(min_seconds / max(once, 1e-7))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, end = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            start.record()
            for _ in range(inner[name]):
                fn()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) / 1e3 / inner[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def _copy(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x).copy_(x)


def size_sweep(
    exponents: range,
    dtypes: list[torch.dtype],
    *,
    p: float = 0.5,
    repeats: int = 10,
    device: str = "cuda",
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`size_row` for every size and dtype; ``on_row`` sees each row as it comes."""
    ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "droplab": lambda v: functional.dropout(v, p, seed=1234),
        "torch": lambda v: torch.nn.functional.dropout(v, p),
        "copy": _copy,
    }
    rows = []
    for dtype in dtypes:
        for e in exponents:
            n = 1 << e
            gen = torch.Generator(device=device).manual_seed(e)
            x = torch.randn(n, device=device, generator=gen).to(dtype)
            xg = x.clone().requires_grad_()
            grad = torch.randn(n, device=device, generator=gen).to(dtype)
            fns: dict[str, Callable[[], Any]] = {}
            for name, op in ops.items():
                fns[f"fwd_{name}"] = bind_forward(op, x)
                if name == "copy":
                    fns["fb_copy"] = _bind_two_copies(x, grad)
                else:
                    fns[f"fb_{name}"] = bind_forward_backward(op, xg, grad)
            row = size_row(n, dtype, cuda_median_seconds(fns, repeats=repeats))
            rows.append(row)
            if on_row is not None:
                on_row(row)
            del x, xg, grad, fns
            torch.cuda.empty_cache()
    return rows


def _bind_two_copies(x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def both() -> None:
        _copy(x)
        _copy(grad)

    return both


def _mlp(
    drop: Callable[[], torch.nn.Module], width: int, features: int, classes: int
) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(features, width),
        torch.nn.ReLU(),
        drop(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        drop(),
        torch.nn.Linear(width, classes),
    )


def mc_replicated(
    *,
    samples: int = 100,
    batch: int = 256,
    width: int = 1024,
    features: int = 128,
    classes: int = 10,
    p: float = 0.5,
    repeats: int = 10,
    device: str = "cuda",
) -> dict[str, Any]:
    """Seconds for T = ``samples`` MC-dropout passes over a batch, both ways.

    ``droplab``: :func:`droplab.uncertainty.mc_predict` (classification
    statistics included) with one forward call over the batch replicated T
    times (``chunk=samples``). ``torch``: the same network with
    ``torch.nn.Dropout`` in train mode on the replicated batch, then a softmax
    mean (less work than mc_predict's statistics, so the ratio favours torch).
    """
    ours = _mlp(lambda: dnn.Dropout(p), width, features, classes).to(device)
    theirs = _mlp(lambda: torch.nn.Dropout(p), width, features, classes).to(device)
    x = torch.randn(batch, features, device=device)

    def droplab_mc() -> None:
        mc_predict(
            ours, x, samples=samples, seed=7, chunk=samples, task="classification"
        )

    def torch_mc() -> None:
        theirs.train()
        with torch.no_grad():
            logits = theirs(x.repeat(samples, 1)).reshape(samples, batch, classes)
            logits.softmax(-1).mean(0)

    seconds = cuda_median_seconds(
        {"droplab": droplab_mc, "torch": torch_mc}, repeats=repeats
    )
    return {
        "samples": samples,
        "batch": batch,
        "width": width,
        "droplab_ms": seconds["droplab"] * 1e3,
        "torch_ms": seconds["torch"] * 1e3,
        "torch_over_droplab": seconds["torch"] / seconds["droplab"],
    }


def graph_step(
    *,
    batch: int = 1024,
    width: int = 4096,
    features: int = 1024,
    classes: int = 16,
    p: float = 0.5,
    replays: int = 50,
    device: str = "cuda",
) -> dict[str, Any]:
    """A training step with two seeded droplab dropouts, eager and as a CUDA graph.

    Returns the milliseconds per eager step and per replay, whether capture
    worked (and the error if not), and ``masks_advance``: whether two
    consecutive replays drop different units. That is read from a third seeded
    dropout in the captured step, applied to a tensor of ones (its zeros are
    exactly its mask; the network's own outputs also hold ReLU zeros, which
    change as the weights train).
    """
    torch.manual_seed(0)
    net = _mlp(lambda: dnn.Dropout(p, seed=11), width, features, classes).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(batch, features, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    probe = dnn.Dropout(p, seed=12)
    ones = torch.ones(batch, width, device=device)
    dropped = torch.zeros(batch, width, dtype=torch.bool, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(net(x), labels).backward()
        opt.step()
        torch.eq(probe(ones), 0, out=dropped)

    result: dict[str, Any] = {"batch": batch, "width": width}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream, as capture requires
            step()
    torch.cuda.current_stream().wait_stream(side)
    result["eager_ms"] = cuda_median_seconds({"eager": step})["eager"] * 1e3
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except Exception as error:  # report why capture fails rather than crash the bench
        result["captured"] = False
        result["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        torch.cuda.synchronize()
        return result
    result["captured"] = True
    graph.replay()
    first = dropped.clone()
    graph.replay()
    result["masks_advance"] = not torch.equal(first, dropped)
    result["replay_ms"] = (
        cuda_median_seconds({"replay": graph.replay}, min_seconds=replays * 1e-5)[
            "replay"
        ]
        * 1e3
    )
    result["eager_over_replay"] = result["eager_ms"] / result["replay_ms"]
    return result


def compiled_path(device: str = "cuda") -> dict[str, Any]:
    """Whether droplab's dropout compiles with ``fullgraph=True`` and matches eager.

    droplab has no registered operator yet, so this records the outcome (and
    the error) rather than a timing when compilation fails.
    """

    def op(v: torch.Tensor) -> torch.Tensor:
        return functional.dropout(v, 0.5, seed=3, offset=8)

    x = torch.randn(1 << 20, device=device)
    try:
        compiled = torch.compile(op, fullgraph=True)
        same = torch.equal(compiled(x), op(x))
    except Exception as error:
        return {
            "compiles": False,
            "error": f"{type(error).__name__}: {error}".splitlines()[0][:300],
        }
    seconds = cuda_median_seconds(
        {"eager": lambda: op(x), "compiled": lambda: compiled(x)}
    )
    return {
        "compiles": True,
        "same_as_eager": same,
        "eager_ms": seconds["eager"] * 1e3,
        "compiled_ms": seconds["compiled"] * 1e3,
    }
