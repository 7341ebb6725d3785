"""Peak extra memory of 16-bit dropout on the CPU: droplab against torch.

Each measurement runs in a fresh process: it allocates the input (float16 or
bfloat16, ``--numel`` elements), runs a small call of the same op so that
everything is imported and compiled, reads the process's peak resident memory
(``ru_maxrss``), then runs the call once on the whole input and reads the peak
again. The growth, over the input's size, is the op's extra memory: the output
alone is 1.0. Not a test: figures are printed, never asserted.

    python benchmarks/bench_half_memory.py [--numel 268435456]

Issue 31: droplab's 16-bit path used to convert the whole input to float32,
compute a float32 output, then convert it back (~5x the input); it now works
chunk by chunk (droplab.kernels.cpu._chunked_16bit).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from datetime import datetime, timezone

PROBE = """
import resource, sys, torch
import droplab.functional as F
impl, dtype, numel = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3])
def call(x):
    if impl == "droplab":
        return F.dropout(x, 0.5, True, seed=0)
    return torch.nn.functional.dropout(x, 0.5, True)
x = torch.ones(numel, dtype=dtype)
call(torch.ones(1 << 16, dtype=dtype))  # imports and compiles (small: no peak)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = call(x)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024 / (numel * x.element_size()))
"""


def peak_extra(impl: str, dtype: str, numel: int) -> float:
    """Peak extra resident memory of one call, over the input's size."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, impl, dtype, str(numel)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numel", type=int, default=1 << 28, help="input elements")
    args = parser.parse_args()
    import torch

    mib = args.numel * 2 / 2**20
    print(
        f"{datetime.now(timezone.utc):%Y-%m-%d}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"input {args.numel} elements ({mib:.0f} MiB in 16 bits)"
    )
    print("| dtype | droplab | torch |")
    print("|---|---|---|")
    for dtype in ("float16", "bfloat16"):
        ours = peak_extra("droplab", dtype, args.numel)
        theirs = peak_extra("torch", dtype, args.numel)
        print(f"| {dtype} | {ours:.2f}x | {theirs:.2f}x |")


if __name__ == "__main__":
    main()
