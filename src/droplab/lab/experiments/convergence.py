"""Does dropout really need about twice the iterations, and is each epoch cheaper?

The answer in the Q&A on why not train a smaller network in the first place
quotes a summary article: "Dropout roughly doubles the number of
iterations required to converge. However, training time for each epoch is
less." We train the same network with and without droplab dropout, with
several seeds, and measure the epochs and the seconds each needs to reach a
common validation target, and the seconds per epoch.

The target is set from the runs themselves: ``slack`` above the worse of the
two rules' mean best validation error, so both rules can reach it and the
question is only how fast. A run that never reaches it is counted at the last
epoch (a lower bound) and reported.

- Paper: Srivastava et al., JMLR 15, 2014, Sec. 10 ("dropout ... increases
  training time ... typically 2-3 times longer").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import gap_clause, paired_difference, train_test_gap
from droplab.lab.curves import (
    load_cached,
    train_with_curves,
    warm_up_kernels,
)
from droplab.lab.registry import row_adder
from droplab.lab.stats import geometric_ci, mean_ci
from droplab.lab.training import build_mlp
from droplab.rng import derive_seed

NAME = "convergence"
QUESTION = (
    "Does a network trained with dropout need about twice as many iterations to reach "
    "the same validation error, and is each of its epochs cheaper?"
)
METHOD = (
    "The same MLP (same initial weights and batch order per seed) trained with Adam with "
    "and without droplab dropout; validation error after every epoch. The target is "
    "'slack' above the worse rule's mean best validation error. Per seed: the first epoch "
    "at or below the target, the training seconds up to it, and the mean seconds per "
    "epoch (training steps only, one thread, kernels warmed up). Ratios dropout / none "
    "are geometric means over seeds with 95 % t intervals on the log scale; differences "
    "are paired."
)


@dataclass(frozen=True)
class Config:
    """Settings of the convergence experiment (``Config()`` is the default preset)."""

    data: str = "mnist1d"  # built-in data set (quick: digits)
    hidden: tuple[int, ...] = (256, 256)  # hidden widths
    p: float = 0.5  # drop probability with dropout
    seeds: int = 3  # paired seeds
    epochs: int = 25  # training epochs (the horizon)
    slack: float = 0.01  # target = worse rule's mean best validation error + slack
    batch_size: int = 128  # mini-batch size
    lr: float = 3e-3  # Adam learning rate
    seed: int = 0  # root seed (also the data split)

    @classmethod
    def quick(cls) -> Config:
        """One layer, two seeds, a short horizon: seconds."""
        return cls(data="digits", hidden=(128,), seeds=2, epochs=8, slack=0.02)

    @classmethod
    def full(cls) -> Config:
        """Wider layers, ten seeds, a long horizon."""
        return cls(hidden=(1024, 1024), seeds=10, epochs=60)


RULES = ("dropout", "none")


def _task(task: tuple[Config, int, str]) -> dict[str, Any]:
    config, index, rule = task
    with one_thread():
        warm_up_kernels()
        data = load_cached(config.data, config.seed, NAME)
        model = build_mlp(
            data.n_features, list(config.hidden), data.n_classes,
            p=config.p if rule == "dropout" else 0.0, seed=derive_seed(config.seed, index),
        )  # fmt: skip
        curves = train_with_curves(
            model, data, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, seed=derive_seed(config.seed, index, 1),
        )  # fmt: skip
    return {
        "val_error": curves["val_error"],
        "train_error": curves["train_error"][-1],
        "epoch_seconds": curves["epoch_seconds"],
    }


def reach(
    val_error: list[float], seconds: list[float], target: float
) -> dict[str, Any]:
    """First epoch (1-based) with validation error <= target, and seconds up to it.

    >>> reach([0.5, 0.2, 0.1], [1.0, 1.0, 1.0], 0.2)
    {'epochs': 2, 'seconds': 2.0, 'reached': True}
    >>> reach([0.5, 0.4], [1.0, 1.0], 0.2)
    {'epochs': 2, 'seconds': 2.0, 'reached': False}
    """
    hits = [i for i, v in enumerate(val_error) if v <= target]
    last = hits[0] if hits else len(val_error) - 1
    return {
        "epochs": last + 1,
        "seconds": float(sum(seconds[: last + 1])),
        "reached": bool(hits),
    }


def _log_ratio(a: list[float], b: list[float]) -> dict[str, Any]:
    """Geometric-mean ratio a/b over pairs, its 95 % t interval on the log scale
    and the p-value of the log differences (see :func:`paired_difference`)."""
    logs = paired_difference(np.log(np.asarray(a, float)), np.log(np.asarray(b, float)))
    return {
        "value": math.exp(logs["mean"]),
        "low": math.exp(logs["low"]),
        "high": math.exp(logs["high"]),
        "p_value": logs["p_value"],
    }


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Train both rules for every seed (interleaved, in parallel), then measure."""
    tasks = [(config, i, rule) for i in range(config.seeds) for rule in RULES]
    flat = parallel_map(_task, tasks, jobs=jobs)
    runs = {rule: flat[j :: len(RULES)] for j, rule in enumerate(RULES)}
    best = {
        rule: float(np.mean([min(r["val_error"]) for r in runs[rule]]))
        for rule in RULES
    }
    target = max(best.values()) + config.slack
    out: dict[str, Any] = {}
    for rule in RULES:
        hit = [reach(r["val_error"], r["epoch_seconds"], target) for r in runs[rule]]
        per_epoch = [float(np.mean(r["epoch_seconds"])) for r in runs[rule]]
        out[rule] = {
            "epochs": [h["epochs"] for h in hit],
            "seconds": [h["seconds"] for h in hit],
            "reached": sum(h["reached"] for h in hit),
            "epoch_seconds": per_epoch,
            "best_val_error": best[rule],
            "gap": train_test_gap(
                [r["train_error"] for r in runs[rule]],
                [r["val_error"][-1] for r in runs[rule]],
            ),
            "val_curve": np.mean([r["val_error"] for r in runs[rule]], axis=0).tolist(),
        }
    d, n = out["dropout"], out["none"]
    return {
        "data": config.data,
        "hidden": list(config.hidden),
        "p": config.p,
        "seeds": config.seeds,
        "horizon": config.epochs,
        "target": target,
        "rules": out,
        "summary": {
            rule: {
                key: list(mean_ci(out[rule][key]))
                for key in ("epochs", "seconds", "epoch_seconds")
            }
            for rule in RULES
        },
        "epochs_ratio": _log_ratio(d["epochs"], n["epochs"]),
        "seconds_ratio": _log_ratio(d["seconds"], n["seconds"]),
        "epoch_seconds_ratio": _log_ratio(d["epoch_seconds"], n["epoch_seconds"]),
    }


COLORS = {"dropout": "#d08c60", "none": "#1f5fa8"}


def figure(result: dict[str, Any]) -> Any:
    """Mean validation curves with the target; epochs to target per seed; seconds per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    curves, epochs_ax, time_ax = fig.subplots(1, 3)
    for rule in RULES:
        r = result["rules"][rule]
        xs = range(1, len(r["val_curve"]) + 1)
        curves.plot(
            xs, [100 * v for v in r["val_curve"]], color=COLORS[rule], label=rule
        )
    curves.axhline(100 * result["target"], color="k", ls=":", label="target")
    curves.set_yscale("log")
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation error (%), mean over seeds")
    curves.legend(fontsize=8)
    curves.set_title(f"hidden {result['hidden']}, p = {result['p']:g}", fontsize=10)
    for ax, key, label in (
        (epochs_ax, "epochs", "epochs to reach the target"),
        (time_ax, "epoch_seconds", "seconds per epoch"),
    ):
        for j, rule in enumerate(RULES):
            values = result["rules"][rule][key]
            ax.plot([j] * len(values), values, "o", color=COLORS[rule], alpha=0.5)
            m, lo, hi = geometric_ci(values)  # log-scale interval: stays positive
            yerr = (
                None if m is None or lo is None or hi is None else [[m - lo], [hi - m]]
            )
            ax.errorbar([j + 0.15], [m], yerr=yerr, fmt="s", color="k", capsize=4)
        ax.set_xticks(range(len(RULES)), list(RULES))
        ax.set_ylabel(label)
        ax.set_title(
            f"{result['seeds']} seeds, geometric mean and 95 % interval", fontsize=10
        )
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Target, epochs and seconds per rule, and the ratios."""
    rows: list[dict[str, Any]] = []

    add = row_adder(rows)

    add("validation target (error)", result["target"])
    for rule in RULES:
        r = result["rules"][rule]
        # Geometric means with intervals on the log scale: they stay positive.
        add(f"{rule}: epochs to target (geometric mean)", *geometric_ci(r["epochs"]))
        add(f"{rule}: seconds to target (geometric mean)",
            *geometric_ci(r["seconds"]), unit="s")  # fmt: skip
        add(f"{rule}: seconds per epoch (geometric mean)",
            *geometric_ci(r["epoch_seconds"]), unit="s")  # fmt: skip
        add(f"{rule}: runs that reached the target", r["reached"])
    for key, label in (
        ("epochs_ratio", "epochs ratio dropout / none (geometric mean)"),
        ("seconds_ratio", "seconds-to-target ratio dropout / none"),
        ("epoch_seconds_ratio", "seconds-per-epoch ratio dropout / none"),
    ):
        r = result[key]
        add(label, r["value"], r["low"], r["high"])
    return rows


def _ratio_clause(what: str, ratio: dict[str, Any]) -> str:
    """``what`` (dropout / none) with its interval and whether it differs from 1.

    >>> r = {"value": 2.0, "low": 1.5, "high": 2.5, "p_value": 0.01}
    >>> _ratio_clause("the epoch ratio", r)
    'the epoch ratio is 2.00x [1.50, 2.50], detectably above 1'
    >>> _ratio_clause("the epoch ratio", {**r, "p_value": 0.5})
    'the epoch ratio is 2.00x [1.50, 2.50], not detectably different from 1'
    """
    return f"{what} is {ratio['value']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}], {_side(ratio)}"


def _side(ratio: dict[str, Any]) -> str:
    if ratio["p_value"] < 0.05 and ratio["low"] > 1:
        return "detectably above 1"
    if ratio["p_value"] < 0.05 and ratio["high"] < 1:
        return "detectably below 1"
    return "not detectably different from 1"


def answer(result: dict[str, Any]) -> str:
    """Epochs and time to the target, and time per epoch, each with its interval."""
    unreached = {r: result["seeds"] - result["rules"][r]["reached"] for r in RULES}
    note = ""
    if any(unreached.values()):
        note = (
            " Runs that never reached the target within "
            f"{result['horizon']} epochs (counted at the horizon, so the ratio is a bound): "
            + ", ".join(f"{r} {unreached[r]}" for r in RULES)
            + "."
        )
    per_epoch = result["epoch_seconds_ratio"]
    cheaper = {
        "detectably above 1": "so the claim that an epoch is cheaper with dropout does not hold here",
        "detectably below 1": "so an epoch is indeed cheaper with dropout here",
    }.get(_side(per_epoch), "so no difference in the cost of an epoch is detectable")
    return (
        f"To reach {100 * result['target']:.2f} % validation error, the epoch ratio "
        f"(dropout / none, geometric mean over {result['seeds']} seeds) "
        + _ratio_clause("", result["epochs_ratio"]).strip()
        + ", and "
        + _ratio_clause("the wall-clock ratio", result["seconds_ratio"])
        + ". Per epoch, "
        + _ratio_clause("the time ratio", per_epoch)
        + f", {cheaper} (every unit is still computed, and the mask is extra work)."
        + note
        + gap_clause(
            result["rules"]["none"].get("gap"),
            who=f"without dropout, after {result['horizon']} epochs on {result['data']}, "
            "the network",
            held_out="validation",
        )
    )
