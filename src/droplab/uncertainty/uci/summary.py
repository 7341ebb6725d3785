"""Summaries of UCI protocol runs, next to the published per-split numbers.

Each metric is summarised by its mean and standard error over splits (sample
standard deviation / sqrt(n), as in Gal & Ghahramani's table). When the
published per-split file (``published_per_split.csv``: dataset, split,
rmse_weight_scaling, rmse_mc, test_ll, tau) covers the splits run, the summary
also gives, on the same splits, the published mean ± standard error and a paired
comparison: the mean per-split difference (ours - published) with its 95 %
t-interval and the paired t-test's two-sided p-value.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from droplab.uncertainty.uci.folder import UCIFormatError, read_text

__all__ = [
    "METRICS",
    "format_summary",
    "published_means",
    "read_published",
    "summarize",
]

# (key, label, True if higher is better)
METRICS = (
    ("rmse_mc", "RMSE, MC dropout", False),
    ("test_ll", "test log-likelihood", True),
    ("rmse_weight_scaling", "RMSE, weight scaling", False),
)
PUBLISHED_FILE = "published_per_split.csv"
_COLUMNS = ("dataset", "split", "rmse_weight_scaling", "rmse_mc", "test_ll", "tau")


def read_published(data_dir: Path, dataset: str) -> dict[int, dict[str, float]] | None:
    """Published per-split numbers of ``dataset``, by split, or None if no file.

    Looks for ``published_per_split.csv`` (or its gzipped ``.gz``) in the data
    set's folder, then in ``data_dir``. A malformed file raises :class:`UCIFormatError` naming the line.
    """
    for path in (data_dir / dataset / PUBLISHED_FILE, data_dir / PUBLISHED_FILE):
        text = read_text(path)  # or path.gz, as packaged
        if text is not None:
            break
    else:
        return None
    found: dict[int, dict[str, float]] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != _COLUMNS:
        raise UCIFormatError(
            f"{path}, line 1: expected the header {','.join(_COLUMNS)}"
        )
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(_COLUMNS):
            raise UCIFormatError(f"{path}, line {line}: {len(row)} fields, expected 6")
        if row[0].strip() != dataset:
            continue
        try:
            split = int(row[1])
            values = {k: float(v) for k, v in zip(_COLUMNS[2:], row[2:], strict=True)}
        except ValueError:
            raise UCIFormatError(
                f"{path}, line {line}: a field is not a number"
            ) from None
        found[split] = values
    return found or None


def _mean_se(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    se = (
        float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else math.nan
    )
    return {"mean": float(array.mean()), "se": se, "values": array.tolist()}


def published_means(published: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Mean ± standard error of each metric over every split of the published file
    (the numbers of the paper's table), with the splits they average over.

    >>> means = published_means({0: {"rmse_mc": 1.0, "test_ll": -1.0,
    ...     "rmse_weight_scaling": 2.0}, 1: {"rmse_mc": 3.0, "test_ll": -2.0,
    ...     "rmse_weight_scaling": 2.0}})
    >>> rmse = means["rmse_mc"]
    >>> means["splits"], rmse["mean"], rmse["se"]
    ([0, 1], 2.0, 1.0)
    """
    splits = sorted(published)
    out: dict[str, Any] = {"splits": splits}
    for key, _, _ in METRICS:
        out[key] = _mean_se([published[s][key] for s in splits])
    return out


def _paired(
    ours: list[float], theirs: list[float], higher_better: bool
) -> dict[str, Any]:
    difference = np.asarray(ours) - np.asarray(theirs)
    n = difference.size
    out: dict[str, Any] = {"n": n, "mean_difference": float(difference.mean())}
    if n > 1:
        se = float(difference.std(ddof=1) / math.sqrt(n))
        half = float(stats.t.ppf(0.975, n - 1)) * se
        out["ci95"] = [out["mean_difference"] - half, out["mean_difference"] + half]
        out["p_value"] = (
            float(stats.ttest_rel(ours, theirs).pvalue) if se > 0 else math.nan
        )
    return out


def summarize(
    results: list[dict[str, Any]], published: dict[int, dict[str, float]] | None
) -> dict[str, Any]:
    """Mean ± SE of each metric over the splits, and the published comparison."""
    splits = [r["split"] for r in results]
    summary: dict[str, Any] = {
        "dataset": results[0]["dataset"] if results else None,
        "splits": splits,
        "settings": results[0]["settings"] if results else None,
        "epochs": results[0]["epochs"] if results else None,
        "seconds": float(sum(r["seconds"] for r in results)),
        "ours": {k: _mean_se([r[k] for r in results]) for k, _, _ in METRICS},
    }
    common = [r for r in results if published and r["split"] in published]
    if published and common:
        summary["published_splits"] = [r["split"] for r in common]
        summary["published"] = {
            k: _mean_se([published[r["split"]][k] for r in common])
            for k, _, _ in METRICS
        }
        summary["paired"] = {}
        for key, _, higher_better in METRICS:
            ours = [r[key] for r in common]
            theirs = [published[r["split"]][key] for r in common]
            paired = _paired(ours, theirs, higher_better)
            gap = paired["mean_difference"] * (
                1 if higher_better else -1
            )  # > 0: better
            se = summary["published"][key]["se"]
            paired["verdict"] = (
                "better"
                if gap >= 0
                else "within 2 SE"
                if not math.isnan(se) and -gap <= 2 * se
                else "worse"
            )
            summary["paired"][key] = paired
    return summary


def _pm(entry: dict[str, Any]) -> str:
    se = "n/a" if math.isnan(entry["se"]) else f"{entry['se']:.3f}"
    return f"{entry['mean']:.3f} ± {se}"


def format_summary(summary: dict[str, Any]) -> str:
    """A Markdown table of the summary (one row per metric)."""
    n = len(summary["splits"])
    settings = summary["settings"] or {}
    lines = [
        f"{summary['dataset']}: {n} split(s), {summary['epochs']} epochs "
        f"(x{settings.get('epochs_multiplier')}), T = {settings.get('samples')}, "
        f"{summary['seconds']:.0f} s of training and prediction",
        "",
    ]
    if "published" in summary:
        lines += [
            "| metric | droplab | published (same splits) | paired difference, 95 % CI | p | verdict |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for key, label, _ in METRICS:
            paired = summary["paired"][key]
            ci = paired.get("ci95")
            interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
            p = paired.get("p_value")
            p_text = "n/a" if p is None or math.isnan(p) else f"{p:.3g}"
            lines.append(
                f"| {label} | {_pm(summary['ours'][key])} | {_pm(summary['published'][key])} "
                f"| {paired['mean_difference']:+.3f}{interval} | {p_text} | {paired['verdict']} |"
            )
    else:
        lines += ["| metric | droplab |", "| --- | --- |"]
        lines += [
            f"| {label} | {_pm(summary['ours'][key])} |" for key, label, _ in METRICS
        ]
    return "\n".join(lines)
