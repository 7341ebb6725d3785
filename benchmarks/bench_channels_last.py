"""A channels_last CNN training step: torch's ``Dropout2d`` against droplab's.

A ResNet basic block (conv 3x3, batch norm, ReLU, channel dropout, conv 3x3,
batch norm, the skip, ReLU), 64 channels on 32x32 maps, batch 32, in
channels_last (the fast layout for convolutions on CPU), trained by SGD.
Three variants in one process: no dropout (``nn.Identity``), torch's
``nn.Dropout2d(0.1)`` and ``droplab.nn.Dropout2d(0.1)``.

For each it prints the median step time over repeats (after warm-up), the
ratio to torch's, the layout of the dropout's output, and what the profiler
counts in one step: calls of ``aten::contiguous``, ``aten::copy_``,
``aten::clone`` and ``aten::_to_copy``, the operators a layout conversion
goes through. A dropout that lost the layout would add conversions on the
way in and out of the next convolution.

Run by hand: ``nice python benchmarks/bench_channels_last.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import Counter

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import droplab
import droplab.nn as dn

COUNTED = ("aten::contiguous", "aten::copy_", "aten::clone", "aten::_to_copy")


class BasicBlock(nn.Module):
    def __init__(self, channels: int, dropout: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.drop = dropout
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn1(self.conv1(x))))
        return torch.relu(x + self.bn2(self.conv2(h)))


def build(kind: str, channels: int) -> nn.Module:
    dropout: nn.Module = {
        "none": lambda: nn.Identity(),
        "torch": lambda: nn.Dropout2d(0.1),
        "droplab": lambda: dn.Dropout2d(0.1, seed=0),
    }[kind]()
    torch.manual_seed(0)
    return BasicBlock(channels, dropout).to(memory_format=torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="steps per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, droplab {droplab.__version__}"
    )
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    x = x.to(memory_format=torch.channels_last)
    target = torch.randn_like(x)
    models = {kind: build(kind, args.channels) for kind in ("none", "torch", "droplab")}
    optimisers = {
        kind: torch.optim.SGD(model.parameters(), lr=1e-3)
        for kind, model in models.items()
    }

    def step(kind: str) -> None:
        optimisers[kind].zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(models[kind](x), target)
        loss.backward()
        optimisers[kind].step()

    for kind in models:  # warm-up (Numba compiles on its first call)
        for _ in range(3):
            step(kind)
    times: dict[str, list[float]] = {kind: [] for kind in models}
    for _ in range(args.repeats):  # interleaved, so load drifts hit all alike
        for kind in models:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(kind)
            times[kind].append((time.perf_counter() - start) / args.steps)

    print(
        f"ResNet basic block, batch {args.batch}, {args.channels} channels, "
        f"{args.size}x{args.size}, channels_last, SGD step; median of {args.repeats} "
        f"x {args.steps} steps"
    )
    header = (
        f"{'dropout':>8} {'ms/step':>8} {'vs torch':>8} {'output layout':>14}  "
        + " ".join(f"{name.split('::')[1]:>10}" for name in COUNTED)
    )
    print(header)
    torch_ms = statistics.median(times["torch"]) * 1e3
    for kind, model in models.items():
        ms = statistics.median(times[kind]) * 1e3
        block = model
        probe = (
            block.drop(torch.relu(block.bn1(block.conv1(x)))) if kind != "none" else x
        )
        layout = (
            "channels_last"
            if probe.is_contiguous(memory_format=torch.channels_last)
            else "contiguous"
        )
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(kind)
        counts = Counter({e.key: e.count for e in prof.key_averages()})
        row = f"{kind:>8} {ms:8.2f} {ms / torch_ms:8.2f} {layout:>14}  " + " ".join(
            f"{counts[name]:>10}" for name in COUNTED
        )
        print(row)


if __name__ == "__main__":
    main()
