"""Intervals and tests used by every experiment (95 % unless told otherwise)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = ["chisquare_pooled", "geometric_ci", "mean_ci", "proportion_ci"]


def mean_ci(
    values: npt.ArrayLike, level: float = 0.95
) -> tuple[float, float | None, float | None]:
    """Mean and Student-t interval of independent values; no interval for one value.

    >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    >>> m, round(lo, 3), round(hi, 3)
    (2.0, -0.484, 4.484)
    >>> mean_ci([5.0])
    (5.0, None, None)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None, None
    half = float(
        stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    )
    return mean, mean - half, mean + half


def geometric_ci(
    values: npt.ArrayLike, level: float = 0.95
) -> tuple[float, float | None, float | None]:
    """Geometric mean of positive values and the t interval of their logarithms,
    mapped back: an interval that stays positive, as times and counts must.

    >>> m, lo, hi = geometric_ci([2.0, 8.0])
    >>> m, 0 < lo < m < hi
    (4.0, True)
    >>> m, lo, hi = geometric_ci([3.0])
    >>> round(m, 12), lo, hi
    (3.0, None, None)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if len(x) == 0 or not bool(np.all(x > 0)):
        raise ValueError(f"geometric_ci needs positive values; got {x.tolist()!r}")
    mean, low, high = mean_ci(np.log(x), level)
    if low is None or high is None:
        return float(math.exp(mean)), None, None
    return float(math.exp(mean)), float(math.exp(low)), float(math.exp(high))


def proportion_ci(
    successes: int, trials: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Observed proportion with its exact (Clopper-Pearson) interval.

    >>> p, lo, hi = proportion_ci(0, 1000)
    >>> p, lo, round(hi, 5)
    (0.0, 0.0, 0.00368)
    """
    alpha = 1 - level
    low = (
        0.0
        if successes == 0
        else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    )
    high = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    )
    return successes / trials, low, high


def chisquare_pooled(
    observed: Sequence[int] | npt.ArrayLike,
    probabilities: Sequence[float] | npt.ArrayLike,
    *,
    min_expected: float = 5.0,
) -> dict[str, float | int]:
    """Chi-square goodness of fit, pooling neighbouring sparse bins.

    Bins are merged left to right until each holds an expected count of at least
    ``min_expected`` (a remainder joins the last bin), the usual condition for the
    chi-square approximation. ``probabilities`` must cover every possible outcome.

    Returns:
        ``{"statistic", "df", "p_value", "bins"}``; with fewer than two pooled bins
        the test has no degrees of freedom and ``p_value`` is 1.

    Examples:
        >>> r = chisquare_pooled([25, 25, 25, 25], [0.25] * 4)
        >>> r["statistic"], r["df"], r["p_value"]
        (0.0, 3, 1.0)
    """
    obs = np.asarray(observed, dtype=np.float64)
    prob = np.asarray(probabilities, dtype=np.float64)
    expected = prob * obs.sum()
    pooled_obs: list[float] = []
    pooled_exp: list[float] = []
    acc_o = acc_e = 0.0
    for o, e in zip(obs, expected, strict=True):
        acc_o += o
        acc_e += e
        if acc_e >= min_expected:
            pooled_obs.append(acc_o)
            pooled_exp.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0 or acc_o > 0:
        if pooled_obs:
            pooled_obs[-1] += acc_o
            pooled_exp[-1] += acc_e
        else:
            pooled_obs.append(acc_o)
            pooled_exp.append(acc_e)
    bins = len(pooled_obs)
    if bins < 2:
        return {"statistic": 0.0, "df": 0, "p_value": 1.0, "bins": bins}
    o_arr, e_arr = np.array(pooled_obs), np.array(pooled_exp)
    statistic = float(((o_arr - e_arr) ** 2 / e_arr).sum())
    df = bins - 1
    return {
        "statistic": statistic,
        "df": df,
        "p_value": float(stats.chi2.sf(statistic, df)),
        "bins": bins,
    }
