"""``droplab build-cpp``: compile the optional C++ op, then check it against Numba.

The op itself is :mod:`droplab.kernels.cpp`; this is only its command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from droplab import functional
from droplab.kernels.cpp import build, library_path, load

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser, name: str = "build-cpp") -> None:
    """The options of ``droplab build-cpp``."""
    parser.add_argument(
        "--verbose", action="store_true", help="show the compiler's output"
    )


def run_cli(args: argparse.Namespace) -> int:
    """``droplab build-cpp``: compile, load, check against the Numba path."""
    started = time.perf_counter()
    try:
        build(verbose=args.verbose)
    except Exception as error:
        print(
            f"droplab build-cpp: could not build the C++ op: {error}", file=sys.stderr
        )
        return 1
    x = torch.randn(1000, dtype=torch.float32)
    fast = functional.dropout(x, 0.5, seed=1, offset=3)
    os.environ["DROPLAB_CPP"] = "0"
    try:
        load.cache_clear()
        slow = functional.dropout(x, 0.5, seed=1, offset=3)
    finally:
        del os.environ["DROPLAB_CPP"]
        load.cache_clear()
    if not torch.equal(fast, slow):  # pragma: no cover - a broken build
        print(
            "droplab build-cpp: the C++ op disagrees with the Numba path",
            file=sys.stderr,
        )
        return 1
    print(
        f"built {library_path()} in {time.perf_counter() - started:.0f} s; "
        "droplab uses it from now on (DROPLAB_CPP=0 turns it off)"
    )
    return 0
