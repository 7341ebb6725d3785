"""Which dropout rate should I use? Curves over a grid of p (Srivastava Fig. 9).

The Q&A on why not train a smaller network asks how to pick the rate; the usual answer is "try several and compare
the training and validation curves". This experiment does exactly that, in the
two settings of Srivastava et al. (2014, Sec. 7.3, Fig. 9): with the number of
hidden units n fixed (so a higher p leaves fewer units at work), and with the
expected number of units kept, n(1-p), fixed (so a higher p uses a wider layer).
For each p and each seed the network is trained with droplab dropout; the best
p is the one with the lowest mean validation error, and its uncertainty is
given two ways: a bootstrap interval of the best p (resampling seeds), and the
set of rates whose validation error is not detectably worse (paired tests).

Note that Srivastava et al.'s ``p`` is the *keep* probability; ours (as in
PyTorch) is the *drop* probability.

- Paper: Srivastava et al., JMLR 15, 2014, Sec. 7.3 and Fig. 9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import detectable, gap_clause, holm, paired_difference, verdict
from droplab.lab.curves import load_cached, train_with_curves
from droplab.lab.ranges import in_range
from droplab.lab.registry import row_adder
from droplab.lab.stats import mean_ci
from droplab.lab.training import build_mlp
from droplab.rng import derive_seed

NAME = "rate"
QUESTION = (
    "Which dropout rate p should I use, and does the answer change if I keep the "
    "layer's width fixed or keep the number of units that survive dropout fixed?"
)
METHOD = (
    "An MLP with droplab dropout after every hidden layer, trained with Adam for a fixed "
    "number of epochs for each p of a grid and several seeds, in two settings (Srivastava "
    "et al. 2014, Fig. 9): (a) n hidden units per layer for every p; (b) n = round(m/(1-p)) "
    "so that m units are kept on average. Training and validation error are recorded after "
    "every epoch; the final validation error picks the best p (lowest mean). Its interval: "
    "the 2.5-97.5 % range of the best p over bootstrap resamples of the seeds, and the set "
    "of p whose paired validation error is not detectably worse (Holm-corrected). Test "
    "error at the best p is compared with p = 0 (paired)."
)

SCHEMES = ("fixed_n", "fixed_kept")


@dataclass(frozen=True)
class Config:
    """Settings of the rate experiment (``Config()`` is the default preset)."""

    data: str = "mnist1d"  # built-in data set (quick: digits)
    ps: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)  # drop probabilities
    width: int = 256  # (a) units per hidden layer, the same for every p
    kept: int = 128  # (b) units kept on average: width round(kept / (1 - p))
    layers: int = 2  # hidden layers, each followed by dropout
    seeds: int = 3  # training seeds per (setting, p)
    epochs: int = 30  # training epochs
    batch_size: int = 128  # mini-batch size
    lr: float = 3e-3  # Adam learning rate
    bootstrap: int = 2000  # bootstrap resamples for the best p's interval
    seed: int = 0  # root seed (also the data split)

    @classmethod
    def quick(cls) -> Config:
        """Four rates, one layer, two seeds: seconds."""
        return cls(
            data="digits",
            ps=(0.0, 0.25, 0.5, 0.75),
            width=128,
            kept=64,
            layers=1,
            seeds=2,
            epochs=6,
        )

    @classmethod
    def full(cls) -> Config:
        """p = 0, 0.1, ..., 0.9, five seeds, longer training."""
        return cls(
            ps=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), width=512, kept=128,
            seeds=5, epochs=40,
        )  # fmt: skip


def widths_for(config: Config, scheme: str) -> list[int]:
    """Hidden width for each p of the grid under ``scheme``.

    >>> widths_for(Config(ps=(0.0, 0.5, 0.75), kept=100), "fixed_kept")
    [100, 200, 400]
    """
    if scheme == "fixed_n":
        return [config.width for _ in config.ps]
    return [max(1, round(config.kept / (1.0 - p))) for p in config.ps]


def _task(task: tuple[Config, int, float, int]) -> dict[str, Any]:
    """Train one (width, p, seed); the same (width, p) is shared by both settings."""
    config, width, p, index = task
    with one_thread():
        data = load_cached(config.data, config.seed, NAME)
        model = build_mlp(
            data.n_features, [width] * config.layers, data.n_classes, p=p,
            seed=derive_seed(config.seed, width, index),
        )  # fmt: skip
        curves = train_with_curves(
            model, data, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, seed=derive_seed(config.seed, width, index, 1),
        )  # fmt: skip
    curves.pop("epoch_seconds")
    return curves


def best_by_validation(
    val_error: np.ndarray, ps: list[float], *, resamples: int, seed: int
) -> dict[str, Any]:
    """The p with the lowest mean validation error, with two kinds of interval.

    Args:
        val_error: (len(ps), seeds) final validation errors, paired by seed.
        ps: the grid.
        resamples, seed: the bootstrap over seeds.

    Returns:
        ``{"p", "val_error" (mean, low, high), "bootstrap" [low, high] of the best p,
        "not_worse": the p whose paired difference to the best is not detectable}``.
    """
    means = val_error.mean(axis=1)
    best = int(np.argmin(means))
    rng = np.random.default_rng(seed)
    seeds = val_error.shape[1]
    picks = rng.integers(0, seeds, size=(resamples, seeds))
    boot_best = np.argmin(val_error[:, picks].mean(axis=2), axis=0)  # (resamples,)
    boot_p = np.asarray(ps)[boot_best]
    others = [i for i in range(len(ps)) if i != best]
    diffs = [paired_difference(val_error[i], val_error[best]) for i in others]
    adjusted = holm([d["p_value"] for d in diffs]) if diffs else []
    not_worse = [ps[best]] + [
        ps[i]
        for i, d, a in zip(others, diffs, adjusted, strict=True)
        if not detectable(d, a)
    ]
    return {
        "p": ps[best],
        "index": best,
        "val_error": list(mean_ci(val_error[best])),
        "bootstrap": [
            float(np.quantile(boot_p, 0.025)),
            float(np.quantile(boot_p, 0.975)),
        ],
        "not_worse": sorted(not_worse),
    }


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Train every (width, p, seed) once (in parallel), then summarise both settings."""
    ps = list(config.ps)
    keys = sorted(
        {
            (w, p)
            for s in SCHEMES
            for w, p in zip(widths_for(config, s), ps, strict=True)
        }
    )
    tasks = [(config, w, p, i) for w, p in keys for i in range(config.seeds)]
    flat = parallel_map(_task, tasks, jobs=jobs)
    runs = {
        key: flat[j * config.seeds : (j + 1) * config.seeds]
        for j, key in enumerate(keys)
    }
    schemes: dict[str, Any] = {}
    for s_index, scheme in enumerate(SCHEMES):
        widths = widths_for(config, scheme)
        per_p = [runs[(w, p)] for w, p in zip(widths, ps, strict=True)]
        final = {
            key: np.array([[r[key][-1] if isinstance(r[key], list) else r[key] for r in rs]
                           for rs in per_p])
            for key in ("train_error", "val_error", "test_error", "val_loss")
        }  # fmt: skip
        best = best_by_validation(
            final["val_error"], ps, resamples=config.bootstrap,
            seed=derive_seed(config.seed, 7, s_index),
        )  # fmt: skip
        vs_none = None
        if 0.0 in ps and best["p"] != 0.0:
            vs_none = paired_difference(
                final["test_error"][best["index"]], final["test_error"][ps.index(0.0)]
            )
        schemes[scheme] = {
            "widths": widths,
            **{
                key: [list(mean_ci(row)) for row in values]
                for key, values in final.items()
            },
            "per_seed_val_error": final["val_error"].tolist(),
            "curves": {
                key: [np.mean([r[key] for r in rs], axis=0).tolist() for rs in per_p]
                for key in ("train_error", "val_error")
            },
            "best": best,
            "best_vs_no_dropout_test": vs_none,
        }
    return {
        "data": config.data,
        "ps": ps,
        "layers": config.layers,
        "width": config.width,
        "kept": config.kept,
        "seeds": config.seeds,
        "epochs": config.epochs,
        "schemes": schemes,
    }


TITLES = {
    "fixed_n": "n = {width} units per layer",
    "fixed_kept": "n(1-p) = {kept} units kept on average",
}


def figure(result: dict[str, Any]) -> Any:
    """Top: final training/validation/test error vs p in both settings (Fig. 9).
    Bottom: the validation curves per epoch for each p."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    ps = result["ps"]
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    cmap = colormaps["viridis"]
    for col, scheme in enumerate(SCHEMES):
        s = result["schemes"][scheme]
        top, bottom = axes[0][col], axes[1][col]
        for key, color, label in (
            ("train_error", "#4f9a6b", "training"),
            ("val_error", "#1f5fa8", "validation"),
            ("test_error", "#d08c60", "test"),
        ):
            triples = [in_range(t, key.replace("_", " ")) for t in s[key]]
            top.plot(
                ps, [100 * t[0] for t in triples], "o-", ms=3, color=color, label=label
            )
            if all(t[1] is not None for t in triples):
                top.fill_between(
                    ps, [100 * t[1] for t in triples], [100 * t[2] for t in triples],
                    color=color, alpha=0.15,
                )  # fmt: skip
        best = s["best"]
        top.axvspan(
            *best["bootstrap"], color="k", alpha=0.07, label="best p, bootstrap 95 %"
        )
        top.axvline(best["p"], color="k", ls=":", lw=1)
        top.set_xlabel("drop probability p")
        top.set_ylabel("error (%)")
        top.set_title(TITLES[scheme].format(**result), fontsize=10)
        top.legend(fontsize=8)
        epochs = range(1, len(s["curves"]["val_error"][0]) + 1)
        for j, p in enumerate(ps):
            shade = cmap(j / max(1, len(ps) - 1))
            bottom.plot(epochs, [100 * v for v in s["curves"]["val_error"][j]],
                        color=shade, label=f"p = {p:g}")  # fmt: skip
            bottom.plot(epochs, [100 * v for v in s["curves"]["train_error"][j]],
                        color=shade, ls="--", lw=0.8)  # fmt: skip
        bottom.set_yscale("symlog", linthresh=1.0)
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("error (%), validation solid, training dashed")
        bottom.legend(fontsize=7, ncol=2)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Final errors per p and setting, and the best p with its intervals."""
    rows: list[dict[str, Any]] = []

    add = row_adder(rows)

    for scheme in SCHEMES:
        s = result["schemes"][scheme]
        label = TITLES[scheme].format(**result)
        for j, p in enumerate(result["ps"]):
            for key in ("train_error", "val_error", "test_error"):
                add(f"{label}, p = {p:g} (width {s['widths'][j]}): {key.replace('_', ' ')}",
                    *s[key][j])  # fmt: skip
        best = s["best"]
        add(
            f"{label}: best p by validation (bootstrap interval)",
            best["p"],
            *best["bootstrap"],
        )
        add(f"{label}: validation error at the best p", *best["val_error"])
        if s["best_vs_no_dropout_test"] is not None:
            d = s["best_vs_no_dropout_test"]
            add(
                f"{label}: test error at best p minus p = 0 (paired)",
                d["mean"],
                d["low"],
                d["high"],
            )
    return rows


def answer(result: dict[str, Any]) -> str:
    """The best p in each setting with its intervals, and what it gains over p = 0."""
    sentences = []
    for scheme in SCHEMES:
        s = result["schemes"][scheme]
        best = s["best"]
        label = TITLES[scheme].format(**result)
        lo, hi = best["bootstrap"]
        others = [p for p in best["not_worse"] if p != best["p"]]
        spread = (
            f"p in {{{', '.join(f'{p:g}' for p in best['not_worse'])}}} are not "
            "detectably worse on validation"
            if others
            else "every other p is detectably worse on validation"
        )
        text = (
            f"With {label}, validation error is lowest at p = {best['p']:g} "
            f"({100 * best['val_error'][0]:.2f} %); over bootstrap resamples of the "
            f"{result['seeds']} seeds the best p lies in [{lo:g}, {hi:g}], and {spread}"
        )
        d = s["best_vs_no_dropout_test"]
        if d is not None:
            text += "; on test error " + verdict(
                f"p = {best['p']:g}", "no dropout", d, quantity="test error",
                higher_is_better=False,
            )  # fmt: skip
        sentences.append(text + ".")
    if 0.0 in result["ps"]:
        s = result["schemes"]["fixed_n"]
        none = result["ps"].index(0.0)
        gap = s["test_error"][none][0] - s["train_error"][none][0]
        sentences.append(
            gap_clause(
                [gap, None, None],
                who=f"without dropout, the {result['width']}-unit network on "
                f"{result['data']}",
            ).strip()
        )
    return " ".join(sentences)
