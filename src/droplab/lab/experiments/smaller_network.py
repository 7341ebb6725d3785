"""If dropout helps, why not train a smaller network in the first place?

The question of the Q&A on why not train a smaller network in the first place: dropout with rate p leaves n(1-p) of a layer's n units at
work on each step, so why not train a network of n(1-p) units without dropout?
We train the wide network (n units per hidden layer) with dropout and networks
without dropout whose widths run from n(1-p) to n, with several seeds, and
compare their test error (each at the epoch its validation error picks: early
stopping, the fair way to stop a network without dropout before it overfits)
as a function of width and of training cost (measured seconds).

- Paper: Srivastava et al., JMLR 15, 2014, Sec. 1-2 (dropout as training an
  exponential number of thinned networks with shared weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import (
    detectable,
    gap_clause,
    holm,
    paired_difference,
    train_test_gap,
    verdict,
)
from droplab.lab.curves import (
    load_cached,
    train_with_curves,
    warm_up_kernels,
)
from droplab.lab.ranges import in_range
from droplab.lab.registry import row_adder
from droplab.lab.stats import mean_ci
from droplab.lab.training import build_mlp
from droplab.rng import derive_seed

NAME = "smaller-network"
QUESTION = (
    "If dropping units helps, why not simply train a smaller network without dropout? "
    "Is a wide network with dropout better than narrower networks without it?"
)
METHOD = (
    "Two hidden layers of n units with droplab dropout (rate p) after each, against the "
    "same architecture without dropout at widths from n(1-p) to n, trained with Adam for "
    "the same number of epochs and several seeds. Each network's test error is read at "
    "the epoch of its lowest validation error (early stopping). We compare with 95 % "
    "intervals: the dropout network against every no-dropout width (paired by seed, which "
    "shares the batch order; Holm-corrected) and against the no-dropout width that "
    "validation picks. Training cost is the measured CPU seconds of the training steps."
)


@dataclass(frozen=True)
class Config:
    """Settings of the smaller-network experiment (``Config()`` is the default preset)."""

    data: str = "mnist1d"  # built-in data set (quick: digits)
    width: int = 256  # n, units per hidden layer of the dropout network
    p: float = 0.5  # drop probability of the wide network
    steps: int = 5  # no-dropout widths from n(1-p) to n (inclusive), evenly spaced
    layers: int = 2  # hidden layers
    seeds: int = 3  # training seeds per network
    epochs: int = 40  # training epochs (dropout needs them on MNIST-1D)
    batch_size: int = 128  # mini-batch size
    lr: float = 3e-3  # Adam learning rate
    seed: int = 0  # root seed (also the data split)

    @classmethod
    def quick(cls) -> Config:
        """Three widths, one layer, two seeds: seconds."""
        return cls(data="digits", width=128, steps=3, layers=1, seeds=2, epochs=6)

    @classmethod
    def full(cls) -> Config:
        """Wider layers, nine widths, ten seeds, longer training."""
        return cls(width=1024, steps=9, seeds=10, epochs=40)


def plain_widths(config: Config) -> list[int]:
    """Widths of the no-dropout networks, from n(1-p) to n.

    >>> plain_widths(Config(width=256, p=0.5, steps=5))
    [128, 160, 192, 224, 256]
    """
    low = max(1, round(config.width * (1 - config.p)))
    return sorted(
        {round(float(w)) for w in np.linspace(low, config.width, config.steps)}
    )


def _task(task: tuple[Config, int, float, int]) -> dict[str, Any]:
    config, width, p, index = task
    with one_thread():
        warm_up_kernels()
        data = load_cached(config.data, config.seed, NAME)
        model = build_mlp(
            data.n_features, [width] * config.layers, data.n_classes, p=p,
            seed=derive_seed(config.seed, width, index, int(p > 0)),
        )  # fmt: skip
        curves = train_with_curves(
            model, data, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, seed=derive_seed(config.seed, index), track_test=True,
        )  # fmt: skip
    best = int(np.argmin(curves["val_error"]))
    return {
        "test_error": curves["test_error_curve"][best],
        "train_error": curves["train_error"][best],
        "best_epoch": best + 1,
        "seconds": float(sum(curves["epoch_seconds"])),
        "parameters": sum(int(t.numel()) for t in model.parameters()),
    }


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Train the dropout network and every no-dropout width, several seeds each."""
    widths = plain_widths(config)
    nets = [(config.width, config.p)] + [(w, 0.0) for w in widths]
    # Seed-major order: every network is timed at about the same moments, so a
    # busy spell on the machine does not land on one network only.
    tasks = [(config, w, p, i) for i in range(config.seeds) for w, p in nets]
    flat = parallel_map(_task, tasks, jobs=jobs)
    runs = [flat[j :: len(nets)] for j in range(len(nets))]

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "test_error": list(mean_ci([r["test_error"] for r in rs])),
            "seconds": list(mean_ci([r["seconds"] for r in rs])),
            "best_epoch": list(mean_ci([r["best_epoch"] for r in rs])),
            "parameters": rs[0]["parameters"],
            "per_seed": [r["test_error"] for r in rs],
            "gap": train_test_gap(
                [r["train_error"] for r in rs], [r["test_error"] for r in rs]
            ),
        }

    dropout = summary(runs[0])
    plain = [summary(rs) for rs in runs[1:]]
    diffs = [paired_difference(dropout["per_seed"], s["per_seed"]) for s in plain]
    adjusted = holm([d["p_value"] for d in diffs])
    for d, a in zip(diffs, adjusted, strict=True):
        d["p_holm"] = a
    return {
        "data": config.data,
        "width": config.width,
        "p": config.p,
        "layers": config.layers,
        "seeds": config.seeds,
        "epochs": config.epochs,
        "widths": widths,
        "dropout": dropout,
        "plain": plain,
        "dropout_minus_plain": diffs,
    }


def figure(result: dict[str, Any]) -> Any:
    """Test error vs width (left) and vs training seconds (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    widths = result["widths"]
    plain, drop = result["plain"], result["dropout"]
    label_plain = "no dropout"
    label_drop = f"n = {result['width']}, dropout p = {result['p']:g}"
    for ax, xs, x_drop in (
        (left, widths, result["width"]),
        (right, [s["seconds"][0] for s in plain], drop["seconds"][0]),
    ):
        plain = [
            dict(s, test_error=in_range(s["test_error"], "test error")) for s in plain
        ]
        mean = [100 * s["test_error"][0] for s in plain]
        ax.plot(xs, mean, "o-", color="#1f5fa8", ms=4, label=label_plain)
        if all(s["test_error"][1] is not None for s in plain):
            ax.errorbar(
                xs, mean,
                yerr=[[m - 100 * s["test_error"][1] for m, s in zip(mean, plain, strict=True)],
                      [100 * s["test_error"][2] - m for m, s in zip(mean, plain, strict=True)]],
                fmt="none", color="#1f5fa8", capsize=3,
            )  # fmt: skip
        d = in_range(drop["test_error"], "test error")
        yerr = None if d[1] is None else [[100 * (d[0] - d[1])], [100 * (d[2] - d[0])]]
        ax.errorbar([x_drop], [100 * d[0]], yerr=yerr, fmt="s", color="#d08c60",
                    capsize=3, ms=7, label=label_drop)  # fmt: skip
        ax.set_ylabel("test error at the validation-picked epoch (%)")
        ax.legend(fontsize=8)
    left.set_xlabel(f"units per hidden layer ({result['layers']} layers)")
    left.set_title(
        f"widths n(1-p) .. n, {result['seeds']} seeds (95 % intervals)", fontsize=10
    )
    right.set_xlabel("training cost (CPU seconds, mean over seeds)")
    right.set_title(f"{result['epochs']} epochs each", fontsize=10)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Test error, cost and best epoch per network; paired differences."""
    rows: list[dict[str, Any]] = []

    add = row_adder(rows)

    drop = result["dropout"]
    name = f"width {result['width']} with dropout p = {result['p']:g}"
    add(f"{name}: test error", *drop["test_error"])
    add(f"{name}: training cost", *drop["seconds"], unit="s")
    add(f"{name}: epoch picked by validation", *drop["best_epoch"])
    for w, s, d in zip(
        result["widths"], result["plain"], result["dropout_minus_plain"], strict=True
    ):
        add(f"width {w} without dropout: test error", *s["test_error"])
        add(f"width {w} without dropout: training cost", *s["seconds"], unit="s")
        add(f"width {w} without dropout: epoch picked by validation", *s["best_epoch"])
        add(f"dropout minus width {w} (paired; Holm p = {d['p_holm']:.3g})",
            d["mean"], d["low"], d["high"])  # fmt: skip
    return rows


def answer(result: dict[str, Any]) -> str:
    """How the dropout network compares with the best and with every smaller network."""
    plain, drop = result["plain"], result["dropout"]
    diffs = result["dropout_minus_plain"]
    best = int(np.argmin([s["test_error"][0] for s in plain]))
    name = f"the {result['width']}-unit network with dropout (p = {result['p']:g})"
    lead = (
        "Against the best network without dropout: "
        + verdict(
            name,
            f"width {result['widths'][best]} without dropout",
            diffs[best],
            quantity="test error",
            higher_is_better=False,
            adjusted_p=diffs[best]["p_holm"],
        )
        + "."
    )
    better = [w for w, d in zip(result["widths"], diffs, strict=True)
              if detectable(d, d["p_holm"]) and d["mean"] < 0]  # fmt: skip
    worse = [w for w, d in zip(result["widths"], diffs, strict=True)
             if detectable(d, d["p_holm"]) and d["mean"] > 0]  # fmt: skip
    if better or worse:
        parts = []
        if better:
            parts.append(
                f"detectably better than no dropout at widths {', '.join(map(str, better))}"
            )
        if worse:
            parts.append(
                f"detectably worse than no dropout at widths {', '.join(map(str, worse))}"
            )
        scan = (
            f"Over all widths {result['widths'][0]}-{result['widths'][-1]} (Holm-corrected), dropout is "
            + " and ".join(parts)
            + "."
        )
    else:
        scan = (
            f"No width from {result['widths'][0]} to {result['widths'][-1]} without dropout "
            "differs detectably from it (Holm-corrected)."
        )
    cost = drop["seconds"][0] / plain[best]["seconds"][0]
    return (
        f"{lead} {scan} Dropout's training cost was {cost:.1f}x that of the best "
        f"no-dropout network ({drop['seconds'][0]:.2f} s vs {plain[best]['seconds'][0]:.2f} s "
        f"for {result['epochs']} epochs)."
        + gap_clause(
            plain[-1].get("gap"),
            who=f"without dropout, the {result['widths'][-1]}-unit network on "
            f"{result['data']}",
        )
    )
