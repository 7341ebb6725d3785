"""The page's summary: one row per question, its answer in a few words, one figure.

Each row pairs a seed question (the forum thread, the blog post and the Q&A
that the lab answers, in their words, shortened) with a short answer computed
from the experiment's saved result, at most :data:`MAX_WORDS` words, and its
headline number; the full answer is in the experiment's section. The forest
plot puts every paired "dropout against no dropout" difference of the training
experiments on one axis, so "does dropout help?" is answered at a glance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from droplab.lab.compare import detectable

__all__ = [
    "EXACT_HEADLINES",
    "HEADLINE_PICK",
    "HEADLINE_ROWS",
    "MAX_WORDS",
    "SEED_QUESTIONS",
    "forest_figure",
    "forest_rows",
    "headline_row",
    "short_answer",
]

MAX_WORDS = 25

# The question each experiment answers, as a reader would ask it.
SEED_QUESTIONS: dict[str, str] = {
    "masks": "How many units are dropped, and can a whole layer go?",
    "expectation": "Why divide by keep_prob, even when the big activations are dropped?",
    "averaging": "Is scaling the weights as good as averaging all subnetworks?",
    "gradients": "What does a dropped unit do to the gradient?",
    "exact-count": "Would dividing by the units actually kept be better?",
    "smaller-network": "Why not train a smaller network instead?",
    "convergence": "Does dropout double the iterations to converge?",
    "rate": "Which dropout rate is best?",
    "data-size": "Does dropout help more with little data?",
    "when-it-helps": "When does dropout help, and when not?",
    "features": "Does dropout change the features a network learns?",
    "uncertainty": "Does MC dropout know where it has not seen data?",
    "variants": "Do the other dropout variants do better?",
    "uci": "Does droplab reproduce Gal & Ghahramani's MC dropout numbers?",
}


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _interval_pts(d: Mapping[str, Any], sign: float = 1.0) -> str:
    """``+2.0 points [+1.0, +3.0]``; a point "interval" (every seed pair alike) says so.

    >>> _interval_pts({"mean": -0.0084, "low": -0.0084, "high": -0.0084})
    '-0.8 points (every seed pair alike: no interval)'
    """
    low, high = sign * d["low"], sign * d["high"]
    low, high = min(low, high), max(low, high)
    if low == high:
        return f"{_pts(sign * d['mean'])} points (every seed pair alike: no interval)"
    return f"{_pts(sign * d['mean'])} points [{_pts(low)}, {_pts(high)}]"


def _count_helps(
    diffs: list[Mapping[str, Any]], helps_if_negative: bool
) -> tuple[int, int]:
    """(detectable after Holm in dropout's favour, detectable against it)."""
    good = bad = 0
    for d in diffs:
        if detectable(d, d.get("p_holm")):
            if (d["mean"] < 0) == helps_if_negative:
                good += 1
            else:
                bad += 1
    return good, bad


def _masks(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    pvals = [row["value"] for row in rows if "chi-square p-value" in row["quantity"]]
    alls = [row for row in rows if "P(all dropped) = p^n" in row["quantity"]]
    verdict = "match" if min(pvals) >= 0.01 else "do not all match"
    return (
        f"Binomial(n, p): counts {verdict} (smallest chi-square p = {min(pvals):.2g}); "
        f"a whole layer goes with probability p^n: {alls[0]['value']:.3g} at n = 4."
    )


def _expectation(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    get = {row["quantity"]: row for row in rows}
    scaled = get["forum: mean(r*y/keep), average over repeats"]
    plain = get["forum: mean(y), average over repeats"]
    single = get["forum: mean(r*y/keep), middle 95 % of single runs"]
    return (
        f"On average: mean(r*y/keep) = {scaled['value']:.4f} [{scaled['low']:.4f}, "
        f"{scaled['high']:.4f}] vs mean(y) = {plain['value']:.4f}; one run lands in "
        f"[{single['low']:.3f}, {single['high']:.3f}]."
    )


def _averaging(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    ws = next(
        row for row in rows if "weight scaling, TV to exact average" in row["quantity"]
    )
    closer = [
        row for row in rows
        if row["quantity"].startswith("small net: MC-") and row["high"] is not None
        and row["high"] < ws["value"]
    ]  # fmt: skip
    tail = (
        f"{closer[0]['quantity'].split(':')[1].split(',')[0].strip()} is detectably "
        f"closer ({closer[0]['value']:.3g})"
        if closer
        else "no MC-k tried is detectably closer"
    )
    return (
        f"Nearly: weight scaling is {ws['value']:.3g} (total variation) from the exact "
        f"average of all subnetworks; {tail}."
    )


def _gradients(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    dropped = next(
        row for row in rows if row["quantity"].startswith("max |term| of dropped")
    )
    agree = next(row for row in rows if row["quantity"].startswith("max |reference"))
    n = dropped["quantity"].split("(")[1].split()[0]
    return (
        f"It zeroes it: the largest of the {n} terms of dropped units is "
        f"{dropped['value']:g}; hand-written backprop matches autograd to "
        f"{agree['value']:.1g}."
    )


def _exact_count(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    acc = [c for c in r["comparisons"] if c["metric"] == "accuracy"]
    good, bad = _count_helps(acc, helps_if_negative=False)
    return (
        f"Not in accuracy: of {len(acc)} paired comparisons with 'inverted', "
        f"{good} are detectably better and {bad} detectably worse after Holm."
    )


def _smaller_network(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    diffs = r["dropout_minus_plain"]
    good, bad = _count_helps(diffs, helps_if_negative=True)
    best = min(diffs, key=lambda d: d["mean"])
    return (
        f"Dropout beats {good}, loses to {bad} of {len(diffs)} smaller or equal networks "
        f"(Holm); best dropout-minus-none test error: {_interval_pts(best)}."
    )


def _convergence(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    e = r["epochs_ratio"]
    side = (
        "more" if e["p_value"] < 0.05 and e["low"] > 1
        else "fewer" if e["p_value"] < 0.05 and e["high"] < 1
        else "no detectably different number of"
    )  # fmt: skip
    return (
        f"It takes {side} epochs: dropout / none = {e['value']:.2f}x "
        f"[{e['low']:.2f}, {e['high']:.2f}] to reach the same validation error."
    )


def _rate(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    parts = []
    for scheme in r["schemes"].values():
        best = scheme["best"]
        lo, hi = best["bootstrap"]
        parts.append(f"p = {best['p']:g} (bootstrap [{lo:g}, {hi:g}])")
    return "Lowest validation error at " + " and ".join(parts) + ", per width setting."


def _data_size(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    diffs = [s["difference"] for s in r["sizes"]]
    good, _bad = _count_helps(diffs, helps_if_negative=True)
    best = min(r["sizes"], key=lambda s: s["difference"]["mean"])
    return (
        f"Dropout lowers test error detectably (Holm) at {good} of {len(diffs)} sizes; "
        f"most at {best['size']}: {_interval_pts(best['difference'])}."
    )


def _when_it_helps(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    diffs = [c["benefit"] for c in r["cells"]]
    good, bad = _count_helps(diffs, helps_if_negative=False)
    best = max(r["cells"], key=lambda c: c["benefit"]["mean"])
    return (
        f"Helps detectably (Holm) in {good}, hurts in {bad} of {len(diffs)} size × width "
        f"cells; most at {best['size']} × {best['width']}: "
        f"{_interval_pts(best['benefit'])}."
    )


def _features(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    paired = [row for row in rows if "dropout - none (paired)" in row["quantity"]]
    sparser = paired[0]
    return (
        f"Yes, sparser: mean hidden activation changes by {sparser['value']:+.3f} "
        f"[{sparser['low']:+.3f}, {sparser['high']:+.3f}] with dropout (paired seeds)."
    )


def _uncertainty(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    gap, beyond = r["gap_minus_data"], r["beyond_minus_data"]

    def say(d: Mapping[str, Any]) -> str:
        return "larger" if detectable(d) and d["mean"] > 0 else "not detectably larger"

    return (
        f"MC spread is {say(beyond)} beyond the data ({beyond['mean']:+.3f} "
        f"[{beyond['low']:+.3f}, {beyond['high']:+.3f}]) and {say(gap)} in the gap."
    )


def _variants(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    diffs = r["minus_dropout"]
    better = [
        v for v, d in diffs.items() if detectable(d, d["p_holm"]) and d["mean"] > 0
    ]
    worse = [
        v for v, d in diffs.items() if detectable(d, d["p_holm"]) and d["mean"] < 0
    ]
    return (
        f"Better than standard dropout after Holm: {', '.join(better) or 'none'}; "
        f"worse: {', '.join(worse) or 'none'} (of {len(diffs)} compared)."
    )


def _uci(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    from droplab.lab.experiments.uci import is_published_protocol

    ours, published = r["ours"]["rmse_mc"], r["published"]["rmse_mc"]
    splits = r["splits"]
    if not is_published_protocol(r):
        return (
            f"A pipeline check ({r['epochs']} epochs, not 4,000): {r['dataset']} RMSE "
            f"{ours['mean']:.3g} vs {published['mean']:.3g} published, "
            f"{len(splits)} splits."
        )
    everything = r.get("published_all")
    if len(splits) == 1 and everything is not None:
        mc = everything["rmse_mc"]
        return (
            f"Published protocol, split {splits[0]} of {len(everything['splits'])} "
            f"only: {r['dataset']} RMSE {ours['mean']:.3g} vs {published['mean']:.3g} "
            f"published there ({mc['mean']:.2f} ± {mc['se']:.2f} over all splits)."
        )
    return (
        f"Published protocol on {len(splits)} splits: {r['dataset']} RMSE "
        f"{ours['mean']:.3g} vs {published['mean']:.3g} published."
    )


SHORT: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], str]] = {
    "masks": _masks,
    "expectation": _expectation,
    "averaging": _averaging,
    "gradients": _gradients,
    "exact-count": _exact_count,
    "smaller-network": _smaller_network,
    "convergence": _convergence,
    "rate": _rate,
    "data-size": _data_size,
    "when-it-helps": _when_it_helps,
    "features": _features,
    "uncertainty": _uncertainty,
    "variants": _variants,
    "uci": _uci,
}


# The summary's headline number: the numbers row whose quantity contains this
# text (the largest in size where several do, or the one HEADLINE_PICK names),
# for experiments whose first row with an interval is not their answer's number.
HEADLINE_ROWS: dict[str, str] = {
    "expectation": "forum: mean(r*y/keep), average over repeats",
    "rate": "best p by validation (bootstrap interval)",
    "smaller-network": "dropout minus width",
    "convergence": "epochs ratio dropout / none",
    "data-size": "dropout - none (paired",
    "when-it-helps": "dropout - none (paired",
    "variants": "none minus dropout",
    "uci": "RMSE, MC dropout (droplab)",
    "uncertainty": "sd beyond minus sd on the data",
    "features": "mean hidden activation, dropout - none",
}


# Where the short answer quotes the best case ("most at 400: ..."), the headline
# is that row too: the largest value (+1) or the smallest (-1), not the largest
# in size, which could be another cell with the opposite sign.
HEADLINE_PICK: dict[str, int] = {
    "when-it-helps": +1,  # dropout - none, test accuracy: its largest benefit
    "data-size": -1,  # dropout - none, test error: its lowest
    "smaller-network": -1,  # dropout minus width, test error: its lowest
}

# Headlines that are paired differences of accuracy or error fractions: the short
# answers state them in points (0.05 is 5 points), so the summary's headline
# column does too, and a reader never compares 0.056 with +5.6 points.
HEADLINE_POINTS = frozenset(
    {"when-it-helps", "data-size", "smaller-network", "variants"}
)


def in_points(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with its value and interval times 100 and the unit ``points``.

    >>> in_points({"quantity": "dropout - none", "value": 0.05, "low": 0.01, "high": None})
    {'quantity': 'dropout - none', 'value': 5.0, 'low': 1.0, 'high': None, 'unit': 'points'}
    """
    scaled = dict(row)
    for key in ("value", "low", "high"):
        if scaled.get(key) is not None:
            scaled[key] = 100 * float(scaled[key])
    scaled["unit"] = "points"
    return scaled


# Headlines that are exact computations (no sampling), so have no interval;
# the summary says so in the interval's place.
EXACT_HEADLINES: dict[str, str] = {
    "gradients": "exact: one deterministic computation, no sampling",
}


def headline_row(name: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row :data:`HEADLINE_ROWS` names for ``name`` (None: no such rule or row)."""
    text = HEADLINE_ROWS.get(name)
    if text is None:
        return None
    matches = [row for row in rows if text in row["quantity"]]
    if not matches:
        return None
    pick = HEADLINE_PICK.get(name)
    if pick is not None:
        return max(matches, key=lambda row: pick * float(row["value"] or 0.0))
    return max(matches, key=lambda row: abs(float(row["value"] or 0.0)))


def short_answer(name: str, result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The summary's answer for experiment ``name``, computed from its result and
    its ``numbers`` rows; for an experiment without one (or whose result lacks
    what it reads), the first sentence of its full answer, if short enough."""
    make = SHORT.get(name)
    if make is not None:
        try:
            return make(result, rows)
        except (KeyError, IndexError, StopIteration, TypeError, ValueError):
            pass  # e.g. a result saved by an older version: fall back
    return ""


# ------------------------------------------------------------------ forest plot


def forest_rows(records: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every paired dropout-vs-none difference of the training experiments, as
    dropout's benefit in points (test accuracy, or test error lowered).

    Returns rows ``{"label", "mean", "low", "high", "holm"}`` (fractions, so
    0.05 is 5 points; ``holm`` whether it is detectable after Holm, None where
    the experiment made no Holm family).
    """
    out: list[dict[str, Any]] = []

    def add(label: str, d: Mapping[str, Any], sign: float) -> None:
        if d.get("low") is None or d.get("high") is None:
            return
        low, high = sorted((sign * d["low"], sign * d["high"]))
        adjusted = d.get("p_holm")
        out.append({
            "label": label, "mean": sign * d["mean"], "low": low, "high": high,
            "holm": detectable(d, adjusted) if adjusted is not None else None,
        })  # fmt: skip

    if "when-it-helps" in records:
        for c in records["when-it-helps"]["cells"]:
            add(f"when-it-helps: {c['size']} ex. × {c['width']}", c["benefit"], 1.0)
    if "data-size" in records:
        for s in records["data-size"]["sizes"]:
            add(f"data-size: {s['size']} ex.", s["difference"], -1.0)
    if "smaller-network" in records:
        r = records["smaller-network"]
        for w, d in zip(r["widths"], r["dropout_minus_plain"], strict=False):
            add(f"smaller-network: vs width {w}", d, -1.0)
    if "variants" in records and "none" in records["variants"]["minus_dropout"]:
        add("variants: vs none", records["variants"]["minus_dropout"]["none"], -1.0)
    if "rate" in records:
        for key, s in records["rate"]["schemes"].items():
            d = s.get("best_vs_no_dropout_test")
            if d is not None:
                add(f"rate ({key.replace('_', ' ')}): best p vs 0", d, -1.0)
    return out


def _two_lines(label: str) -> str:
    """``"when-it-helps: 300 ex. × 32"`` -> the experiment, then the comparison.

    >>> _two_lines("data-size: 50 ex.")
    'data-size:\\n50 ex.'
    """
    head, sep, tail = label.partition(": ")
    return f"{head}:\n{tail}" if sep else label


def forest_figure(rows: list[dict[str, Any]], *, narrow: bool = False) -> Any:
    """A forest plot of :func:`forest_rows`: dropout's benefit, 95 % intervals;
    filled where detectable after Holm, open where not.

    ``narrow`` draws it for a phone: 3.5 inches wide (385 pixels at the page's
    110 dpi, so it is shown near its own size and its 9-point text stays about
    13 pixels high), each label on two lines, the title and axis label shorter.
    """
    from matplotlib.figure import Figure

    per_row = 0.5 if narrow else 0.28
    height = 1.0 + per_row * max(1, len(rows))
    width = 3.5 if narrow else 6.4
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    for i, row in enumerate(reversed(rows)):
        filled = row["holm"] is not False and (row["low"] > 0 or row["high"] < 0)
        color = "#1f5fa8" if row["mean"] > 0 else "#b8452f"
        ax.plot([100 * row["low"], 100 * row["high"]], [i, i], color=color, lw=1.6)
        ax.plot([100 * row["mean"]], [i], "o", ms=6, color=color,
                markerfacecolor=color if filled else "white")  # fmt: skip
    ax.axvline(0, color="k", lw=0.8)
    labels = [r["label"] for r in reversed(rows)]
    if narrow:
        labels = [_two_lines(label) for label in labels]
    ax.set_yticks(range(len(rows)), labels, fontsize=9)
    ax.set_xlabel(
        "dropout's benefit, points (95 % interval)"
        if narrow
        else "dropout's benefit, points of test accuracy (95 % interval)",
        fontsize=9,
    )
    ax.set_title(
        "filled: detectable after Holm; open: not\n(right of 0: dropout helps)"
        if narrow
        else "filled: detectable after Holm; open: not (right of 0: dropout helps)",
        fontsize=9,
    )
    ax.tick_params(axis="x", labelsize=9)
    return fig
