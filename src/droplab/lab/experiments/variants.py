"""Which member of the dropout family works best on a plain MLP, and at what cost?

The same network and data trained with each variant of droplab's family that
applies to fully connected layers: standard (inverted) dropout, the classic
rule (weight scaling at test time), Gaussian dropout, alpha dropout (with SELU
units, as its paper prescribes), DropConnect and concrete dropout (rate learned).
Channel, block, path and sequence variants need convolutions, residual branches
or time steps, so they are not part of this comparison.

- Paper: Srivastava et al., JMLR 15, 2014 (dropout; Gaussian dropout, Sec. 10).
- Paper: Klambauer et al., "Self-normalizing neural networks", NIPS 2017.
- Paper: Wan et al., "Regularization of neural networks using DropConnect", ICML 2013.
- Paper: Gal, Hron and Kendall, "Concrete dropout", NeurIPS 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import (
    detectable,
    gap_clause,
    holm,
    holm_caveat,
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
from droplab.nn import (
    AlphaDropout,
    ConcreteDropout,
    DropConnectLinear,
    GaussianDropout,
)
from droplab.rng import derive_seed

NAME = "variants"
QUESTION = (
    "Among the dropout variants people use on fully connected layers, which gives the "
    "best test accuracy on the same network, and what does each cost per epoch?"
)
METHOD = (
    "Two hidden layers, each variant in place of standard dropout (same rate p where the "
    "variant has one; alpha dropout uses SELU units and its own small rate; concrete "
    "dropout learns its rate with the paper's regulariser, dropout_regularizer = 2 / N), "
    "trained with Adam for the same epochs, several seeds sharing initial batches order. "
    "Test accuracy at the final epoch, paired differences to standard dropout (95 % t "
    "intervals, Holm-corrected), and the measured CPU seconds per epoch."
)

VARIANTS = (
    "none",
    "dropout",
    "classic",
    "gaussian",
    "alpha",
    "dropconnect",
    "concrete",
)
BASELINE = "dropout"


@dataclass(frozen=True)
class Config:
    """Settings of the variants experiment (``Config()`` is the default preset)."""

    data: str = "mnist1d"  # built-in data set (quick: digits)
    hidden: int = 128  # units per hidden layer (two layers)
    p: float = 0.5  # drop probability of the variants that take one
    alpha_p: float = 0.1  # alpha dropout's rate (its paper uses 0.05-0.1)
    seeds: int = 3  # paired seeds
    epochs: int = 40  # training epochs (dropout needs them on MNIST-1D)
    batch_size: int = 128  # mini-batch size
    lr: float = 3e-3  # Adam learning rate
    seed: int = 0  # root seed (also the data split)

    @classmethod
    def quick(cls) -> Config:
        """Narrow layers, two seeds, a few epochs: seconds."""
        return cls(data="digits", hidden=64, seeds=2, epochs=4)

    @classmethod
    def full(cls) -> Config:
        """Wider layers, ten seeds, long training."""
        return cls(hidden=1024, seeds=10, epochs=40)


def build(
    variant: str, n_in: int, n_out: int, config: Config, seed: int, *, n_train: int
) -> nn.Module:
    """The two-hidden-layer network with ``variant`` in place of standard dropout.

    ``n_train`` (the training-set size N) sets concrete dropout's regulariser,
    ``2 / (tau N)`` with model precision tau = 1.
    """
    h, p = config.hidden, config.p
    if variant in ("none", "dropout", "classic"):
        return build_mlp(
            n_in, [h, h], n_out, p=0.0 if variant == "none" else p, seed=seed,
            scale="classic" if variant == "classic" else "inverted",
        )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        s1, s2 = derive_seed(seed, 1), derive_seed(seed, 2)
        if variant == "gaussian":
            return nn.Sequential(
                nn.Linear(n_in, h), nn.ReLU(), GaussianDropout(p, seed=s1),
                nn.Linear(h, h), nn.ReLU(), GaussianDropout(p, seed=s2), nn.Linear(h, n_out),
            )  # fmt: skip
        if variant == "alpha":
            return nn.Sequential(
                nn.Linear(n_in, h), nn.SELU(), AlphaDropout(config.alpha_p, seed=s1),
                nn.Linear(h, h), nn.SELU(), AlphaDropout(config.alpha_p, seed=s2),
                nn.Linear(h, n_out),
            )  # fmt: skip
        if variant == "dropconnect":
            return nn.Sequential(
                nn.Linear(n_in, h), nn.ReLU(), DropConnectLinear(h, h, p=p, seed=s1),
                nn.ReLU(), DropConnectLinear(h, n_out, p=p, seed=s2),
            )  # fmt: skip
        if variant == "concrete":
            return nn.Sequential(
                nn.Linear(n_in, h), nn.ReLU(),
                ConcreteDropout(nn.Linear(h, h), dropout_regularizer=2.0 / n_train, seed=s1),
                nn.ReLU(),
                ConcreteDropout(nn.Linear(h, n_out), dropout_regularizer=2.0 / n_train, seed=s2),
            )  # fmt: skip
    raise ValueError(
        f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}"
    )


def _task(task: tuple[Config, int, str]) -> dict[str, Any]:
    config, index, variant = task
    with one_thread():
        warm_up_kernels()
        data = load_cached(config.data, config.seed, NAME)
        model = build(variant, data.n_features, data.n_classes, config,
                      derive_seed(config.seed, index), n_train=len(data.x_train))  # fmt: skip
        concrete = [m for m in model.modules() if isinstance(m, ConcreteDropout)]

        def penalty() -> torch.Tensor:
            return sum((m.regularizer() for m in concrete), torch.zeros(()))

        curves = train_with_curves(
            model, data, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, seed=derive_seed(config.seed, index, 1),
            penalty=penalty if concrete else None,
        )  # fmt: skip
    return {
        "accuracy": 1.0 - curves["test_error"],
        "train_error": curves["train_error"][-1],
        "epoch_seconds": float(np.median(curves["epoch_seconds"])),
        "learned_p": [m.p for m in concrete],
    }


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Train every variant for every seed (interleaved, in parallel)."""
    tasks = [(config, i, v) for i in range(config.seeds) for v in VARIANTS]
    flat = parallel_map(_task, tasks, jobs=jobs)
    runs = {v: flat[j :: len(VARIANTS)] for j, v in enumerate(VARIANTS)}
    accuracy = {v: [r["accuracy"] for r in runs[v]] for v in VARIANTS}
    others = [v for v in VARIANTS if v != BASELINE]
    diffs = {v: paired_difference(accuracy[v], accuracy[BASELINE]) for v in others}
    for v, a in zip(others, holm([diffs[v]["p_value"] for v in others]), strict=True):
        diffs[v]["p_holm"] = a
    return {
        "data": config.data,
        "hidden": config.hidden,
        "p": config.p,
        "alpha_p": config.alpha_p,
        "seeds": config.seeds,
        "epochs": config.epochs,
        "accuracy": {v: list(mean_ci(accuracy[v])) for v in VARIANTS},
        "epoch_seconds": {
            v: list(mean_ci([r["epoch_seconds"] for r in runs[v]])) for v in VARIANTS
        },
        "train_error": {
            v: list(mean_ci([r["train_error"] for r in runs[v]])) for v in VARIANTS
        },
        "minus_dropout": diffs,
        "learned_p": list(mean_ci([np.mean(r["learned_p"]) for r in runs["concrete"]])),
        "gap_none": train_test_gap(
            [r["train_error"] for r in runs["none"]],
            [1.0 - r["accuracy"] for r in runs["none"]],
        ),
    }


def figure(result: dict[str, Any]) -> Any:
    """Test accuracy per variant (left) and seconds per epoch (right), 95 % intervals."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, scale, label in (
        (axes[0], "accuracy", 100.0, "test accuracy (%)"),
        (axes[1], "epoch_seconds", 1.0, "CPU seconds per epoch (median of epochs)"),
    ):
        quantity = "test accuracy" if key == "accuracy" else "seconds per epoch"
        triples = [in_range(result[key][v], quantity) for v in VARIANTS]
        means = [scale * t[0] for t in triples]
        yerr = None
        if all(t[1] is not None for t in triples):
            yerr = [[m - scale * t[1] for m, t in zip(means, triples, strict=True)],
                    [scale * t[2] - m for m, t in zip(means, triples, strict=True)]]  # fmt: skip
        ax.errorbar(
            range(len(VARIANTS)), means, yerr=yerr, fmt="o", capsize=4, color="#1f5fa8"
        )
        ax.set_xticks(range(len(VARIANTS)), [_name(v) for v in VARIANTS], rotation=30)
        ax.set_ylabel(label)
    axes[0].set_title(f"{result['data']}, 2 x {result['hidden']} units, {result['seeds']} seeds",
                      fontsize=10)  # fmt: skip
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Accuracy and seconds per epoch per variant, differences to dropout, learned p."""
    rows: list[dict[str, Any]] = []

    add = row_adder(rows)

    for v in VARIANTS:
        add(f"{_name(v)}: test accuracy", *result["accuracy"][v])
        if v in result.get("train_error", {}):
            add(f"{_name(v)}: final training error", *result["train_error"][v])
        add(f"{_name(v)}: seconds per epoch", *result["epoch_seconds"][v], unit="s")
    for v, d in result["minus_dropout"].items():
        add(f"{_name(v)} minus dropout: test accuracy (paired; Holm p = {d['p_holm']:.3g})",
            d["mean"], d["low"], d["high"])  # fmt: skip
    add("concrete dropout: learned rate (mean of its layers)", *result["learned_p"])
    return rows


def _name(variant: str) -> str:
    """ "none" is the network without dropout: the page never calls it a bare "none"."""
    return "no dropout" if variant == "none" else variant


def _classic_reason(result: dict[str, Any]) -> str:
    """Why classic can differ from standard dropout although, once trained, they are
    the same network scaled differently; the training errors where they were saved."""
    d = result["minus_dropout"].get("classic")
    if d is None or d.get("high") is None or not d["high"] < 0:
        return ""  # classic not behind standard dropout, even before Holm
    keep = 1 - result["p"]
    train = result.get("train_error", {})
    ending = "in the same epochs it therefore reaches a different network"
    if "classic" in train and "dropout" in train:
        fits = "less" if train["classic"][0] > train["dropout"][0] else "no less"
        ending += (
            f", one that fits the training set {fits} well (final training error "
            f"{100 * train['classic'][0]:.2f} % against {100 * train['dropout'][0]:.2f} %)"
        )
    return (
        f" Classic and standard dropout differ only in where the factor {keep:g} sits: "
        f"classic leaves the kept units unscaled in training, so from the same initial "
        f"weights each layer after a dropout sees inputs {keep:g} times as large as in "
        f"standard dropout and an Adam step of the same size moves its output {keep:g} "
        f"times as far; {ending}."
    )


def answer(result: dict[str, Any]) -> str:
    """Which variants differ detectably from standard dropout, and the fastest."""
    better = [v for v, d in result["minus_dropout"].items()
              if detectable(d, d["p_holm"]) and d["mean"] > 0]  # fmt: skip
    worse = [v for v, d in result["minus_dropout"].items()
             if detectable(d, d["p_holm"]) and d["mean"] < 0]  # fmt: skip
    same = [v for v in result["minus_dropout"] if v not in better + worse]
    parts = []
    for v in better + worse:
        d = result["minus_dropout"][v]
        parts.append(verdict(_name(v), "standard dropout", d, quantity="test accuracy",
                             higher_is_better=True, adjusted_p=d["p_holm"]))  # fmt: skip
    if same:
        listing = ", ".join(
            f"{_name(v)}{holm_caveat(result['minus_dropout'][v])}" for v in same
        )
        verb = "shows" if len(same) == 1 else "show"
        parts.append(
            f"{listing} {verb} no difference from standard dropout detectable after Holm"
        )
    best = max(VARIANTS, key=lambda v: result["accuracy"][v][0])
    fastest = min(VARIANTS, key=lambda v: result["epoch_seconds"][v][0])
    return (
        f"On {result['data']} ({result['seeds']} paired seeds, Holm-corrected): "
        + "; ".join(parts)
        + f". Highest mean accuracy: {_name(best)} ({100 * result['accuracy'][best][0]:.2f} %); "
        f"lowest mean seconds per epoch: {_name(fastest)}; concrete dropout learned p = {result['learned_p'][0]:.2f}."
        + _classic_reason(result)
        + gap_clause(result.get("gap_none"), who="without dropout, the network")
    )
