"""One SGD step of a 40-512-512-10 ReLU MLP, batch 64: no dropout, torch's, droplab's.

Also ``multiply``: a plain ``x * (1 / (1 - p))`` where the dropout layers are, the cost of
any out-of-place element-wise op of that size (the floor for any dropout).

Run by hand: ``nice python benchmarks/bench_mlp_step.py``. Two dropout layers
(p = 0.5) after the hidden layers; droplab's ``nn.Dropout`` with its defaults.
"""

from __future__ import annotations

from droplab.cli import bench


def main() -> None:
    result = bench.mlp_step()
    steps = result.pop("steps")
    for name, seconds in result.items():
        overhead = (seconds / result["none"] - 1) * 100
        print(f"{name:8s} {seconds / steps * 1e3:7.3f} ms/step  {overhead:+6.1f} %")


if __name__ == "__main__":
    main()
