"""droplab vs torch.nn.functional.dropout vs x.clone(), float32, 2^12..2^26 elements.

Run by hand (not collected by pytest), e.g. ``nice python benchmarks/bench_dropout.py``.
Prints ns per element for forward and forward+backward, the ratios, and the
bytes each dropout saves for backward. Everything runs in this one process,
round-robin, so the ratios are fair even when the machine's load drifts.
"""

from __future__ import annotations

import argparse

import torch

from droplab.cli import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-log2", type=int, default=12)
    parser.add_argument("--max-log2", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ns/element")
    rows = bench.size_sweep(
        range(args.min_log2, args.max_log2 + 1), repeats=args.repeats
    )
    print(bench.format_table(rows))
    print("bytes saved for backward (2^20 float32):", bench.saved_bytes())


if __name__ == "__main__":
    main()
