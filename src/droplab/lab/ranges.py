"""The range each quantity of the lab truly lives in, and intervals cut to it.

One rule for the page's tables and the experiments' figures: a 95 % interval
from a few seeds can reach past a bound the quantity cannot cross (a test
error below 0), and is then shown cut there, in the table (marked ``*``) and in
the figure alike; nowhere else, so a value always lies inside its interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["in_range", "value_range"]

# The range each quantity truly lives in, read from its name: an interval is cut
# only where it crosses that range (a t interval from a few seeds can reach
# below 0 for a test error), never elsewhere, so a value always lies inside its
# interval. A squared error is >= 0 with no upper bound; a signed error, a
# bias or a difference has no bound at all.
_SIGNED = (" - ", "minus", "difference", "change", "bias of", "relative error",
           "log-likelihood", "mean(", "exceeds", "benefit")  # fmt: skip
_NONNEGATIVE = ("squared", "mse", "rmse", "rms ", "variance", "standard deviation",
                "sd ", "|", "ratio", "seconds", "cost", "loss", "entropy")  # fmt: skip
_PROPORTION = ("error", "accuracy", "coverage", "fraction", "p(", "probability",
               "p-value", "tv to", "total variation", "auroc", "rate", "best p")  # fmt: skip
_COUNT = ("units", "epoch")


def value_range(quantity: str, unit: str = "") -> tuple[float | None, float | None]:
    """``(lowest, highest)`` a quantity can take, from its name (None: no bound).

    >>> value_range("none: test error"), value_range("dropout - none (paired)")
    ((0.0, 1.0), (None, None))
    >>> value_range("inverted: mean squared error"), value_range("dropout: seconds per epoch", "s")
    ((0.0, None), (0.0, None))
    >>> value_range("n = 8: mean relative error over all masks")
    (None, None)
    """
    text = f"{quantity.lower()} {unit.lower()}"
    if any(word in text for word in _SIGNED):
        return (None, None)
    if "auroc" in text:
        return (0.0, 1.0)
    if any(word in text for word in _NONNEGATIVE) or unit in ("s", "nats"):
        return (0.0, None)
    if any(word in text for word in _PROPORTION) and unit in ("", "fraction"):
        return (0.0, 1.0)
    if any(word in text for word in _COUNT):
        return (0.0, None)
    return (None, None)


def in_range(triple: Sequence[Any], quantity: str, unit: str = "") -> list[Any]:
    """``[value, low, high]`` with the interval cut to ``quantity``'s range (as the
    page's tables show it); missing ends stay missing.

    >>> in_range([0.04, -0.03, 0.11], "test error")
    [0.04, 0.0, 0.11]
    >>> in_range([1.44, 1.31, 1.58], "mean squared error")
    [1.44, 1.31, 1.58]
    """
    value, low, high = triple[0], triple[1], triple[2]
    bottom, top = value_range(quantity, unit)
    if low is not None and bottom is not None:
        low = max(low, bottom)
    if high is not None and top is not None:
        high = min(high, top)
    return [value, low, high]
