"""Do dropout masks drop a Binomial(n, p) number of units, and how often all of them?

Mark Cassar's blog post on dropout draws 1000 masks for layers of n = 4 and n = 100
units and plots how many units are dropped; we test the same counts against the
Binomial pmf with a chi-square goodness-of-fit test, for droplab's NumPy masks,
droplab's ``nn.Dropout`` and PyTorch's ``torch.nn.Dropout``, and compare the
chance that a whole layer is dropped (an empty subnetwork) with ``p**n``.

- Paper: Srivastava et al., "Dropout: a simple way to prevent neural networks
  from overfitting", JMLR 15, 2014.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from droplab.lab.stats import chisquare_pooled, mean_ci, proportion_ci
from droplab.masks import bernoulli_mask
from droplab.nn import Dropout
from droplab.rng import derive_seed

NAME = "masks"
QUESTION = (
    "How many units does dropout drop in a layer of n units, and how likely is it "
    "that all of them are dropped at once?"
)
METHOD = (
    "For each layer width n and each mask source (droplab's NumPy masks, droplab.nn.Dropout "
    "and torch.nn.Dropout applied to a row of ones) we draw the masks of many rows, count "
    "the dropped units per row and compare the histogram with the Binomial(n, p) pmf by a "
    "chi-square goodness-of-fit test (neighbouring bins pooled until each expects at least "
    "5 rows). The fraction of rows with every unit dropped is compared with p^n, with an "
    "exact (Clopper-Pearson) 95 % interval."
)

SOURCES = ("droplab.masks", "droplab.nn.Dropout", "torch.nn.Dropout")
ALPHA = 0.01  # a p-value below this counts as a detectable deviation from the binomial


@dataclass(frozen=True)
class Config:
    """Settings of the masks experiment (``Config()`` is the default preset)."""

    widths: tuple[int, ...] = (4, 100)  # layer widths n (the blog's 4 and 100)
    p: float = 0.5  # probability of dropping a unit
    draws: int = 1000  # masks (rows) per width and source; the blog drew 1000
    seed: int = 0  # root seed; each source and width derives its own stream

    @classmethod
    def quick(cls) -> Config:
        """The blog's setting (same as the default: it takes well under a second)."""
        return cls()

    @classmethod
    def full(cls) -> Config:
        """100 times more draws, for a test with more power."""
        return cls(draws=100_000)


def _dropped_counts(source: str, n: int, config: Config) -> np.ndarray:
    seed = derive_seed(config.seed, SOURCES.index(source), n)
    shape = (config.draws, n)
    if source == "droplab.masks":
        kept = bernoulli_mask(shape, config.p, seed=seed)
    elif source == "droplab.nn.Dropout":
        kept = Dropout(config.p, seed=seed)(torch.ones(shape)).numpy() != 0
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % 2**63)
            kept = torch.nn.Dropout(config.p)(torch.ones(shape)).numpy() != 0
    return n - kept.sum(axis=1)


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Histograms, goodness of fit and P(all dropped) for every source and width."""
    del jobs  # a fraction of a second: nothing to parallelise
    out: dict[str, Any] = {
        "p": config.p,
        "draws": config.draws,
        "widths": list(config.widths),
    }
    out["pmf"] = {
        str(n): stats.binom.pmf(np.arange(n + 1), n, config.p).tolist()
        for n in config.widths
    }
    out["exact_all_dropped"] = {str(n): config.p**n for n in config.widths}
    out["sources"] = {}
    for source in SOURCES:
        per_width = {}
        for n in config.widths:
            dropped = _dropped_counts(source, n, config)
            histogram = np.bincount(dropped, minlength=n + 1)
            mean, low, high = mean_ci(dropped)
            rate, rate_low, rate_high = proportion_ci(int(histogram[n]), config.draws)
            per_width[str(n)] = {
                "histogram": histogram.tolist(),
                "gof": chisquare_pooled(histogram, out["pmf"][str(n)]),
                "mean_dropped": [mean, low, high],
                "all_dropped": [int(histogram[n]), rate, rate_low, rate_high],
                "min_dropped": int(dropped.min()),
                "max_dropped": int(dropped.max()),
            }
        out["sources"][source] = per_width
    return out


def figure(result: dict[str, Any]) -> Any:
    """One row of histograms per source, one column per width; dots = Binomial expectation."""
    from matplotlib.figure import Figure

    sources, widths = list(result["sources"]), result["widths"]
    fig = Figure(figsize=(4.2 * len(widths), 2.6 * len(sources)), layout="constrained")
    axes = fig.subplots(len(sources), len(widths), squeeze=False)
    for i, source in enumerate(sources):
        for j, n in enumerate(widths):
            entry = result["sources"][source][str(n)]
            expected = np.asarray(result["pmf"][str(n)]) * result["draws"]
            observed = np.asarray(entry["histogram"])
            shown = np.flatnonzero((expected >= 0.5) | (observed > 0))
            k = np.arange(shown.min(), shown.max() + 1)
            ax = axes[i, j]
            ax.bar(k, observed[k], width=0.9, color="#8fb3de", label="observed")
            ax.plot(k, expected[k], "o", ms=3, color="#1d2127", label="Binomial(n, p)")
            ax.set_title(
                f"{source}, n = {n}  (chi-square p = {entry['gof']['p_value']:.2g})",
                fontsize=9,
            )
            ax.set_xlabel("units dropped")
            ax.set_ylabel("rows")
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per source and width: mean dropped, chi-square p-value, P(all dropped)."""
    rows: list[dict[str, Any]] = []
    p = result["p"]
    for n in result["widths"]:
        rows.append(
            {
                "quantity": f"n = {n}: expected units dropped, n p",
                "value": n * p,
                "low": None,
                "high": None,
                "unit": "units",
            }
        )
        rows.append(
            {
                "quantity": f"n = {n}: P(all dropped) = p^n",
                "value": result["exact_all_dropped"][str(n)],
                "low": None,
                "high": None,
                "unit": "",
            }
        )
        for source, per_width in result["sources"].items():
            e = per_width[str(n)]
            mean, low, high = e["mean_dropped"]
            rows.append(
                {
                    "quantity": f"n = {n}, {source}: mean units dropped",
                    "value": mean,
                    "low": low,
                    "high": high,
                    "unit": "units",
                }
            )
            rows.append(
                {
                    "quantity": f"n = {n}, {source}: chi-square p-value ({e['gof']['bins']} bins)",
                    "value": e["gof"]["p_value"],
                    "low": None,
                    "high": None,
                    "unit": "",
                }
            )
            count, rate, r_low, r_high = e["all_dropped"]
            rows.append(
                {
                    "quantity": f"n = {n}, {source}: observed P(all dropped) ({count} of {result['draws']})",
                    "value": rate,
                    "low": r_low,
                    "high": r_high,
                    "unit": "",
                }
            )
    return rows


def _span(counts: list[int]) -> str:
    """``"3"`` when every source saw the same count, else ``"3-7"``."""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


def answer(result: dict[str, Any]) -> str:
    """Whether every source fits the binomial, and whether p^n lies in each interval."""
    deviations = []
    smallest = 1.0
    for source, per_width in result["sources"].items():
        for n in result["widths"]:
            p_value = per_width[str(n)]["gof"]["p_value"]
            smallest = min(smallest, p_value)
            if p_value < ALPHA:
                deviations.append(f"{source} at n = {n} (p-value {p_value:.2g})")
    names = ", ".join(result["sources"])
    widths = ", ".join(str(n) for n in result["widths"])
    if deviations:
        first = (
            f"No: the dropped counts deviate detectably from Binomial(n, {result['p']}) for "
            + "; ".join(deviations)
            + "."
        )
    else:
        first = (
            f"Yes: the dropped counts of {names} all match Binomial(n, {result['p']}) "
            f"(smallest chi-square p-value {smallest:.2g} over n = {widths}; below {ALPHA} would count as a deviation)."
        )
    parts = []
    outside = []
    for n in result["widths"]:
        exact = result["exact_all_dropped"][str(n)]
        counts = []
        for source, per_width in result["sources"].items():
            count, _, low, high = per_width[str(n)]["all_dropped"]
            counts.append(count)
            if not low <= exact <= high:
                outside.append(f"{source} at n = {n}")
        parts.append(
            f"{exact:.3g} for n = {n} (observed {_span(counts)} of {result['draws']} rows per source)"
        )
    second = (
        "The whole layer is dropped with probability p^n: " + "; ".join(parts) + "."
    )
    if outside:
        second += (
            " The observed rate falls outside its 95 % interval for "
            + ", ".join(outside)
            + "."
        )
    else:
        second += " Every observed rate is consistent with p^n, so empty subnetworks matter only for tiny layers."
    return f"{first} {second}"
