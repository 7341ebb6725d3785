"""Does dropout help more or less as the training set grows? (Srivastava Fig. 10)

Srivastava et al. (2014, Sec. 7.4) trained the same network with and without
dropout on growing subsets of MNIST: with the smallest sets dropout gave no
improvement (the network overfits anyway, or dropout underfits), in the middle
it helped most, and its lead shrank as data became plentiful. We repeat that on
the built-in data: nested random subsets of the training split, the same number
of gradient steps for every size, test error at the epoch validation picks.

- Paper: Srivastava et al., JMLR 15, 2014, Sec. 7.4 and Fig. 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import (
    detectable,
    holm,
    holm_caveat,
    paired_difference,
    train_test_gap,
    verdict,
)
from droplab.lab.curves import load_cached, train_with_curves
from droplab.lab.ranges import in_range
from droplab.lab.stats import mean_ci
from droplab.lab.training import build_mlp
from droplab.rng import derive_seed

NAME = "data-size"
QUESTION = (
    "How does dropout's benefit change with the size of the training set: does it help "
    "with very little data, and does its lead vanish when data is plentiful?"
)
METHOD = (
    "Nested random subsets of the training split (a new subset order per seed), the same "
    "MLP trained with Adam with and without droplab dropout for the same number of "
    "gradient steps at every size; test error read at the epoch of lowest validation "
    "error. Differences dropout - none are paired by seed (same subset, initial weights "
    "and batch order) with 95 % t intervals, Holm-corrected over the sizes."
)


@dataclass(frozen=True)
class Config:
    """Settings of the data-size experiment (``Config()`` is the default preset)."""

    data: str = "mnist1d"  # built-in data set (quick: digits)
    sizes: tuple[int, ...] = (100, 300, 1000, 2400)  # training-set sizes (capped)
    hidden: tuple[int, ...] = (256, 256)  # hidden widths
    p: float = 0.5  # drop probability with dropout
    seeds: int = 3  # paired seeds (each with its own subsets)
    steps: int = 500  # gradient steps per run, whatever the size
    batch_size: int = 64  # mini-batch size (capped at the size)
    lr: float = 3e-3  # Adam learning rate
    seed: int = 0  # root seed (also the data split)

    @classmethod
    def quick(cls) -> Config:
        """Three sizes, one layer, two seeds: seconds."""
        return cls(
            data="digits", sizes=(50, 200, 1079), hidden=(128,), seeds=2, steps=60
        )

    @classmethod
    def full(cls) -> Config:
        """Eight sizes, wider layers, ten seeds, more steps."""
        return cls(
            sizes=(50, 100, 200, 400, 800, 1600, 2400), hidden=(1024, 1024),
            seeds=10, steps=600,
        )  # fmt: skip


RULES = ("dropout", "none")


def _task(task: tuple[Config, int, int, str]) -> dict[str, Any]:
    config, size, index, rule = task
    with one_thread():
        data = load_cached(config.data, config.seed, NAME)
        order = np.random.default_rng(derive_seed(config.seed, 5, index)).permutation(
            len(data.x_train)
        )
        rows = np.sort(order[:size])  # nested: the first `size` of one permutation
        batch = min(config.batch_size, size)
        epochs = max(1, math.ceil(config.steps / math.ceil(size / batch)))
        model = build_mlp(
            data.n_features, list(config.hidden), data.n_classes,
            p=config.p if rule == "dropout" else 0.0, seed=derive_seed(config.seed, index),
        )  # fmt: skip
        curves = train_with_curves(
            model, data, epochs=epochs, batch_size=batch, lr=config.lr,
            seed=derive_seed(config.seed, index, size), train_rows=rows, track_test=True,
        )  # fmt: skip
    best = int(np.argmin(curves["val_error"]))
    return {
        "test_error": curves["test_error_curve"][best],
        "train_error": curves["train_error"][best],
        "epochs": epochs,
    }


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Train both rules at every size and seed (in parallel), then compare."""
    available = len(load_cached(config.data, config.seed, NAME).x_train)
    sizes = sorted({min(s, available) for s in config.sizes})
    tasks = [
        (config, size, i, rule)
        for size in sizes
        for i in range(config.seeds)
        for rule in RULES
    ]
    flat = parallel_map(_task, tasks, jobs=jobs)
    per_size = []
    for k, size in enumerate(sizes):
        block = flat[k * config.seeds * 2 : (k + 1) * config.seeds * 2]
        values = {
            rule: [r["test_error"] for r in block[j::2]] for j, rule in enumerate(RULES)
        }
        per_size.append(
            {
                "size": size,
                "epochs": block[0]["epochs"],
                **{rule: list(mean_ci(values[rule])) for rule in RULES},
                "difference": paired_difference(values["dropout"], values["none"]),
                "gap_none": train_test_gap(
                    [r["train_error"] for r in block[1::2]], values["none"]
                ),
            }
        )
    adjusted = holm([s["difference"]["p_value"] for s in per_size])
    for s, a in zip(per_size, adjusted, strict=True):
        s["difference"]["p_holm"] = a
    return {
        "data": config.data,
        "hidden": list(config.hidden),
        "p": config.p,
        "seeds": config.seeds,
        "steps": config.steps,
        "sizes": per_size,
    }


def figure(result: dict[str, Any]) -> Any:
    """Test error vs training-set size (left, Fig. 10) and the paired difference (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    sizes = [s["size"] for s in result["sizes"]]
    for rule, color in (("none", "#1f5fa8"), ("dropout", "#d08c60")):
        triples = [in_range(s[rule], "test error") for s in result["sizes"]]
        left.plot(sizes, [100 * t[0] for t in triples], "o-", color=color, ms=4,
                  label=rule if rule == "none" else f"dropout p = {result['p']:g}")  # fmt: skip
        if all(t[1] is not None for t in triples):
            left.fill_between(sizes, [100 * t[1] for t in triples],
                              [100 * t[2] for t in triples], color=color, alpha=0.15)  # fmt: skip
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("training-set size")
    left.set_ylabel("test error (%)")
    left.set_title(
        f"hidden {result['hidden']}, {result['seeds']} seeds (95 % bands)", fontsize=10
    )
    left.legend(fontsize=8)
    diffs = [s["difference"] for s in result["sizes"]]
    right.plot(sizes, [100 * d["mean"] for d in diffs], "o-", color="k", ms=4)
    right.fill_between(sizes, [100 * d["low"] for d in diffs], [100 * d["high"] for d in diffs],
                       color="k", alpha=0.12)  # fmt: skip
    right.axhline(0, color="k", lw=0.8)
    right.set_xscale("log")
    right.set_xlabel("training-set size")
    right.set_ylabel("test error, dropout - none (points)")
    right.set_title("below 0: dropout helps (paired 95 % band)", fontsize=10)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Test error per size and rule, and the paired differences."""
    rows: list[dict[str, Any]] = []
    for s in result["sizes"]:
        for rule in RULES:
            m, lo, hi = s[rule]
            rows.append({"quantity": f"{s['size']} examples: test error, {rule}",
                         "value": m, "low": lo, "high": hi, "unit": ""})  # fmt: skip
        d = s["difference"]
        rows.append({
            "quantity": f"{s['size']} examples: dropout - none (paired; Holm p = {d['p_holm']:.3g})",
            "value": d["mean"], "low": d["low"], "high": d["high"], "unit": "",
        })  # fmt: skip
    return rows


def answer(result: dict[str, Any]) -> str:
    """Where dropout helps, hurts, or makes no detectable difference, by size."""
    helps, hurts, neither = [], [], []
    for s in result["sizes"]:
        d = s["difference"]
        if not detectable(d, d["p_holm"]):
            neither.append(s["size"])
        elif d["mean"] < 0:
            helps.append(s["size"])
        else:
            hurts.append(s["size"])
    parts = []
    if helps:
        parts.append(
            f"dropout lowers test error detectably with {', '.join(map(str, helps))} examples"
        )
    if hurts:
        parts.append(
            f"it raises test error detectably with {', '.join(map(str, hurts))}"
        )
    if neither:
        by_size = {s["size"]: s["difference"] for s in result["sizes"]}
        listing = ", ".join(f"{n}{holm_caveat(by_size[n])}" for n in neither)
        parts.append(f"no difference is detectable after Holm with {listing}")
    biggest = max(result["sizes"], key=lambda s: -s["difference"]["mean"])
    lead = verdict(
        "dropout", "no dropout", biggest["difference"], quantity="test error",
        higher_is_better=False, adjusted_p=biggest["difference"]["p_holm"],
        family=f"over {len(result['sizes'])} sizes",
    )  # fmt: skip
    return (
        f"Across training-set sizes ({result['seeds']} paired seeds, Holm-corrected), "
        + "; ".join(parts)
        + f". Dropout's best showing is at {biggest['size']} examples: {lead}."
        + _gaps(result)
    )


def _gaps(result: dict[str, Any]) -> str:
    """How far test error lies above training error without dropout, by size."""
    sized = [s for s in result["sizes"] if s.get("gap_none") is not None]
    if not sized:
        return ""
    listing = ", ".join(
        f"{100 * s['gap_none'][0]:.1f} points at {s['size']}" for s in sized
    )
    return (
        f" Without dropout ({result.get('data', 'digits')}), test error exceeds "
        f"training error by {listing} examples."
    )
