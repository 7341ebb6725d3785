"""Argument types for the ``droplab`` commands: every bad value is refused by argparse.

Each function here is an argparse ``type=``: it returns the parsed value or
raises :class:`argparse.ArgumentTypeError`, so a bad argument ends the command
before any work starts, with one line (``droplab report: error: argument
--data: ...``) and argparse's exit status 2, the one convention for bad input
in every droplab command. The messages follow droplab's template: the value
received and what is allowed (argparse adds the argument's name). Nothing here
imports PyTorch: ``droplab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DATA_NAMES",
    "EXECUTOR_HELP",
    "data_spec",
    "int_at_least",
    "real_in",
]

# The built-in data sets of droplab.lab.data.load (checked against it in the tests).
DATA_NAMES = ("digits", "mnist1d", "toy")
# The text of droplab.execution.EXECUTOR_HELP (a test keeps the two equal);
# repeated here so that building the parser does not import the executors.
EXECUTOR_HELP = (
    "where independent runs execute: local (a pool of --jobs processes, the "
    "default) or ray[:ADDRESS] (Ray tasks; ADDRESS is HOST:PORT of the head, or auto)"
)
# The IDX files droplab.lab.data.load_mnist_idx reads (each also as .gz).
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _bad(value: str, allowed: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {allowed}; got {value!r}")


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer type that refuses values below ``low``.

    >>> int_at_least(1)("3")
    3
    >>> int_at_least(1)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer >= 1; got '0'
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _bad(text, f"an integer >= {low}") from None
        if value < low:
            raise _bad(text, f"an integer >= {low}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def real_in(
    low: float, high: float, *, high_open: bool = False
) -> Callable[[str], float]:
    """A real-number type in ``[low, high]`` (or ``[low, high)``).

    >>> real_in(0, 1, high_open=True)("0.5")
    0.5
    >>> real_in(0, 1, high_open=True)("1.5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a real number in [0, 1); got '1.5'
    """
    allowed = f"a real number in [{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _bad(text, allowed) from None
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or value < low or above:
            raise _bad(text, allowed)
        return value

    parse.__name__ = "real number"
    return parse


def data_spec(text: str) -> str:
    """A ``--data`` value: a built-in data set, or ``mnist:DIR`` with the MNIST files.

    >>> data_spec("mnist1d")
    'mnist1d'
    >>> data_spec("imagenet")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be one of digits, mnist1d, toy or mnist:DIR; got 'imagenet'
    """
    if text in DATA_NAMES:
        return text
    if text.startswith("mnist:"):
        folder = Path(text[len("mnist:") :]).expanduser()
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(
                f"must be mnist:DIR with DIR a folder of MNIST IDX files; got "
                f"{text!r}, and {str(folder)!r} is not a folder"
            )
        lacking = [
            stem
            for stem in MNIST_FILES
            if not any(
                (folder / name).exists()
                for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"))
            )
        ]
        if lacking:
            raise argparse.ArgumentTypeError(
                f"must be mnist:DIR with DIR holding the four MNIST IDX files; got "
                f"{text!r}, which lacks {', '.join(lacking)} (or .gz)"
            )
        return text
    raise _bad(text, "one of " + ", ".join(DATA_NAMES) + " or mnist:DIR")
