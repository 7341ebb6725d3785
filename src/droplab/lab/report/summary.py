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
    "HEADLINE_POINTS",
    "MAX_WORDS",
    "SEED_QUESTIONS",
    "forest_figure",
    "forest_rows",
    "headline",
    "short_answer",
    "variant_name",
]

MAX_WORDS = 25

# The question each experiment answers, as a reader would ask it.
SEED_QUESTIONS: dict[str, str] = {
    "masks": "How many units are dropped, and can a whole layer go?",
    "expectation": "Why divide by keep_prob, even when the largest activations are dropped?",
    "averaging": "Is scaling the weights as good as averaging all subnetworks?",
    "gradients": "What does a dropped unit do to the gradient?",
    "exact-count": "Would dividing by the units actually kept be better?",
    "smaller-network": "Why not train a smaller network instead?",
    "convergence": "Does dropout double the iterations to converge?",
    "rate": "Which dropout rate is best?",
    "data-size": "Does dropout help more with little data?",
    "when-it-helps": "When does dropout help, and when not?",
    "features": "Does dropout change the features a network learns?",
    "uncertainty": "How does dropout give uncertainty, and does it grow off the data?",
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


def _row(
    quantity: str, value: float, low: float | None = None, high: float | None = None,
    unit: str = "", reason: str = "",
) -> dict[str, Any]:  # fmt: skip
    """A headline: a numbers-style row (``reason``: why it has no interval)."""
    return {"quantity": quantity, "value": value, "low": low, "high": high,
            "unit": unit, "reason": reason}  # fmt: skip


def _benefit(quantity: str, d: Mapping[str, Any], sign: float) -> dict[str, Any]:
    """A paired difference as dropout's benefit in points, as the forest plot
    draws it (``sign`` -1 for an error or for "other minus dropout")."""
    low, high = sorted((100 * sign * d["low"], 100 * sign * d["high"]))
    return _row(f"{quantity} (paired)", 100 * sign * d["mean"], low, high, "points")


def _points(quantity: str, d: Mapping[str, Any]) -> dict[str, Any]:
    return _row(quantity, 100 * d["mean"], 100 * d["low"], 100 * d["high"], "points")


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


Short = tuple[str, dict[str, Any]]  # the short answer and its headline number


def _masks(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    pvals = [row["value"] for row in rows if "chi-square p-value" in row["quantity"]]
    seen = next(
        row
        for row in rows
        if "droplab.masks: observed P(all dropped)" in row["quantity"]
    )
    n = seen["quantity"].split(",")[0].split("=")[1].strip()
    exact = next(
        row for row in rows if row["quantity"] == f"n = {n}: P(all dropped) = p^n"
    )
    verdict = "match" if min(pvals) >= 0.01 else "differ"
    headline = _row(
        f"n = {n}: observed P(all dropped)", seen["value"], seen["low"], seen["high"]
    )
    return (
        f"Binomial(n, p): counts {verdict} (smallest chi-square p = {min(pvals):.2g}); "
        f"a whole layer of {n} goes {seen['value']:.3g} [{seen['low']:.3g}, "
        f"{seen['high']:.3g}] of the time, p^n = {exact['value']:.3g}."
    ), headline  # fmt: skip


def _expectation(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    get = {row["quantity"]: row for row in rows}
    scaled = get["forum: mean(r*y/keep), average over repeats"]
    target = get["forum: mean(y), average over repeats"]["value"]
    holds = scaled["low"] <= target <= scaled["high"]
    small, large = r["widths"][0], r["widths"][-1]
    return (
        f"{'Yes' if holds else 'No'}, on average: mean(r*y/keep) {scaled['value']:.4f} "
        f"[{scaled['low']:.4f}, {scaled['high']:.4f}] {'matches' if holds else 'misses'} "
        f"mean(y). Losing 14.1 and 13.1 (P {small['p_both_exact']:.2g}) leaves the sum "
        f"{-small['error_if_both_exact']:.0%} short at n={small['n']}, "
        f"{-large['error_if_both_exact']:.1%} at n={large['n']}."
    ), dict(scaled)


def _averaging(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
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
    spread = f" [{ws['low']:.3g}, {ws['high']:.3g}]" if ws["low"] is not None else ""
    headline = _row(
        "weight scaling: total variation to the exact average", ws["value"],
        ws["low"], ws["high"],
        reason="" if ws["low"] is not None
        else "saved before its interval over test inputs was recorded",
    )  # fmt: skip
    return (
        f"Nearly: weight scaling is {ws['value']:.3g}{spread} (total variation) from "
        f"the exact average of all subnetworks; {tail}."
    ), headline


def _gradients(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    dropped = next(
        row for row in rows if row["quantity"].startswith("max |term| of dropped")
    )
    agree = next(row for row in rows if row["quantity"].startswith("max |reference"))
    n = dropped["quantity"].split("(")[1].split()[0]
    headline = _row(
        "largest gradient term of a dropped unit", dropped["value"],
        reason="exact: one deterministic computation, no sampling",
    )  # fmt: skip
    return (
        f"It zeroes it: the largest of the {n} terms of dropped units is "
        f"{dropped['value']:g}; hand-written backprop matches autograd to "
        f"{agree['value']:.1g}."
    ), headline


def _exact_count(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    acc = [c for c in r["comparisons"] if c["metric"] == "accuracy"]
    good, bad = _count_helps(acc, helps_if_negative=False)
    largest = max(acc, key=lambda c: abs(c["mean"]))
    where = f"{largest['rule']} - inverted, {largest['data']}, n = {largest['width']}"
    return (
        f"{'Not' if good == 0 else 'Sometimes'} in accuracy: of {len(acc)} paired "
        f"comparisons with 'inverted', {good} "
        f"detectably better, {bad} worse (Holm); largest: {_interval_pts(largest)}."
    ), _points(f"largest accuracy difference ({where})", largest)


def _smaller_network(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    diffs = r["dropout_minus_plain"]
    good, bad = _count_helps(diffs, helps_if_negative=True)
    best = min(range(len(diffs)), key=lambda i: r["plain"][i]["test_error"][0])
    width = r["widths"][best]
    return (
        f"Against the best network without dropout (width {width}): test error lowered "
        f"by {_interval_pts(diffs[best], -1.0)}; beats {good}, loses to {bad} of "
        f"{len(diffs)} widths (Holm)."
    ), _benefit(
        f"dropout's benefit over the best network without dropout (width {width}), "
        "test error lowered", diffs[best], -1.0,
    )  # fmt: skip


def _convergence(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    e = r["epochs_ratio"]
    side = (
        "more" if e["p_value"] < 0.05 and e["low"] > 1
        else "fewer" if e["p_value"] < 0.05 and e["high"] < 1
        else "no detectably different number of"
    )  # fmt: skip
    return (
        f"It takes {side} epochs: dropout / no dropout = {e['value']:.2f}x "
        f"[{e['low']:.2f}, {e['high']:.2f}] to reach the same validation error."
    ), _row("epochs ratio, dropout / no dropout", e["value"], e["low"], e["high"])


SCHEME_WORDS = {
    "fixed_n": "at {width} units per layer",  # the same width for every p
    "fixed_kept": "keeping {kept} units on average",  # width n = kept / (1 - p)
}


def _rate(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    parts, settings = [], []
    for key, scheme in r["schemes"].items():
        best = scheme["best"]
        lo, hi = best["bootstrap"]
        where = SCHEME_WORDS[key].format(width=r["width"], kept=r["kept"])
        parts.append(f"{best['p']:g} [{lo:g}, {hi:g}] {where}")
        settings.append((where, best))
    where, best = settings[0]
    headline = _row(
        f"best p {where} (bootstrap interval)", best["p"], *best["bootstrap"]
    )
    return "Best p by validation (bootstrap): " + "; ".join(parts) + ".", headline


def _data_size(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    diffs = [s["difference"] for s in r["sizes"]]
    good, _bad = _count_helps(diffs, helps_if_negative=True)
    best = min(r["sizes"], key=lambda s: s["difference"]["mean"])
    return (
        f"Dropout lowers test error detectably (Holm) at {good} of {len(diffs)} sizes; "
        f"most at {best['size']} examples, by {_interval_pts(best['difference'], -1.0)}."
    ), _benefit(
        f"dropout's benefit at {best['size']} examples, test error lowered",
        best["difference"], -1.0,
    )  # fmt: skip


def _when_it_helps(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    diffs = [c["benefit"] for c in r["cells"]]
    good, bad = _count_helps(diffs, helps_if_negative=False)
    best = max(r["cells"], key=lambda c: c["benefit"]["mean"])
    return (
        f"Helps detectably (Holm) in {good}, hurts in {bad} of {len(diffs)} size × width "
        f"cells; most at {best['size']} × {best['width']}: "
        f"{_interval_pts(best['benefit'])}."
    ), _benefit(
        f"dropout's benefit at {best['size']} examples × width {best['width']}, "
        "test accuracy", best["benefit"], 1.0,
    )  # fmt: skip


def _features(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    paired = [row for row in rows if "dropout - none (paired)" in row["quantity"]]
    sparser = paired[0]
    word = "Yes, sparser" if sparser["high"] < 0 else "Not detectably sparser"
    return (
        f"{word}: the mean hidden activation changes by {sparser['value']:+.3f} "
        f"[{sparser['low']:+.3f}, {sparser['high']:+.3f}] with dropout (paired seeds)."
    ), dict(sparser)


def _uncertainty(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    gap, beyond = r["gap_minus_data"], r["beyond_minus_data"]

    def say(d: Mapping[str, Any]) -> str:
        return "larger" if detectable(d) and d["mean"] > 0 else "not detectably larger"

    return (
        f"Repeated passes with dropout on; their spread is {say(beyond)} beyond the data "
        f"({beyond['mean']:+.3f} [{beyond['low']:+.3f}, {beyond['high']:+.3f}]) and "
        f"{say(gap)} in the gap."
    ), _row(
        "toy: MC standard deviation beyond the data minus on it (paired)",
        beyond["mean"], beyond["low"], beyond["high"],
    )  # fmt: skip


def variant_name(variant: str) -> str:
    """A variant as the page names it: "none" is "no dropout", never a bare "none".

    >>> variant_name("none"), variant_name("classic")
    ('no dropout', 'classic')
    """
    return "no dropout" if variant == "none" else variant


def _variants(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    diffs = r["minus_dropout"]
    better = [variant_name(v) for v, d in diffs.items()
              if detectable(d, d["p_holm"]) and d["mean"] > 0]  # fmt: skip
    worse = [variant_name(v) for v, d in diffs.items()
             if detectable(d, d["p_holm"]) and d["mean"] < 0]  # fmt: skip
    text = (
        f"Better than standard dropout (Holm): {', '.join(better) or 'no variant'}; "
        f"worse: {', '.join(worse) or 'no variant'} (of {len(diffs)})"
    )
    if len(text.split()) > MAX_WORDS - 8:  # long lists: counts instead of names
        text = (
            f"Of {len(diffs)} compared with standard dropout (Holm): {len(better)} "
            f"better, {len(worse)} worse"
        )
    if "none" not in diffs:
        return text + ".", _row("variants compared", len(diffs), reason="a count")
    return (
        text + f"; dropout vs no dropout: {_interval_pts(diffs['none'], -1.0)}."
    ), _benefit("dropout's benefit over no dropout, test accuracy", diffs["none"], -1.0)


def _uci(r: dict[str, Any], rows: list[dict[str, Any]]) -> Short:
    from droplab.lab.experiments.uci import is_published_protocol

    ours, published = r["ours"]["rmse_mc"], r["published"]["rmse_mc"]
    splits = r["splits"]
    mine = next(
        row for row in rows if row["quantity"].startswith("RMSE, MC dropout (droplab)")
    )
    headline = dict(mine)
    if not is_published_protocol(r):
        return (
            f"A pipeline check ({r['epochs']} epochs, not 4,000): {r['dataset']} RMSE "
            f"{ours['mean']:.3g} vs {published['mean']:.3g} published, "
            f"{len(splits)} splits."
        ), headline
    everything = r.get("published_all")
    if len(splits) == 1 and everything is not None:
        mc = everything["rmse_mc"]
        return (
            f"Published protocol, split {splits[0]} of {len(everything['splits'])} "
            f"only: {r['dataset']} RMSE {ours['mean']:.3g} vs {published['mean']:.3g} "
            f"published there ({mc['mean']:.2f} ± {mc['se']:.2f} over all splits)."
        ), headline
    return (
        f"Published protocol on {len(splits)} splits: {r['dataset']} RMSE "
        f"{ours['mean']:.3g} vs {published['mean']:.3g} published."
    ), headline


SHORT: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], Short]] = {
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

# The experiments whose headline is a paired difference of accuracy or error
# fractions: the short answer and the headline state it in points (0.05 is 5
# points), as dropout's benefit where it is a comparison with no dropout (the
# forest plot's sign: right of 0, dropout helps).
HEADLINE_POINTS = frozenset(
    {"when-it-helps", "data-size", "smaller-network", "variants", "exact-count"}
)


def _answer_and_headline(
    name: str, result: dict[str, Any], rows: list[dict[str, Any]]
) -> Short | None:
    make = SHORT.get(name)
    if make is None:
        return None
    try:
        return make(result, rows)
    except (KeyError, IndexError, StopIteration, TypeError, ValueError):
        return None  # e.g. a result saved by an older version: fall back


def short_answer(name: str, result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The summary's answer for experiment ``name``, computed from its result and
    its ``numbers`` rows; "" for an experiment without one (or whose result lacks
    what it reads): the page then shows the first sentence of its full answer."""
    made = _answer_and_headline(name, result, rows)
    return made[0] if made else ""


def headline(
    name: str, result: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The summary's headline number for ``name``: the number its short answer
    states, as a row (``quantity``, ``value``, ``low``, ``high``, ``unit`` and
    ``reason``, why it has no interval); None where there is no short answer."""
    made = _answer_and_headline(name, result, rows)
    return made[1] if made else None


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
        add(
            "variants: vs no dropout",
            records["variants"]["minus_dropout"]["none"],
            -1.0,
        )
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
