"""One rule for bounds: each quantity's true range, in the tables and the figures.

A squared error is >= 0 with no upper bound, a signed error or a difference has
no bound, a proportion lives in [0, 1]; an interval is cut only there, so a
value never lies outside its interval, and a figure draws the interval the
table shows.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from droplab.lab.ranges import in_range, value_range
from droplab.lab.report.render import _interval, shipped_results


def test_each_quantity_has_its_true_range() -> None:
    assert value_range("inverted: mean squared error") == (0.0, None)
    assert value_range("n = 8: mean relative error over all masks") == (None, None)
    assert value_range("none: test error") == (0.0, 1.0)
    assert value_range("dropout - none (paired)") == (None, None)
    assert value_range("dropout: seconds per epoch", "s") == (0.0, None)
    assert value_range("inverted: bias of z (mean over inputs and outputs)") == (
        None,
        None,
    )
    assert value_range("digits: AUROC of entropy, noise vs test") == (0.0, 1.0)


def test_the_issues_rows_keep_their_value_inside() -> None:
    """The seven rows the issue found outside their own interval."""
    rows = [
        ("inverted: mean squared error", 1.442, 1.308, 1.58),
        ("none: mean squared error", 2.339, 2.14, 2.54),
        ("n = 8: mean relative error over all masks", -0.008082, -0.0264, 0.01023),
    ]
    for quantity, value, low, high in rows:
        shown = _interval(
            {"quantity": quantity, "value": value, "low": low, "high": high}
        )
        ends = [float(x.rstrip("*")) for x in shown.strip("[]").split(", ")]
        assert ends[0] <= value <= ends[1], (quantity, shown)
        assert "*" not in shown  # nothing in their true range to cut


def _drawn(ax: Any) -> list[tuple[float, float]]:
    """(low, high) of every error bar drawn on ``ax``, left to right."""
    from matplotlib.container import BarContainer, ErrorbarContainer

    bars = []
    for container in ax.containers:
        if isinstance(container, BarContainer):
            container = container.errorbar
        if isinstance(container, ErrorbarContainer) and container.lines[2]:
            for segment in container.lines[2][0].get_segments():
                bars.append((segment[0][0], min(segment[:, 1]), max(segment[:, 1])))
    return [(low, high) for _, low, high in sorted(bars)]


def test_a_figure_draws_the_interval_its_table_shows() -> None:
    """variants' shipped result, one seconds-per-epoch interval pushed below 0:
    the table shows it cut at 0, and so does the figure."""
    from droplab.lab.experiments import variants

    result = copy.deepcopy(shipped_results()["variants"]["result"])
    value = result["epoch_seconds"]["gaussian"][0]
    result["epoch_seconds"]["gaussian"] = [value, -value, 3 * value]
    rows = {r["quantity"]: r for r in variants.numbers(result)}
    assert _interval(rows["gaussian: seconds per epoch"]).startswith("[0*, ")
    figure = variants.figure(result)
    accuracy, seconds = figure.axes[:2]
    for ax, key, scale, quantity in (
        (accuracy, "accuracy", 100.0, "test accuracy"),
        (seconds, "epoch_seconds", 1.0, "seconds per epoch"),
    ):
        expected = [
            (scale * in_range(result[key][v], quantity)[1],
             scale * in_range(result[key][v], quantity)[2])
            for v in variants.VARIANTS
        ]  # fmt: skip
        np.testing.assert_allclose(_drawn(ax), expected, rtol=1e-9, atol=1e-12)
    assert min(low for low, _ in _drawn(seconds)) == 0.0  # cut, as in the table
