"""What does dropout do to the features a network learns? (Srivastava Figs. 7-8)

Srivastava et al. (2014, Sec. 7.1) trained autoencoders on MNIST with and
without dropout: without it the first-layer filters looked like noise (each
unit relying on others to fix its mistakes, co-adaptation); with it they were
strokes and blobs, and the hidden activations were sparser (fewer units
strongly active, lower mean activation). We repeat that on MNIST-1D signals
(default and full presets) and on the 8x8 digits (quick): an autoencoder
d -> n ReLU units -> dropout -> d, trained on reconstruction, several seeds;
the filters (first-layer weights) are shown as 8x8 images for digits and as
one row per filter for MNIST-1D's 40-sample signals.

Sparsity is measured on the test images in evaluation mode: the mean hidden
activation, the fraction of activations that are zero, and the fraction of
activations above ``active_threshold``. Weights and
activations of the two rules are on the same scale because droplab's default
``inverted`` rule is the identity at evaluation (Srivastava et al. trained with
the ``classic`` rule and scaled at test time, which gives the same network).

- Paper: Srivastava et al., JMLR 15, 2014, Sec. 7.1, Figs. 7 and 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import paired_difference, verdict
from droplab.lab.curves import load_cached, train_regressor
from droplab.lab.stats import mean_ci
from droplab.nn import Dropout
from droplab.rng import derive_seed

NAME = "features"
QUESTION = (
    "Does dropout change what the hidden units learn: are the features less "
    "co-adapted and the activations sparser?"
)
METHOD = (
    "An autoencoder (n ReLU units, droplab dropout on them, linear decoder) trained with "
    "Adam on mean squared reconstruction error of the standardised inputs, with and "
    "without dropout, several seeds (paired: same initial weights and batches). On the "
    "test images: mean activation, fraction of zero activations, fraction of activations "
    "above a threshold; paired differences with 95 % t intervals. The "
    "first-layer filters of seed 0 are drawn (8x8 images for digits, curves for MNIST-1D), "
    "and the histograms of Fig. 8."
)

RULES = ("none", "dropout")


@dataclass(frozen=True)
class Config:
    """Settings of the features experiment (``Config()`` is the default preset)."""

    data: str = "mnist1d"  # built-in data set (quick: digits, drawn as 8x8 images)
    units: int = 256  # hidden units of the autoencoder
    p: float = 0.5  # drop probability on the hidden units
    seeds: int = 3  # paired seeds
    epochs: int = 80  # training epochs
    batch_size: int = 64  # mini-batch size
    lr: float = 1e-3  # Adam learning rate
    active_threshold: float = (
        1.0  # a unit is "active" if its mean activation exceeds this
    )
    shown: int = 64  # filters drawn per rule
    seed: int = 0  # root seed (also the data split)

    @classmethod
    def quick(cls) -> Config:
        """Fewer units and epochs, two seeds: seconds."""
        return cls(data="digits", units=128, seeds=2, epochs=10, shown=32)

    @classmethod
    def full(cls) -> Config:
        """More units, ten seeds, long training."""
        return cls(units=512, seeds=10, epochs=150)


def autoencoder(n_in: int, units: int, p: float, seed: int) -> nn.Sequential:
    """``Linear(n_in, units) -> ReLU -> [Dropout(p)] -> Linear(units, n_in)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Linear(n_in, units), nn.ReLU()]
        if p > 0:
            layers.append(Dropout(p, seed=derive_seed(seed, 0)))
        layers.append(nn.Linear(units, n_in))
    return nn.Sequential(*layers)


def _task(task: tuple[Config, int, str]) -> dict[str, Any]:
    config, index, rule = task
    with one_thread():
        data = load_cached(config.data, config.seed, NAME)
        model = autoencoder(
            data.n_features, config.units, config.p if rule == "dropout" else 0.0,
            derive_seed(config.seed, index),
        )  # fmt: skip
        train_regressor(
            model, data.x_train, data.x_train, epochs=config.epochs,
            batch_size=config.batch_size, lr=config.lr, seed=derive_seed(config.seed, index, 1),
        )  # fmt: skip
        with torch.no_grad():
            x = torch.as_tensor(data.x_test)
            encoder, relu = cast(nn.Linear, model[0]), model[1]
            hidden = relu(encoder(x)).numpy()  # (N, units)
            error = float(torch.mean((model(x) - x) ** 2))
    unit_means = hidden.mean(axis=0)
    out = {
        "mean_activation": float(hidden.mean()),
        "zero_fraction": float(np.mean(hidden <= 0)),
        "large_fraction": float(np.mean(hidden > config.active_threshold)),
        "test_mse": error,
    }
    if index == 0:
        weights = encoder.weight.detach().numpy()[: config.shown]
        out["filters"] = np.round(weights, 4).tolist()
        out["unit_means"] = np.round(unit_means, 4).tolist()
        out["activation_hist"] = np.histogram(hidden, bins=HIST_BINS)[0].tolist()
    return out


HIST_BINS = np.linspace(0.0, 8.0, 41)
MEASURES = ("mean_activation", "zero_fraction", "large_fraction", "test_mse")
LABELS = {
    "mean_activation": "mean hidden activation",
    "zero_fraction": "fraction of activations that are zero",
    "large_fraction": "fraction of activations above the threshold",
    "test_mse": "test reconstruction error (MSE)",
}


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Train both autoencoders for every seed (in parallel), then measure."""
    tasks = [(config, i, rule) for i in range(config.seeds) for rule in RULES]
    flat = parallel_map(_task, tasks, jobs=jobs)
    runs = {rule: flat[j :: len(RULES)] for j, rule in enumerate(RULES)}
    return {
        "data": config.data,
        "units": config.units,
        "p": config.p,
        "seeds": config.seeds,
        "active_threshold": config.active_threshold,
        "hist_bins": HIST_BINS.tolist(),
        "summary": {
            rule: {m: list(mean_ci([r[m] for r in runs[rule]])) for m in MEASURES}
            for rule in RULES
        },
        "difference": {
            m: paired_difference(
                [r[m] for r in runs["dropout"]], [r[m] for r in runs["none"]]
            )
            for m in MEASURES
        },
        "seed0": {
            rule: {
                k: runs[rule][0][k]
                for k in ("filters", "unit_means", "activation_hist")
            }
            for rule in RULES
        },
    }


# Filters drawn as curves for 1-d signals: enough to see their shape.
FILTER_CURVES = 12


def _filters_image(filters: list[list[float]]) -> np.ndarray:
    """Tile filters (each 64 values, or any length) into one image, normalised each."""
    w = np.asarray(filters, dtype=np.float64)
    side = round(float(np.sqrt(w.shape[1])))
    if side * side != w.shape[1]:  # not square (e.g. MNIST-1D): one row per filter
        return w / (np.abs(w).max(axis=1, keepdims=True) + 1e-12)
    cols = int(np.ceil(np.sqrt(len(w))))
    rows = int(np.ceil(len(w) / cols))
    image = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for k, f in enumerate(w):
        r, c = divmod(k, cols)
        tile = f.reshape(side, side) / (np.abs(f).max() + 1e-12)
        image[
            r * (side + 1) : r * (side + 1) + side,
            c * (side + 1) : c * (side + 1) + side,
        ] = tile
    return image


def figure(result: dict[str, Any]) -> Any:
    """Filters without/with dropout (Fig. 7); mean-activation and activation histograms (Fig. 8)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, rule in zip(axes[0], RULES, strict=True):
        filters = np.asarray(result["seed0"][rule]["filters"], dtype=np.float64)
        title = (
            "without dropout" if rule == "none" else f"with dropout p = {result['p']:g}"
        )
        side = round(float(np.sqrt(filters.shape[1])))
        if side * side == filters.shape[1]:  # images (digits): tiles
            ax.imshow(_filters_image(filters.tolist()), cmap="gray", vmin=-1, vmax=1,
                      interpolation="nearest")  # fmt: skip
            ax.set_axis_off()
        else:  # 1-d signals (MNIST-1D): the first filters as curves, one above another
            shown = filters[:FILTER_CURVES]
            scaled = shown / (np.abs(shown).max(axis=1, keepdims=True) + 1e-12)
            for k, curve in enumerate(scaled):
                ax.plot(curve * 0.45 - k, color="#333333", linewidth=0.9)
            ax.set_yticks([])
            ax.set_xlabel("input position")
            title += f" (first {len(shown)})"
        ax.set_title(f"first-layer filters, {title}", fontsize=10)
    colors = {"none": "#1f5fa8", "dropout": "#d08c60"}
    bins = np.asarray(result["hist_bins"])
    for rule in RULES:
        s = result["seed0"][rule]
        axes[1][0].hist(
            s["unit_means"], bins=20, color=colors[rule], alpha=0.5, label=rule
        )
        counts = np.asarray(s["activation_hist"], dtype=np.float64)
        axes[1][1].stairs(
            counts / max(1.0, counts.sum()), bins, color=colors[rule], label=rule
        )
    axes[1][0].set_xlabel("mean activation of a hidden unit (test set)")
    axes[1][0].set_ylabel("units")
    axes[1][0].legend(fontsize=8)
    axes[1][1].set_yscale("log")
    axes[1][1].set_xlabel("activation (test set; zeros in the first bin)")
    axes[1][1].set_ylabel("fraction of activations")
    axes[1][1].legend(fontsize=8)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each sparsity measure per rule and the paired difference."""
    rows: list[dict[str, Any]] = []
    for m in MEASURES:
        for rule in RULES:
            v, lo, hi = result["summary"][rule][m]
            rows.append({"quantity": f"{LABELS[m]}, {rule}", "value": v, "low": lo,
                         "high": hi, "unit": ""})  # fmt: skip
        d = result["difference"][m]
        rows.append({"quantity": f"{LABELS[m]}, dropout - none (paired)", "value": d["mean"],
                     "low": d["low"], "high": d["high"], "unit": ""})  # fmt: skip
    return rows


def answer(result: dict[str, Any]) -> str:
    """Whether the activations are sparser with dropout, from the paired differences."""
    clauses = []
    for m, higher in (
        ("mean_activation", False),
        ("zero_fraction", True),
        ("large_fraction", False),
    ):
        clauses.append(
            verdict(
                "dropout",
                "no dropout",
                result["difference"][m],
                quantity=LABELS[m],
                higher_is_better=higher,
                factor=1.0,
                unit="",
                digits=3,
            )
            .replace(" is better than ", " is sparser than ")
            .replace(f" of {LABELS[m]}", f" in the {LABELS[m]}")
            .replace(f" in {LABELS[m]}", f" in the {LABELS[m]}")
        )
    mse = verdict(
        "dropout", "no dropout", result["difference"]["test_mse"],
        quantity=LABELS["test_mse"], higher_is_better=False, factor=1.0, unit="", digits=3,
    ).replace(f" of {LABELS['test_mse']}", f" in the {LABELS['test_mse']}")  # fmt: skip
    return (
        f"Autoencoders with {result['units']} hidden units, {result['seeds']} paired seeds: "
        + "; ".join(clauses)
        + f". Reconstruction: {mse}. The filters are drawn in the figure for inspection."
    )
