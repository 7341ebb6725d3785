"""How long the ``droplab`` command takes to start: help, list, and a bad argument.

Each command runs in a fresh process (``python -m droplab.cli ...``) several
times; the table gives the best and the median wall time, next to ``python -c
"import torch"`` (what every command paid before issue 24) and a bare
``python -c pass``. Not a test: timings are printed, never asserted.

    python benchmarks/bench_cli_start.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

CASES = (
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
    ("droplab --help", [sys.executable, "-m", "droplab.cli", "--help"]),
    ("droplab list", [sys.executable, "-m", "droplab.cli", "list"]),
    ("droplab report --data imagenet (exit 2)",
     [sys.executable, "-m", "droplab.cli", "report", "--data", "imagenet"]),
    ("droplab report --help", [sys.executable, "-m", "droplab.cli", "report", "--help"]),
)  # fmt: skip


def time_command(command: list[str], repeats: int, cwd: str) -> list[float]:
    """Wall seconds of ``repeats`` fresh runs of ``command``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False, cwd=cwd)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per command (7)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"argument --repeats: must be an integer >= 1; got {args.repeats}")
    print("| command | best (s) | median (s) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as cwd:  # no droplab-report/ folder here
        for label, command in CASES:
            times = time_command(command, args.repeats, cwd)
            print(f"| {label} | {min(times):.3f} | {statistics.median(times):.3f} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
