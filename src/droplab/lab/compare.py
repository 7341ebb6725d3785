"""Paired comparisons between training rules, and the sentences that report them.

The training experiments compare two ways of training the *same* network
(same initialisation, same data order, same dropout stream seed) over several
seeds, so their differences are paired: the seed-to-seed spread cancels and a
paired t interval on the per-seed differences is the honest measure. A
difference counts as *detectable* when its 95 % interval excludes zero; over a
family of comparisons (one per width, say) Holm's step-down correction keeps
the chance of any false detection at 5 %.

Every answer sentence in the lab is built from these numbers by
:func:`verdict`, so it says "no detectable difference" whenever the interval
contains zero, and names the better side and the size of its lead otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from droplab._validation import fail
from droplab.lab.stats import mean_ci

__all__ = [
    "detectable",
    "gap_clause",
    "holm",
    "holm_caveat",
    "paired_difference",
    "train_test_gap",
    "verdict",
]


def paired_difference(
    a: npt.ArrayLike, b: npt.ArrayLike, level: float = 0.95
) -> dict[str, Any]:
    """Mean of ``a - b`` over pairs, its Student-t interval and two-sided p-value.

    Args:
        a, b: per-seed values of the two rules, paired by position.
        level: confidence level of the interval.

    Returns:
        ``{"mean", "low", "high", "p_value", "n"}``; with fewer than two pairs, or
        pairs that all differ by the same amount, the interval degenerates to the
        point ``mean`` and the p-value is that of an exact sign test
        (``2 * 0.5**n``, 1 when the difference is zero), which
        :func:`detectable` also requires.

    Examples:
        >>> d = paired_difference([0.9, 0.8, 0.85], [0.8, 0.7, 0.8])
        >>> round(d["mean"], 3), d["n"], d["low"] > 0
        (0.083, 3, True)
        >>> paired_difference([3, 4], [2, 3])["p_value"]  # no spread: sign test
        0.5
        >>> paired_difference([1 - 0.7, 1 - 0.6], [1 - 0.8, 1 - 0.7])["p_value"]
        0.5
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or len(x) == 0:
        raise fail(
            "a, b", (x.shape, y.shape), "two non-empty sequences of the same length",
            owner="paired_difference",
        )  # fmt: skip
    diff = x - y
    mean, low, high = mean_ci(diff, level)
    spread = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    # Differences equal up to rounding (1 - a vs 1 - b) count as equal.
    if spread <= 1e-12 * max(1.0, abs(mean)):
        spread = 0.0
    if low is None or high is None or spread == 0.0:
        # No spread (e.g. whole epochs that differ by the same amount in every
        # pair): the t interval degenerates to a point, so the evidence is that
        # of an exact sign test: all n pairs on one side has p = 2 * 0.5**n.
        p_value = 1.0 if mean == 0.0 else min(1.0, 2.0 * 0.5 ** len(diff))
        return {
            "mean": mean,
            "low": mean,
            "high": mean,
            "p_value": p_value,
            "n": len(x),
        }
    t = mean / (spread / math.sqrt(len(diff)))
    p_value = float(2 * stats.t.sf(abs(t), len(diff) - 1))
    return {"mean": mean, "low": low, "high": high, "p_value": p_value, "n": len(x)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control).

    >>> [round(v, 3) for v in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]


def detectable(diff: Mapping[str, Any], adjusted_p: float | None = None) -> bool:
    """Whether ``diff`` (from :func:`paired_difference` or a mean/low/high triple)
    is detectably non-zero: its interval excludes 0 and its p-value (the
    ``adjusted_p`` given, else ``diff["p_value"]`` when present) is below 0.05.

    >>> detectable({"mean": 1.0, "low": 0.2, "high": 1.8})
    True
    >>> detectable({"mean": 1.0, "low": -0.2, "high": 2.2})
    False
    """
    low, high = diff.get("low"), diff.get("high")
    if low is None or high is None:
        return False
    excludes_zero = bool(low > 0 or high < 0)
    p_value = adjusted_p if adjusted_p is not None else diff.get("p_value")
    if p_value is not None:
        return excludes_zero and p_value < 0.05
    return excludes_zero


def verdict(
    name_a: str,
    name_b: str,
    diff: dict[str, Any],
    *,
    quantity: str,
    higher_is_better: bool,
    unit: str = " points",
    factor: float = 100.0,
    adjusted_p: float | None = None,
    digits: int = 2,
    family: str = "",
) -> str:
    """One clause on ``a - b``: which is better and by how much, or none detectable.

    The clause never contradicts the numbers it quotes: where the unadjusted
    interval excludes 0 but the adjusted p-value is 0.05 or more, it says that
    the difference is not detectable *after Holm's correction*, with the
    adjusted p-value, rather than "no detectable difference".

    Args:
        name_a, name_b: the two sides (``diff`` is a minus b).
        diff: ``{"mean", "low", "high"}`` (e.g. from :func:`paired_difference`).
        quantity: what was measured ("test accuracy").
        higher_is_better: True for accuracy, False for error or loss.
        unit, factor: values are multiplied by ``factor`` and followed by ``unit``
            (default: fractions shown as percentage points).
        adjusted_p: a multiplicity-adjusted p-value that must also be < 0.05
            (else ``diff["p_value"]``, when present).
        digits: decimals shown.
        family: what the correction was over ("over 4 sizes"), for the sentence.

    Examples:
        >>> d = {"mean": 0.02, "low": 0.01, "high": 0.03}
        >>> verdict("A", "B", d, quantity="test accuracy", higher_is_better=True)
        'A is better than B by 2.00 points of test accuracy (95 % interval of the difference [1.00, 3.00])'
        >>> d = {"mean": 0.02, "low": -0.01, "high": 0.05}
        >>> verdict("A", "B", d, quantity="test accuracy", higher_is_better=True)
        'no detectable difference in test accuracy between A and B (difference 2.00 points, 95 % interval [-1.00, 5.00])'
        >>> d = {"mean": -0.04, "low": -0.065, "high": -0.015}
        >>> verdict("A", "B", d, quantity="test error", higher_is_better=False,
        ...         adjusted_p=0.08, family="over 4 sizes")
        'A is ahead of B by 4.00 points of test error before correction (95 % interval of the difference [1.50, 6.50]), but not detectably after Holm over 4 sizes (adjusted p = 0.08)'
        >>> d = {"mean": -0.0084, "low": -0.0084, "high": -0.0084, "p_value": 0.5}
        >>> verdict("A", "B", d, quantity="test error", higher_is_better=False)
        'no detectable difference in test error between A and B (difference -0.84 points in every pair alike: no spread, so no interval, sign test p = 0.5)'
    """
    mean = diff["mean"] * factor
    low = diff["low"] * factor if diff.get("low") is not None else None
    high = diff["high"] * factor if diff.get("high") is not None else None
    if low is None or high is None:
        return (
            f"{quantity} of {name_a} minus {name_b}: {mean:.{digits}f}{unit} "
            "(one seed: no interval, so no claim)"
        )
    # (a point "interval" from pairs that all differ alike is a sign test, not this)
    excludes_zero = low < high and (low > 0 or high < 0)
    if not detectable(diff, adjusted_p) and excludes_zero and adjusted_p is not None:
        a_ahead = (mean > 0) == higher_is_better
        ahead, behind = (name_a, name_b) if a_ahead else (name_b, name_a)
        lo, hi = (low, high) if mean > 0 else (-high, -low)
        return (
            f"{ahead} is ahead of {behind} by {abs(mean):.{digits}f}{unit} of {quantity} "
            f"before correction (95 % interval of the difference [{lo:.{digits}f}, "
            f"{hi:.{digits}f}]), but not detectably after Holm"
            f"{' ' + family if family else ''} (adjusted p = {adjusted_p:.2g})"
        )
    if not detectable(diff, adjusted_p) and low == high and mean != 0:
        p_value = adjusted_p if adjusted_p is not None else diff.get("p_value")
        sign_test = f", sign test p = {p_value:.2g}" if p_value is not None else ""
        return (
            f"no detectable difference in {quantity} between {name_a} and {name_b} "
            f"(difference {mean:.{digits}f}{unit} in every pair alike: no spread, so "
            f"no interval{sign_test})"
        )
    if not detectable(diff, adjusted_p):
        return (
            f"no detectable difference in {quantity} between {name_a} and {name_b} "
            f"(difference {mean:.{digits}f}{unit}, 95 % interval [{low:.{digits}f}, {high:.{digits}f}])"
        )
    a_better = (mean > 0) == higher_is_better
    better, worse = (name_a, name_b) if a_better else (name_b, name_a)
    # The better side's lead, as a positive number with its interval.
    size = abs(mean)
    lo, hi = (low, high) if mean > 0 else (-high, -low)
    return (
        f"{better} is better than {worse} by {size:.{digits}f}{unit} of {quantity} "
        f"(95 % interval of the difference [{lo:.{digits}f}, {hi:.{digits}f}])"
    )


def holm_caveat(diff: dict[str, Any], factor: float = 100.0, digits: int = 2) -> str:
    """For a difference that Holm leaves undetectable: "" where its unadjusted
    interval contains 0 as well, else the clause that explains the two numbers.

    >>> holm_caveat({"mean": -0.04, "low": -0.065, "high": -0.015, "p_holm": 0.08})
    ' (-4.00 points, unadjusted 95 % interval [-6.50, -1.50] excludes 0, but Holm-adjusted p = 0.08)'
    >>> holm_caveat({"mean": -0.04, "low": -0.065, "high": 0.01, "p_holm": 0.3})
    ''
    """
    low, high, adjusted = diff.get("low"), diff.get("high"), diff.get("p_holm")
    if low is None or high is None or adjusted is None:
        return ""
    if not (low < high and (low > 0 or high < 0)):  # contains 0, or a mere point
        return ""
    if detectable(diff, adjusted):
        return ""
    return (
        f" ({factor * diff['mean']:+.{digits}f} points, unadjusted 95 % interval "
        f"[{factor * low:.{digits}f}, {factor * high:.{digits}f}] excludes 0, but "
        f"Holm-adjusted p = {adjusted:.2g})"
    )


def train_test_gap(train_error: npt.ArrayLike, test_error: npt.ArrayLike) -> list[Any]:
    """Mean and 95 % interval of held-out error minus training error, over seeds.

    How much a network overfits: the room dropout has to help. The held-out
    error is the test (or validation) error of the same runs, paired by seed.

    >>> [round(v, 3) for v in train_test_gap([0.0, 0.0], [0.3, 0.3])]
    [0.3, 0.3, 0.3]
    """
    return list(mean_ci(np.subtract(test_error, train_error)))


def gap_clause(gap: Sequence[Any] | None, *, who: str, held_out: str = "test") -> str:
    """A sentence on a train/held-out gap from :func:`train_test_gap`; empty if None.

    It says "exceeds" only where the interval lies above 0 (or, with one seed and
    no interval, where the gap is positive); an interval that contains 0 is
    called not detectably different from 0.

    >>> print(gap_clause([0.25, 0.2, 0.3], who="without dropout, the network").strip())
    Without dropout, the network: test error exceeds training error by 25.0 points [20.0, 30.0].
    >>> print(gap_clause([0.007, -0.003, 0.016], who="the network").strip())
    The network: test error minus training error is +0.7 points [-0.3, 1.6], not detectably different from 0.
    >>> print(gap_clause([-0.02, -0.03, -0.01], who="the network").strip())
    The network: training error exceeds test error by 2.0 points [1.0, 3.0].
    """
    if gap is None:
        return ""
    mean, low, high = gap
    who = f"{who[0].upper()}{who[1:]}"
    if low is None or high is None:
        if mean > 0:
            return (
                f" {who}: {held_out} error exceeds training error by "
                f"{100 * mean:.1f} points."
            )
        return (
            f" {who}: {held_out} error minus training error is {100 * mean:+.1f} "
            "points (one seed: no interval)."
        )
    if low > 0:
        return (
            f" {who}: {held_out} error exceeds training error by {100 * mean:.1f} "
            f"points [{100 * low:.1f}, {100 * high:.1f}]."
        )
    if high < 0:
        return (
            f" {who}: training error exceeds {held_out} error by {-100 * mean:.1f} "
            f"points [{-100 * high:.1f}, {-100 * low:.1f}]."
        )
    return (
        f" {who}: {held_out} error minus training error is {100 * mean:+.1f} points "
        f"[{100 * low:.1f}, {100 * high:.1f}], not detectably different from 0."
    )
