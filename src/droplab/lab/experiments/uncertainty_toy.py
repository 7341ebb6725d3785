"""How does dropout give uncertainty? MC dropout on a 1-D toy and on shifted inputs.

Keeping dropout on at prediction time and averaging T passes approximates the
predictive distribution of a Bayesian network (Gal & Ghahramani 2016; the Q&A on
why not train a smaller network mentions the spike-and-slab reading). Two checks of what that uncertainty means:

1. Regression: a network trained on ``y = sin(3x) + x/2 + noise`` for x in
   [-2, 2] minus a gap (-0.5, 0.5) with no training data. The MC predictive mean
   and a 2-sigma band (model spread plus the noise level estimated on the
   training data), and the model's standard deviation inside the gap, on the
   data, and beyond the data, over several seeds.
2. Classification: the predictive entropy of an MC-dropout classifier on
   in-distribution test images against shifted ones (mirrored images, pure
   noise), and how well the entropy separates them (AUROC).

- Paper: Gal and Ghahramani, "Dropout as a Bayesian approximation", ICML 2016.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import paired_difference, verdict
from droplab.lab.curves import load_cached, train_regressor
from droplab.lab.data import make_gap_regression
from droplab.lab.ranges import in_range
from droplab.lab.registry import row_adder
from droplab.lab.stats import mean_ci, proportion_ci
from droplab.lab.training import build_mlp, train_classifier
from droplab.rng import derive_seed
from droplab.uncertainty.mc import mc_predict

NAME = "uncertainty"
QUESTION = (
    "How does dropout give a network uncertainty, and does that uncertainty grow where "
    "there was no training data and on inputs unlike the training set?"
)
METHOD = (
    "Monte-Carlo dropout (droplab.uncertainty.mc_predict: T stochastic passes, dropout on). "
    "Regression: an MLP with droplab dropout trained on the 1-D toy with a gap; predictive "
    "mean and mean +/- 2 sigma, sigma^2 = MC variance + noise variance (the mean squared "
    "residual of the MC mean on the training data); the MC standard deviation averaged "
    "over the gap, over the training range and beyond it, paired across seeds; coverage "
    "of the band on fresh points. Classification: an MLP with dropout on the built-in "
    "data; MC predictive entropy on test inputs, on mirrored inputs and on Gaussian "
    "noise; AUROC of entropy for telling shifted from in-distribution inputs."
)


@dataclass(frozen=True)
class Config:
    """Settings of the uncertainty experiment (``Config()`` is the default preset)."""

    data: str = "digits"  # built-in classification data set for the entropy part
    toy_samples: int = 200  # training points of the 1-D toy
    toy_hidden: tuple[int, ...] = (128, 128)  # widths of the regression network
    toy_p: float = 0.1  # drop probability of the regression network
    toy_epochs: int = 300  # training epochs of the regression network
    toy_weight_decay: float = 1e-4  # Adam weight decay (the prior's precision)
    hidden: tuple[int, ...] = (256, 256)  # widths of the classifier
    p: float = 0.5  # drop probability of the classifier
    epochs: int = 15  # training epochs of the classifier
    samples: int = 100  # T, Monte-Carlo passes
    seeds: int = 3  # training seeds
    seed: int = 0  # root seed

    @classmethod
    def quick(cls) -> Config:
        """Smaller networks, fewer epochs and passes, two seeds: seconds."""
        return cls(toy_hidden=(64, 64), toy_epochs=100, hidden=(128,), epochs=6,
                   samples=30, seeds=2)  # fmt: skip

    @classmethod
    def full(cls) -> Config:
        """Wider networks, longer training, more passes, ten seeds."""
        return cls(toy_hidden=(512, 512), toy_epochs=1000, hidden=(1024, 1024),
                   epochs=40, samples=500, seeds=10)  # fmt: skip


GRID = np.linspace(-3.0, 3.0, 121)
GAP = (-0.5, 0.5)
REGIONS = {
    "gap": lambda x: (x > GAP[0]) & (x < GAP[1]),
    "data": lambda x: ((x >= -2) & (x <= GAP[0])) | ((x >= GAP[1]) & (x <= 2)),
    "beyond": lambda x: (x < -2) | (x > 2),
}


def _toy(config: Config, index: int) -> dict[str, Any]:
    x, y = make_gap_regression(config.toy_samples, seed=config.seed)
    model = build_mlp(1, list(config.toy_hidden), 1, p=config.toy_p,
                      seed=derive_seed(config.seed, index))  # fmt: skip
    train_regressor(
        model, x, y, epochs=config.toy_epochs, seed=derive_seed(config.seed, index, 1),
        weight_decay=config.toy_weight_decay,
    )  # fmt: skip
    mc_seed = derive_seed(config.seed, index, 2)
    fit = mc_predict(model, torch.as_tensor(x), samples=config.samples, seed=mc_seed)
    noise_var = float(
        torch.mean((fit.mean - torch.as_tensor(y, dtype=torch.float64)) ** 2)
    )
    grid = mc_predict(model, torch.as_tensor(GRID, dtype=torch.float32).reshape(-1, 1),
                      samples=config.samples, seed=mc_seed)  # fmt: skip
    sd = grid.variance.sqrt().numpy().ravel()
    # Coverage on fresh points from the same distribution (another seed).
    x_new, y_new = make_gap_regression(500, seed=config.seed + 1)
    new = mc_predict(
        model, torch.as_tensor(x_new), samples=config.samples, seed=mc_seed
    )
    band = 2 * np.sqrt(new.variance.numpy() + noise_var)
    covered = int(np.sum(np.abs(new.mean.numpy() - y_new) <= band))
    return {
        "mean": grid.mean.numpy().ravel().tolist(),
        "sd": sd.tolist(),
        "noise_sd": float(np.sqrt(noise_var)),
        "region_sd": {
            name: float(sd[rule(GRID)].mean()) for name, rule in REGIONS.items()
        },
        "covered": covered,
        "fresh": len(x_new),
    }


def _shifted(x: np.ndarray) -> np.ndarray:
    """Mirror each input left-right (8x8 images), or reverse it (other lengths)."""
    side = int(np.sqrt(x.shape[1]))
    if side * side == x.shape[1]:
        return x.reshape(-1, side, side)[:, :, ::-1].reshape(len(x), -1).copy()
    return x[:, ::-1].copy()


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney).

    >>> auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4]))
    1.0
    """
    u = stats.mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u / (len(positives) * len(negatives)))


def _classifier(config: Config, index: int) -> dict[str, Any]:
    data = load_cached(config.data, config.seed, NAME)
    model = build_mlp(data.n_features, list(config.hidden), data.n_classes, p=config.p,
                      seed=derive_seed(config.seed, index, 3))  # fmt: skip
    train_classifier(model, data, epochs=config.epochs, batch_size=128, lr=3e-3,
                     seed=derive_seed(config.seed, index, 4))  # fmt: skip
    rng = np.random.default_rng(derive_seed(config.seed, index, 5))
    inputs = {
        "test": data.x_test,
        "mirrored": _shifted(data.x_test),
        "noise": rng.standard_normal(data.x_test.shape).astype(np.float32),
    }
    entropy = {}
    for name, x in inputs.items():
        pred = mc_predict(model, torch.as_tensor(x), samples=config.samples,
                          seed=derive_seed(config.seed, index, 6), task="classification")  # fmt: skip
        if pred.entropy is None:  # mc_predict always sets it for classification
            raise RuntimeError("mc_predict returned no entropy for a classifier")
        entropy[name] = pred.entropy.numpy()
    return {
        "entropy": {k: float(v.mean()) for k, v in entropy.items()},
        "auroc": {k: auroc(entropy["test"], entropy[k]) for k in ("mirrored", "noise")},
    }


def _task(task: tuple[Config, int]) -> dict[str, Any]:
    config, index = task
    with one_thread():
        return {"toy": _toy(config, index), "classifier": _classifier(config, index)}


SHIFTS = ("mirrored", "noise")


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """One regression and one classification network per seed (in parallel)."""
    runs = parallel_map(_task, [(config, i) for i in range(config.seeds)], jobs=jobs)
    toys = [r["toy"] for r in runs]
    clfs = [r["classifier"] for r in runs]
    x, y = make_gap_regression(config.toy_samples, seed=config.seed)
    region = {k: [t["region_sd"][k] for t in toys] for k in REGIONS}
    covered = sum(t["covered"] for t in toys)
    fresh = sum(t["fresh"] for t in toys)
    entropy = {k: [c["entropy"][k] for c in clfs] for k in ("test", *SHIFTS)}
    return {
        "toy_p": config.toy_p,
        "p": config.p,
        "data": config.data,
        "samples": config.samples,
        "seeds": config.seeds,
        "grid": GRID.tolist(),
        "train_x": x.ravel().tolist(),
        "train_y": y.ravel().tolist(),
        "seed0": {k: toys[0][k] for k in ("mean", "sd", "noise_sd")},
        "region_sd": {k: list(mean_ci(v)) for k, v in region.items()},
        "gap_minus_data": paired_difference(region["gap"], region["data"]),
        "beyond_minus_data": paired_difference(region["beyond"], region["data"]),
        "coverage": list(proportion_ci(covered, fresh)),
        "entropy": {k: list(mean_ci(v)) for k, v in entropy.items()},
        "entropy_shift": {
            k: paired_difference(entropy[k], entropy["test"]) for k in SHIFTS
        },
        "auroc": {k: list(mean_ci([c["auroc"][k] for c in clfs])) for k in SHIFTS},
    }


def figure(result: dict[str, Any]) -> Any:
    """Left: MC mean and 2-sigma band on the toy (seed 0). Right: predictive entropy."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    grid = np.asarray(result["grid"])
    s = result["seed0"]
    mean, sd = np.asarray(s["mean"]), np.asarray(s["sd"])
    total = np.sqrt(sd**2 + s["noise_sd"] ** 2)
    left.axvspan(*GAP, color="k", alpha=0.06, label="no training data")
    left.fill_between(grid, mean - 2 * total, mean + 2 * total, color="#1f5fa8",
                      alpha=0.2, label="mean +/- 2 sigma (model + noise)")  # fmt: skip
    left.fill_between(grid, mean - 2 * sd, mean + 2 * sd, color="#1f5fa8", alpha=0.35,
                      label="mean +/- 2 sigma (model only)")  # fmt: skip
    left.plot(grid, mean, color="#1f5fa8", label="MC predictive mean")
    left.plot(grid, np.sin(3 * grid) + 0.5 * grid, "k--", lw=0.8, label="true function")
    left.plot(
        result["train_x"],
        result["train_y"],
        ".",
        color="#d08c60",
        ms=3,
        label="training data",
    )
    left.set_ylim(-4, 4)
    left.set_xlabel("x")
    left.set_ylabel("y")
    left.set_title(
        f"MC dropout, p = {result['toy_p']:g}, T = {result['samples']}", fontsize=10
    )
    left.legend(fontsize=7, loc="lower right")
    names = ["test", *SHIFTS]
    triples = [in_range(result["entropy"][k], "predictive entropy") for k in names]
    means = [t[0] for t in triples]
    yerr = None
    if all(t[1] is not None for t in triples):
        yerr = [[m - t[1] for m, t in zip(means, triples, strict=True)],
                [t[2] - m for m, t in zip(means, triples, strict=True)]]  # fmt: skip
    right.bar(
        names, means, yerr=yerr, capsize=4, color=["#4f9a6b", "#d08c60", "#a05fa8"]
    )
    right.axhline(np.log(10), color="k", ls=":", lw=1, label="maximum, log 10")
    right.set_ylabel("mean predictive entropy (nats)")
    right.set_title(
        f"{result['data']}: in-distribution vs shifted ({result['seeds']} seeds)",
        fontsize=10,
    )
    right.legend(fontsize=8)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Spread by region, coverage, entropies and AUROCs."""
    rows: list[dict[str, Any]] = []

    add = row_adder(rows)

    for k in REGIONS:
        add(f"toy: MC standard deviation, {k} region", *result["region_sd"][k])
    for key, label in (("gap_minus_data", "gap"), ("beyond_minus_data", "beyond")):
        d = result[key]
        add(
            f"toy: sd {label} minus sd on the data (paired)",
            d["mean"],
            d["low"],
            d["high"],
        )
    add("toy: coverage of the 2-sigma band on fresh points", *result["coverage"])
    for k in ("test", *SHIFTS):
        add(
            f"{result['data']}: predictive entropy, {k}",
            *result["entropy"][k],
            unit="nats",
        )
    for k in SHIFTS:
        d = result["entropy_shift"][k]
        add(
            f"{result['data']}: entropy {k} minus test (paired)",
            d["mean"],
            d["low"],
            d["high"],
            unit="nats",
        )
        add(f"{result['data']}: AUROC of entropy, {k} vs test", *result["auroc"][k])
    return rows


def answer(result: dict[str, Any]) -> str:
    """Whether the spread grows off the data, and entropy on shifted inputs."""
    gap = verdict(
        "the gap", "the training range", result["gap_minus_data"],
        quantity="MC standard deviation", higher_is_better=True, factor=1.0, unit="", digits=3,
    ).replace(" is better than ", " has a larger spread than ").replace(
        " of MC standard deviation", " in MC standard deviation"
    )  # fmt: skip
    beyond = verdict(
        "the region beyond the data", "the training range", result["beyond_minus_data"],
        quantity="MC standard deviation", higher_is_better=True, factor=1.0, unit="", digits=3,
    ).replace(" is better than ", " has a larger spread than ").replace(
        " of MC standard deviation", " in MC standard deviation"
    )  # fmt: skip
    cov, lo, hi = result["coverage"]
    shifts = [
        verdict(
            f"{k} inputs", "test inputs", result["entropy_shift"][k],
            quantity="predictive entropy", higher_is_better=True, factor=1.0, unit=" nats",
            digits=3,
        )
        .replace(" inputs is better than ", " inputs have a higher entropy than ")
        .replace(" inputs is ahead of ", " inputs are ahead of ")
        + f" (AUROC {result['auroc'][k][0]:.2f})"
        for k in SHIFTS
    ]  # fmt: skip
    return (
        "How: dropout is left on at prediction time and each input goes through the "
        "network T times, each pass dropping different units, so the T predictions "
        "differ. Their spread (standard deviation, or for classes the entropy of their "
        "average) is the uncertainty, and it should grow where the training data gave "
        "the network nothing to agree on. "
        f"On the 1-D toy ({result['seeds']} seeds): {gap}; {beyond}; the 2-sigma band "
        f"covers {100 * cov:.1f} % of fresh points [{100 * lo:.1f}, {100 * hi:.1f}] "
        f"(95 % expected). On {result['data']}: " + "; ".join(shifts) + "."
    )
