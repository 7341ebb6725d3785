"""What the first droplab call costs in a fresh process: Numba compiling (cold
on-disk cache) or loading (warm cache) its kernels.

Run by hand: ``python benchmarks/bench_jit_warmup.py``. Uses a temporary
``NUMBA_CACHE_DIR``, so it measures a true cold start whatever is cached.
"""

from __future__ import annotations

from droplab.cli import bench


def main() -> None:
    for case, parts in bench.jit_warmup().items():
        print(f"{case:10s} " + ", ".join(f"{k}: {v:.2f} s" for k, v in parts.items()))


if __name__ == "__main__":
    main()
