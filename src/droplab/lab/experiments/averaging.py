"""Does weight scaling at test time stand for the average of all 2^n subnetworks?

A network with a dropout layer of n units is an ensemble of 2^n subnetworks.
For n <= 16 we compute that ensemble's average prediction exactly and compare
it with weight scaling (one deterministic pass), with Monte-Carlo dropout using
k random masks, and with the normalized weighted geometric mean (NWGM) of
Baldi & Sadowski. For a full-size network we repeat Srivastava et al.'s Fig. 11:
test error of MC-k against weight scaling as k grows, over several seeds.

- Paper: Srivastava et al., JMLR 15, 2014, Sec. 7.5 and Fig. 11.
- Paper: Baldi & Sadowski, "Understanding dropout", NIPS 2013.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from droplab.execution import one_thread, parallel_map
from droplab.lab.compare import gap_clause, train_test_gap
from droplab.lab.ranges import in_range
from droplab.lab.registry import row_adder
from droplab.lab.stats import mean_ci
from droplab.lab.training import (
    build_mlp,
    load_classification,
    predict,
    train_classifier,
)
from droplab.nn import mc_dropout
from droplab.rng import derive_seed
from droplab.uncertainty.ensemble import (
    exact_average,
    mc_logits,
    tv_distance,
    weight_scaling,
)

NAME = "averaging"
QUESTION = (
    "Is one pass with scaled weights as good as averaging the predictions of all the "
    "subnetworks dropout trains, and how many random subnetworks (Monte-Carlo samples) "
    "does it take to do better?"
)
METHOD = (
    "Small network: one hidden layer of n <= 16 units followed by droplab dropout, trained "
    "on built-in data; on the test set we compute the exact ensemble average of the softmax "
    "outputs over all 2^n masks weighted by their probability (droplab.uncertainty.ensemble), and measure "
    "the total-variation distance to it of weight scaling, of the NWGM softmax(E[z]) and of "
    "MC-k (mean of k sampled subnetworks' softmax outputs), repeating MC with independent "
    "seeds for 95 % intervals. Full-size network: two wide hidden layers with dropout, trained "
    "with several seeds (in parallel with --jobs); test error of weight scaling vs MC-k "
    "(droplab.mc_dropout), with intervals over seeds and paired differences."
)


@dataclass(frozen=True)
class Config:
    """Settings of the averaging experiment (``Config()`` is the default preset)."""

    data: str = "mnist1d"  # built-in data set (quick: digits)
    p: float = 0.5  # drop probability of every dropout layer
    small_units: int = 12  # n, the dropout layer of the small network (2^n masks)
    small_epochs: int = 30  # training epochs of the small network
    small_ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # MC sample counts
    mc_repeats: int = 20  # independent MC runs per k (for intervals)
    large_hidden: tuple[int, ...] = (256, 256)  # widths of the full-size network
    large_epochs: int = 20  # training epochs of the full-size network
    large_ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)  # MC sample counts
    seeds: int = 4  # training seeds of the full-size network
    seed: int = 0  # root seed

    @classmethod
    def quick(cls) -> Config:
        """A 10-unit layer, a one-layer wide network, three seeds: a few seconds."""
        return cls(
            data="digits", small_units=10, small_epochs=15, small_ks=(1, 4, 16, 64), mc_repeats=10,
            large_hidden=(128,), large_epochs=8, large_ks=(1, 5, 20, 50), seeds=3,
        )  # fmt: skip

    @classmethod
    def full(cls) -> Config:
        """n = 16 (65536 subnetworks) and ten seeds of a larger network."""
        return cls(
            small_units=16, small_epochs=60, small_ks=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            mc_repeats=50, large_hidden=(512, 512), large_epochs=40,
            large_ks=(1, 2, 5, 10, 20, 50, 100, 200), seeds=10,
        )  # fmt: skip


def _small(config: Config) -> dict[str, Any]:
    data = load_classification(config.data, seed=config.seed, experiment=NAME)
    model = build_mlp(
        data.n_features, [config.small_units], data.n_classes, p=config.p,
        seed=derive_seed(config.seed, 0),
    ).double()  # fmt: skip
    history = train_classifier(
        model, data, epochs=config.small_epochs, seed=derive_seed(config.seed, 1)
    )
    x = torch.as_tensor(data.x_test, dtype=torch.float64)
    exact = exact_average(model, x)
    _, ws_probs = weight_scaling(model, x)
    k_max = max(config.small_ks)
    tv = np.empty((config.mc_repeats, len(config.small_ks)))
    tv_geo = np.empty_like(tv)
    acc_mc = np.empty_like(tv)
    for r in range(config.mc_repeats):
        z = mc_logits(
            model, x, k_max, seed=derive_seed(config.seed, 2, r)
        )  # (k, batch, classes)
        running_p = np.cumsum(torch.softmax(torch.from_numpy(z), -1).numpy(), axis=0)
        running_z = np.cumsum(z, axis=0)
        for j, k in enumerate(config.small_ks):
            mean_p = running_p[k - 1] / k
            tv[r, j] = tv_distance(mean_p, exact.mean_probs).mean()
            geo = torch.softmax(torch.from_numpy(running_z[k - 1] / k), -1).numpy()
            tv_geo[r, j] = tv_distance(geo, exact.mean_probs).mean()
            acc_mc[r, j] = np.mean(mean_p.argmax(1) == data.y_test)
    return {
        "units": config.small_units,
        "masks": exact.n_masks,
        "val_accuracy": history["val_accuracy"][-1],
        "ks": list(config.small_ks),
        "mc_tv": [list(mean_ci(tv[:, j])) for j in range(len(config.small_ks))],
        "mc_geometric_tv": [
            list(mean_ci(tv_geo[:, j])) for j in range(len(config.small_ks))
        ],
        "ws_tv": float(tv_distance(ws_probs, exact.mean_probs).mean()),
        # over test inputs: how much the distance varies from input to input
        "ws_tv_ci": list(mean_ci(tv_distance(ws_probs, exact.mean_probs))),
        "nwgm_tv": float(tv_distance(exact.nwgm, exact.mean_probs).mean()),
        "nwgm_vs_ws_max": float(np.abs(exact.nwgm - ws_probs).max()),
        "accuracy_exact": float(np.mean(exact.mean_probs.argmax(1) == data.y_test)),
        "accuracy_ws": float(np.mean(ws_probs.argmax(1) == data.y_test)),
        "accuracy_mc": [
            list(mean_ci(acc_mc[:, j])) for j in range(len(config.small_ks))
        ],
    }


def _large_task(task: tuple[Config, int]) -> dict[str, Any]:
    """Train one full-size network (one seed) and score weight scaling and MC-k."""
    config, index = task
    data = load_classification(config.data, seed=config.seed, experiment=NAME)
    model = build_mlp(
        data.n_features, list(config.large_hidden), data.n_classes, p=config.p,
        seed=derive_seed(config.seed, 10, index),
    )  # fmt: skip
    train_classifier(
        model,
        data,
        epochs=config.large_epochs,
        seed=derive_seed(config.seed, 11, index),
    )
    ws_error = 1.0 - float(
        np.mean(predict(model, data.x_test).argmax(1) == data.y_test)
    )
    x = torch.as_tensor(data.x_test)
    total = torch.zeros(len(x), data.n_classes, dtype=torch.float64)
    errors = []
    with torch.no_grad(), mc_dropout(model):
        for k in range(1, max(config.large_ks) + 1):
            total += torch.softmax(model(x), -1).double()
            if k in config.large_ks:
                errors.append(
                    1.0 - float(np.mean(total.argmax(1).numpy() == data.y_test))
                )
    train_error = 1.0 - float(
        np.mean(predict(model, data.x_train).argmax(1) == data.y_train)
    )
    return {"ws_error": ws_error, "mc_error": errors, "train_error": train_error}


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """The exact-average comparison, then one full-size training run per seed (parallel)."""
    with one_thread():
        small = _small(config)
    per_seed = parallel_map(
        _large_task, [(config, i) for i in range(config.seeds)], jobs=jobs
    )
    ws = np.array([r["ws_error"] for r in per_seed])
    mc = np.array([r["mc_error"] for r in per_seed])  # (seeds, ks)
    large = {
        "hidden": list(config.large_hidden),
        "seeds": config.seeds,
        "ks": list(config.large_ks),
        "ws_error": list(mean_ci(ws)),
        "mc_error": [list(mean_ci(mc[:, j])) for j in range(mc.shape[1])],
        "mc_minus_ws": [list(mean_ci(mc[:, j] - ws)) for j in range(mc.shape[1])],
        "per_seed": per_seed,
        "gap": train_test_gap([r["train_error"] for r in per_seed], ws),
    }
    return {"p": config.p, "data": config.data, "small": small, "large": large}


def _band(
    ax: Any, ks: list[int], triples: list[list[Any]], color: str, label: str
) -> None:
    mean = [t[0] for t in triples]
    ax.plot(ks, mean, "o-", ms=3, color=color, label=label)
    if all(t[1] is not None for t in triples):
        ax.fill_between(
            ks, [t[1] for t in triples], [t[2] for t in triples], color=color, alpha=0.2
        )


def _percent(triple: list[Any]) -> list[Any]:
    """A test error's triple in percent, its interval cut as the table cuts it."""
    return [None if v is None else 100 * v for v in in_range(triple, "test error")]


def figure(result: dict[str, Any]) -> Any:
    """Left: distance to the exact average vs k. Right: test error vs k (Fig. 11 analogue)."""
    from matplotlib.figure import Figure

    small, large = result["small"], result["large"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    distances = [in_range(t, "total variation") for t in small["mc_tv"]]
    _band(left, small["ks"], distances, "#1f5fa8", "MC-k (mean of softmax)")
    _band(
        left,
        small["ks"],
        [in_range(t, "total variation") for t in small["mc_geometric_tv"]],
        "#4f9a6b",
        "MC-k (softmax of mean logits)",
    )
    left.axhline(small["ws_tv"], color="#d08c60", lw=2, label="weight scaling")
    left.axhline(small["nwgm_tv"], color="k", ls=":", label="NWGM softmax(E[z])")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("k (subnetworks sampled)")
    left.set_ylabel("total variation to exact average")
    left.set_title(
        f"n = {small['units']}: exact average over {small['masks']} masks", fontsize=10
    )
    left.legend(fontsize=8)
    _band(
        right,
        large["ks"],
        [_percent(t) for t in large["mc_error"]],
        "#1f5fa8",
        "MC-k",
    )
    ws = _percent(large["ws_error"])
    right.axhline(ws[0], color="#d08c60", lw=2, label="weight scaling")
    if ws[1] is not None:
        right.axhspan(ws[1], ws[2], color="#d08c60", alpha=0.15)
    right.set_xscale("log")
    right.set_xlabel("k (MC samples)")
    right.set_ylabel("test error (%)")
    right.set_title(
        f"Hidden {large['hidden']}, {large['seeds']} seeds (95 % bands)", fontsize=10
    )
    right.legend(fontsize=8)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Distances to the exact average, accuracies, and test errors vs k."""
    small, large = result["small"], result["large"]
    rows: list[dict[str, Any]] = []

    add = row_adder(rows)

    add(
        f"small net (n = {small['units']}): weight scaling, TV to exact average",
        *small.get(
            "ws_tv_ci", [small["ws_tv"]]
        ),  # (saved before 2026-12-06: no interval)
    )
    add("small net: NWGM, TV to exact average", small["nwgm_tv"])
    add("small net: max |NWGM - weight scaling| (0 in theory)", small["nwgm_vs_ws_max"])
    for k, triple in zip(small["ks"], small["mc_tv"], strict=True):
        add(f"small net: MC-{k}, TV to exact average", *triple)
    add("small net: test accuracy, exact average", small["accuracy_exact"])
    add("small net: test accuracy, weight scaling", small["accuracy_ws"])
    for k, triple in zip(small["ks"], small["accuracy_mc"], strict=True):
        add(f"small net: test accuracy, MC-{k}", *triple)
    add(f"full net {large['hidden']}: test error, weight scaling", *large["ws_error"])
    for k, err, diff in zip(
        large["ks"], large["mc_error"], large["mc_minus_ws"], strict=True
    ):
        add(f"full net: test error, MC-{k}", *err)
        add(f"full net: MC-{k} minus weight scaling (paired)", *diff)
    return rows


def answer(result: dict[str, Any]) -> str:
    """Where MC overtakes weight scaling, by intervals; whether MC-k's error differs."""
    small, large = result["small"], result["large"]
    better = [
        k
        for k, t in zip(small["ks"], small["mc_tv"], strict=True)
        if t[2] is not None and t[2] < small["ws_tv"]
    ]
    if better:
        s1 = (
            f"For the {small['units']}-unit layer, weight scaling is {small['ws_tv']:.3g} (total variation) from the exact "
            f"average of all {small['masks']} subnetworks; Monte-Carlo averaging gets detectably closer from k = {better[0]} "
            f"samples on ({small['mc_tv'][small['ks'].index(better[0])][0]:.3g})."
        )
    else:
        s1 = (
            f"For the {small['units']}-unit layer, weight scaling ({small['ws_tv']:.3g} total variation from the exact average "
            f"of all {small['masks']} subnetworks) is closer than Monte-Carlo averaging with up to k = {small['ks'][-1]} samples "
            f"({small['mc_tv'][-1][0]:.3g})."
        )
    s2 = (
        "The normalized weighted geometric mean (NWGM: the softmax of the subnetworks' "
        "average logits, a geometric mean of their outputs renormalized to sum to 1, "
        "not the arithmetic mean of their outputs that the exact average takes) equals "
        f"weight scaling here (largest difference {small['nwgm_vs_ws_max']:.1e}), as "
        "Baldi and Sadowski prove for one linear layer after dropout."
    )
    diffs = large["mc_minus_ws"]
    ks = large["ks"]
    ws = large["ws_error"]
    last = diffs[-1]
    # The smallest k from which on no difference is detectable (for every larger k too).
    undetectable: list[int] = []
    for k, d in reversed(list(zip(ks, diffs, strict=True))):
        if d[1] is None or not d[1] <= 0 <= d[2]:
            break
        undetectable.insert(0, k)
    if last[1] is None:
        s3 = f"In the full-size network weight scaling's test error is {100 * ws[0]:.2f} % (one seed: no interval)."
    elif last[2] < 0:
        s3 = (
            f"In the full-size network MC-{ks[-1]} beats weight scaling: test error {100 * large['mc_error'][-1][0]:.2f} % vs "
            f"{100 * ws[0]:.2f} % (paired difference {100 * last[0]:.2f} points, [{100 * last[1]:.2f}, {100 * last[2]:.2f}])."
        )
    elif last[1] > 0:
        s3 = (
            f"In the full-size network weight scaling beats even MC-{ks[-1]}: test error {100 * ws[0]:.2f} % vs "
            f"{100 * large['mc_error'][-1][0]:.2f} % (paired difference {100 * last[0]:.2f} points, [{100 * last[1]:.2f}, {100 * last[2]:.2f}])."
        )
    else:
        first = undetectable[0] if undetectable else ks[-1]
        s3 = (
            f"In the full-size network MC-k's test error is indistinguishable from weight scaling's ({100 * ws[0]:.2f} %) "
            f"from k = {first} on (paired difference at k = {ks[-1]}: {100 * last[0]:.2f} points, "
            f"[{100 * last[1]:.2f}, {100 * last[2]:.2f}]), as in Srivastava et al.'s Fig. 11."
        )
    s4 = gap_clause(
        large.get("gap"),
        who=f"with dropout (weight scaling), the full-size network on "
        f"{result.get('data', 'digits')}",
    ).strip()
    return " ".join([s for s in (s1, s2, s3, s4) if s])
