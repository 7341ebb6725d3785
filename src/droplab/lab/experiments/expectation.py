"""Does dividing by the keep probability compensate for the dropped units?

The forum thread on 1/keep_prob scaling asks how doubling small kept activations can
make up for dropped large ones (14.1 and 13.1), and whether dividing by the
number of units actually kept would be more precise. We measure (1) the forum's
own example, repeated to show its spread; (2) on a trained network, the bias
and variance of the next layer's pre-activation under ``inverted``,
``realized`` and no scaling, and the closed form
``Var = p/(1-p) * sum_i w_i^2 a_i^2`` against simulation; (3) how likely the
largest activations are all dropped and what it costs, as the layer widens.

- Paper: Srivastava et al., JMLR 15, 2014 (scaling); Wang & Manning, "Fast
  dropout training", ICML 2013 (the Gaussian view of the dropout sum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from droplab.execution import one_thread
from droplab.functional import dropout
from droplab.lab.ranges import in_range
from droplab.lab.registry import row_adder
from droplab.lab.stats import mean_ci, proportion_ci
from droplab.lab.training import (
    build_mlp,
    load_classification,
    train_classifier,
)
from droplab.masks import bernoulli_mask
from droplab.rng import derive_seed

NAME = "expectation"
QUESTION = (
    "Does dividing the kept activations by the keep probability make up for the dropped "
    "ones, even when the largest activations are the ones dropped, and would dividing by "
    "the number of units actually kept be more precise?"
)
METHOD = (
    "(1) The forum's example: 1000 values y ~ N(1, 0.1), masks r with keep probability 0.5 "
    "(droplab.masks), the means of y, r*y and r*y/keep, repeated to show their spread. "
    "(2) A one-hidden-layer network with dropout trained on built-in data; for test inputs "
    "we apply droplab.functional.dropout to the hidden activations a with the same masks under "
    "the inverted, realized and none rules and compare the next layer's pre-activation "
    "z = W a + b with its full value: bias, variance (against the closed form "
    "p/(1-p) sum_i w_i^2 a_i^2) and mean squared error, with 95 % intervals over inputs. "
    "(3) A layer holding the forum's 14.1 and 13.1 among n - 2 small activations (|N(0, 1)|): "
    "how often both are dropped and the relative error of the inverted-scaled sum, as n grows."
)

RULES = ("inverted", "realized", "none")
LARGE = (14.1, 13.1)  # the forum's two large activations


@dataclass(frozen=True)
class Config:
    """Settings of the expectation experiment (``Config()`` is the default preset)."""

    data: str = "digits"  # built-in data set the network is trained on
    hidden: int = 64  # width of the hidden layer whose dropout is analysed
    p: float = 0.5  # drop probability (the forum's keep_prob = 0.5)
    epochs: int = 15  # training epochs
    inputs: int = 100  # test inputs analysed
    masks: int = 1000  # dropout masks per input
    forum_values: int = 1000  # the forum's m
    forum_repeats: int = 500  # repetitions of the forum's example
    widths: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 1024)  # layer widths, part 3
    width_masks: int = 4000  # masks per width in part 3
    seed: int = 0  # root seed

    @classmethod
    def quick(cls) -> Config:
        """Fewer epochs, inputs and masks: about a second."""
        return cls(epochs=5, inputs=40, masks=400, forum_repeats=200, width_masks=2000)

    @classmethod
    def full(cls) -> Config:
        """More of everything, for tight intervals."""
        return cls(
            epochs=40, inputs=360, masks=10_000, forum_repeats=5000, width_masks=50_000
        )


def _forum(config: Config) -> dict[str, Any]:
    keep = 1 - config.p
    rng = np.random.default_rng(derive_seed(config.seed, 0))
    y = rng.normal(1.0, 0.1, size=(config.forum_repeats, config.forum_values))
    r = bernoulli_mask(y.shape, config.p, seed=derive_seed(config.seed, 1))
    means = {
        "y": y.mean(axis=1),
        "r*y": (r * y).mean(axis=1),
        "r*y/keep": (r * y / keep).mean(axis=1),
    }
    return {
        name: {
            "first": float(m[0]),
            "mean": list(mean_ci(m)),
            "range95": [float(np.quantile(m, 0.025)), float(np.quantile(m, 0.975))],
            "values": m.tolist(),
        }
        for name, m in means.items()
    }


def _network(config: Config) -> dict[str, Any]:
    data = load_classification(config.data, seed=config.seed, experiment=NAME)
    model = build_mlp(
        data.n_features,
        [config.hidden],
        data.n_classes,
        p=config.p,
        seed=derive_seed(config.seed, 2),
    )
    history = train_classifier(
        model, data, epochs=config.epochs, seed=derive_seed(config.seed, 3)
    )
    first, last = model[0], model[-1]
    if not (isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)):
        raise TypeError("expected a Linear first and last layer")
    x = torch.as_tensor(data.x_test[: config.inputs], dtype=torch.float64)
    w1, b1 = first.weight.detach().double(), first.bias.detach().double()
    w2, b2 = last.weight.detach().double(), last.bias.detach().double()
    a = torch.relu(x @ w1.T + b1)  # (inputs, hidden)
    full = a @ w2.T + b2  # (inputs, classes)
    closed = config.p / (1 - config.p) * (a**2) @ (w2**2).T  # (inputs, classes)
    mask_seed = derive_seed(config.seed, 4)
    out: dict[str, Any] = {"val_accuracy": history["val_accuracy"][-1], "rules": {}}
    repeated = (
        a.unsqueeze(0).expand(config.masks, *a.shape).reshape(-1, a.shape[1])
    )  # rows = (mask, input)
    for rule in RULES:
        dropped = dropout(
            repeated, config.p, seed=mask_seed, scale=rule
        )  # same masks for every rule
        z = (dropped @ w2.T + b2).reshape(
            config.masks, *full.shape
        )  # (masks, inputs, classes)
        bias = z.mean(0) - full
        variance = z.var(0)
        mse = ((z - full) ** 2).mean(0)
        out["rules"][rule] = {
            "bias": list(mean_ci(bias.mean(1).numpy())),
            "abs_bias_over_sd": list(
                mean_ci((bias.abs() / closed.sqrt().clamp_min(1e-12)).mean(1).numpy())
            ),
            "variance_ratio": list(
                mean_ci((variance / closed.clamp_min(1e-12)).mean(1).numpy())
            ),
            "mse": list(mean_ci(mse.mean(1).numpy())),
            "variance_vs_closed": [variance[:, 0].tolist(), closed[:, 0].tolist()],
            "per_input_mse": mse.mean(1).tolist(),
        }
    inverted = np.asarray(out["rules"]["inverted"].pop("per_input_mse"))
    for rule in RULES[1:]:
        other = np.asarray(out["rules"][rule].pop("per_input_mse"))
        out["rules"][rule]["mse_minus_inverted"] = list(mean_ci(other - inverted))
    return out


def _widths(config: Config) -> list[dict[str, Any]]:
    rows = []
    keep = 1 - config.p
    for n in config.widths:
        rng = np.random.default_rng(derive_seed(config.seed, 5, n))
        a = np.concatenate([LARGE, np.abs(rng.standard_normal(n - len(LARGE)))])
        full = a.sum()
        kept = bernoulli_mask(
            (config.width_masks, n), config.p, seed=derive_seed(config.seed, 6, n)
        )
        relative = (kept * a).sum(axis=1) / keep / full - 1.0
        both = ~kept[:, 0] & ~kept[:, 1]
        count = int(both.sum())
        rows.append({
            "n": n,
            "p_both": list(proportion_ci(count, config.width_masks)),
            "p_both_exact": config.p ** len(LARGE),
            "error_if_both": list(mean_ci(relative[both])) if count else [None, None, None],
            "error_if_both_exact": -sum(LARGE) / full,
            "mean_error": list(mean_ci(relative)),
            "rms_error": float(np.sqrt(np.mean(relative**2))),
            "rms_error_exact": float(np.sqrt(config.p / keep * np.sum(a**2)) / full),
            "p_top_half_dropped": config.p ** (n // 2),
        })  # fmt: skip
    return rows


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """All three parts; one training run (``jobs`` is not needed)."""
    del jobs
    with one_thread():
        network = _network(config)
    return {
        "p": config.p,
        "data": config.data,
        "hidden": config.hidden,
        "forum": _forum(config),
        "network": network,
        "widths": _widths(config),
        "forum_top_half_dropped": config.p
        ** 50,  # the forum's 50 largest of 100 all dropped
    }


def figure(result: dict[str, Any]) -> Any:
    """Forum spread; bias and variance by rule; variance vs closed form; effect vs width."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5), layout="constrained")
    (ax_forum, ax_rules), (ax_var, ax_width) = fig.subplots(2, 2)
    colors = {"y": "#555555", "r*y": "#d08c60", "r*y/keep": "#1f5fa8"}
    for name, entry in reversed(list(result["forum"].items())):  # narrow mean(y) on top
        ax_forum.hist(
            entry["values"],
            bins=40,
            alpha=0.7,
            color=colors[name],
            label=f"mean({name})",
        )
    ax_forum.set_title("Forum example, repeated: means of 1000 values", fontsize=10)
    ax_forum.set_xlabel("sample mean")
    ax_forum.legend(fontsize=8)

    rules = list(result["network"]["rules"])
    mse = [
        in_range(result["network"]["rules"][r]["mse"], "mean squared error")
        for r in rules
    ]
    errors = [[m[0] - m[1] for m in mse], [m[2] - m[0] for m in mse]]
    ax_rules.bar(
        rules,
        [m[0] for m in mse],
        yerr=errors,
        color=["#1f5fa8", "#4f9a6b", "#d08c60"],
        capsize=4,
    )
    ax_rules.set_title("Next layer: mean squared error vs the full value", fontsize=10)
    ax_rules.set_ylabel("E[(z_dropout - z_full)^2]")

    simulated, closed = result["network"]["rules"]["inverted"]["variance_vs_closed"]
    ax_var.loglog(
        closed, simulated, ".", ms=4, color="#1f5fa8", label="inverted, simulated"
    )
    low, high = min(closed + simulated), max(closed + simulated)
    ax_var.plot([low, high], [low, high], "k--", lw=1, label="closed form")
    ax_var.set_xlabel("p/(1-p) sum w^2 a^2")
    ax_var.set_ylabel("simulated variance of z")
    ax_var.set_title(
        "Variance of the pre-activation (one output, each input)", fontsize=10
    )
    ax_var.legend(fontsize=8)

    widths = [w["n"] for w in result["widths"]]
    exact = [-w["error_if_both_exact"] for w in result["widths"]]
    rms = [w["rms_error_exact"] for w in result["widths"]]
    ax_width.loglog(
        widths,
        exact,
        "o-",
        color="#d08c60",
        label="shortfall when 14.1 and 13.1 are dropped",
    )
    ax_width.loglog(
        widths, rms, "s-", color="#1f5fa8", label="typical (RMS) error, any mask"
    )
    ax_width.set_xlabel("layer width n")
    ax_width.set_ylabel("relative error of the scaled sum")
    ax_width.set_title(
        f"Both large units dropped: probability {result['widths'][0]['p_both_exact']:.2g} at every n",
        fontsize=10,
    )
    ax_width.legend(fontsize=8)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Forum means, per-rule bias/variance/MSE, and the width series."""
    rows: list[dict[str, Any]] = []

    add = row_adder(rows)

    for name, entry in result["forum"].items():
        add(f"forum: mean({name}), average over repeats", *entry["mean"])
        # The middle 95 % of single runs is a range, not an interval around one
        # run: the value beside it is their median, which always lies inside.
        singles = entry.get("values")
        add(
            f"forum: mean({name}), single runs: median, middle 95 %",
            float(np.median(singles)) if singles else entry["first"],
            *entry["range95"],
            unit="range of runs",
        )
    add("network: validation accuracy", result["network"]["val_accuracy"])
    for rule, entry in result["network"]["rules"].items():
        add(f"{rule}: bias of z (mean over inputs and outputs)", *entry["bias"])
        add(f"{rule}: |bias| / closed-form sd", *entry["abs_bias_over_sd"])
        add(f"{rule}: variance / closed form", *entry["variance_ratio"])
        add(f"{rule}: mean squared error", *entry["mse"])
        if "mse_minus_inverted" in entry:
            add(
                f"{rule}: MSE minus inverted's (paired over inputs)",
                *entry["mse_minus_inverted"],
            )
    for w in result["widths"]:
        add(
            f"n = {w['n']}: P(14.1 and 13.1 both dropped) (exact {w['p_both_exact']:.3g})",
            *w["p_both"],
        )
        add(
            f"n = {w['n']}: relative error if both dropped (exact)",
            w["error_if_both_exact"],
        )
        add(f"n = {w['n']}: mean relative error over all masks", *w["mean_error"])
        add(
            f"n = {w['n']}: RMS relative error (closed form; simulated {w['rms_error']:.3g})",
            w["rms_error_exact"],
        )
    add(
        "forum's n = 100: P(the 50 largest all dropped) = p^50",
        result["forum_top_half_dropped"],
    )
    return rows


def _contains(triple: list[Any], value: float) -> bool:
    return triple[1] is not None and triple[1] <= value <= triple[2]


def answer(result: dict[str, Any]) -> str:
    """Sentences decided by whether each interval contains the value in question."""
    forum = result["forum"]
    target = forum["y"]["mean"][0]
    scaled = forum["r*y/keep"]
    if _contains(scaled["mean"], target):
        s1 = (
            f"On average, yes: mean(r*y/keep) = {scaled['mean'][0]:.4f} [{scaled['mean'][1]:.4f}, {scaled['mean'][2]:.4f}] "
            f"matches mean(y) = {target:.4f}, while a single run of 1000 values lands anywhere in "
            f"[{scaled['range95'][0]:.3f}, {scaled['range95'][1]:.3f}], so the forum's 1.025 is ordinary noise."
        )
    else:
        s1 = f"No: mean(r*y/keep) = {scaled['mean'][0]:.4f} [{scaled['mean'][1]:.4f}, {scaled['mean'][2]:.4f}] misses mean(y) = {target:.4f}."
    rules = result["network"]["rules"]
    inv, real, none = rules["inverted"], rules["realized"], rules["none"]
    bias_word = (
        "no detectable bias"
        if _contains(inv["bias"], 0.0)
        else f"a detectable bias of {inv['bias'][0]:.3g}"
    )
    var_word = (
        "matches the closed form p/(1-p) sum w^2 a^2"
        if _contains(inv["variance_ratio"], 1.0)
        else f"is {inv['variance_ratio'][0]:.3g} times the closed form"
    )
    s2 = (
        f"In the trained network, inverted scaling shows {bias_word} in the next layer and its variance {var_word} "
        f"(ratio {inv['variance_ratio'][0]:.3f} [{inv['variance_ratio'][1]:.3f}, {inv['variance_ratio'][2]:.3f}]); "
        f"without scaling the pre-activation is off by {none['bias'][0]:.3g} on average."
    )
    diff = real["mse_minus_inverted"]
    relative = diff[0] / inv["mse"][0] if inv["mse"][0] else 0.0
    if diff[2] is not None and diff[2] < 0:
        s3 = f"Dividing by the number actually kept (realized) is more precise: its squared error is {abs(relative):.0%} lower (paired interval [{diff[1]:.3g}, {diff[2]:.3g}])."
    elif diff[1] is not None and diff[1] > 0:
        s3 = f"Dividing by the number actually kept (realized) is less precise: its squared error is {relative:.0%} higher (paired interval [{diff[1]:.3g}, {diff[2]:.3g}])."
    else:
        s3 = f"Dividing by the number actually kept (realized) makes no detectable difference to the squared error (paired interval [{diff[1]:.3g}, {diff[2]:.3g}])."
    small, large = result["widths"][0], result["widths"][-1]
    s4 = (
        f"Both of the forum's large activations are dropped with probability {small['p_both_exact']:.2g} at any width; "
        f"then the scaled sum falls short by {-small['error_if_both_exact']:.0%} at n = {small['n']} but only "
        f"{-large['error_if_both_exact']:.1%} at n = {large['n']}, and the chance that the 50 largest of 100 are all "
        f"dropped is {result['forum_top_half_dropped']:.1e}."
    )
    return " ".join([s1, s2, s3, s4])
