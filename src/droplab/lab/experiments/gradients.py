"""What does a dropped unit do to the gradient? The blog's network, by hand and by autograd.

Mark Cassar's blog post on dropout draws a network with 3 inputs and 4 hidden units,
a mini-batch of 3 samples each with its own subnetwork, and writes the update of
the weights from input f1 as the average of the per-sample gradients, where a
dropped unit contributes 0. We compute exactly that with droplab's NumPy
reference network (hand-written backprop) and check it against PyTorch autograd.

- Paper: Srivastava et al., JMLR 15, 2014, Sec. 5.1 (backpropagation through
  the thinned network).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from droplab._validation import fail
from droplab.lab.reference import ReferenceMLP

NAME = "gradients"
QUESTION = (
    "When a unit is dropped for one sample of a mini-batch, what happens to the gradient "
    "of its weights, and how is the update averaged over the batch?"
)
METHOD = (
    "The blog's network (3 inputs f1-f3, 4 hidden ReLU units with dropout p, here 2 output "
    "classes) on a mini-batch of 3 samples. Each sample gets its own mask (by default the "
    "blog's: sample 1 keeps units 2 and 4, sample 2 keeps unit 3, sample 3 keeps units 1, 3 "
    "and 4). droplab.lab.reference.ReferenceMLP computes the per-sample gradient terms by hand and "
    "their average, the update SGD applies; PyTorch autograd on the same weights, inputs and "
    "masks (float64) checks every term."
)

BLOG_MASKS = (
    (0, 1, 0, 1),
    (0, 0, 1, 0),
    (1, 0, 1, 1),
)  # kept units per sample, from the blog


@dataclass(frozen=True)
class Config:
    """Settings of the gradients experiment (all presets are the same: it is instant)."""

    p: float = 0.5  # drop probability of the hidden units
    lr: float = 0.1  # SGD learning rate of the shown update
    masks: str = "blog"  # "blog" (the post's subnetworks) or "sampled" (droplab's)
    seed: int = 34  # weights, inputs, sampled masks (34: kept units' ReLUs all on)

    @classmethod
    def quick(cls) -> Config:
        """Same as the default."""
        return cls()

    @classmethod
    def full(cls) -> Config:
        """Same as the default."""
        return cls()


def _autograd(
    net: ReferenceMLP,
    x: np.ndarray,
    y: np.ndarray,
    masks: np.ndarray,
    factor: np.ndarray,
) -> list[np.ndarray]:
    """Per-sample gradients of every parameter by torch autograd: (batch, *shape) each."""
    params = [
        torch.tensor(a, requires_grad=True)
        for pair in zip(net.weights, net.biases, strict=True)
        for a in pair
    ]
    w0, b0, w1, b1 = params
    per_sample: list[list[np.ndarray]] = [[] for _ in params]
    for i in range(len(x)):
        h = torch.relu(torch.as_tensor(x[i : i + 1]) @ w0.T + b0)
        h = (
            h
            * torch.as_tensor(masks[i : i + 1], dtype=torch.float64)
            * float(factor[i, 0])
        )
        loss = torch.nn.functional.cross_entropy(
            h @ w1.T + b1, torch.as_tensor(y[i : i + 1])
        )
        for slot, grad in zip(
            per_sample, torch.autograd.grad(loss, params), strict=True
        ):
            slot.append(grad.numpy())
    return [np.stack(s) for s in per_sample]


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Forward and backward of one mini-batch; the check against autograd."""
    del jobs
    rng = np.random.default_rng(config.seed)
    x = rng.normal(size=(3, 3))
    y = np.array([0, 1, 0])
    net = ReferenceMLP((3, 4, 2), p=config.p, seed=config.seed)
    given = (
        None if config.masks == "sampled" else [None, np.array(BLOG_MASKS, dtype=bool)]
    )
    if config.masks not in ("blog", "sampled"):
        raise fail(
            "masks",
            config.masks,
            "'blog' or 'sampled'",
            owner="the gradients Config",
            what="field",
        )
    trace = net.forward(x, masks=given)
    grads = net.backward(trace, y)
    mask = np.asarray(trace.masks[1])
    factor = np.asarray(trace.scales[1])
    reference = [
        grads.per_sample_weights[0],
        grads.per_sample_biases[0],
        grads.per_sample_weights[1],
        grads.per_sample_biases[1],
    ]
    auto = _autograd(net, x, y, mask, factor)
    max_diff = max(
        float(np.abs(r - a).max()) for r, a in zip(reference, auto, strict=True)
    )
    dropped = ~mask  # (batch, hidden)
    dropped_terms = np.concatenate([
        grads.per_sample_weights[0][dropped].ravel(),  # incoming weights of dropped units
        grads.per_sample_biases[0][dropped].ravel(),
        grads.per_sample_weights[1].transpose(0, 2, 1)[dropped].ravel(),  # outgoing weights
    ])  # fmt: skip
    # d loss_i / d w_{j, f1}, shape (batch, hidden); + 0.0 turns -0.0 into 0.0
    f1_terms = grads.per_sample_weights[0][:, :, 0] + 0.0
    mean_terms = grads.weights[0][:, 0]
    return {
        "p": config.p,
        "lr": config.lr,
        "masks_source": config.masks,
        "x": x.tolist(),
        "y": y.tolist(),
        "masks": mask.astype(int).tolist(),
        "scale": factor[:, 0].tolist(),
        "f1_terms": f1_terms.tolist(),
        "f1_mean": mean_terms.tolist(),
        "f1_before": net.weights[0][:, 0].tolist(),
        "f1_after": (net.weights[0][:, 0] - config.lr * mean_terms).tolist(),
        "loss": grads.loss,
        "max_abs_diff_autograd": max_diff,
        "dropped_terms": int(dropped_terms.size),
        "dropped_terms_max_abs": float(np.abs(dropped_terms).max())
        if dropped_terms.size
        else 0.0,
    }


def figure(result: dict[str, Any]) -> Any:
    """The three subnetworks' masks and their gradient terms for the f1 weights."""
    from matplotlib.figure import Figure

    masks = np.asarray(result["masks"])
    terms = np.asarray(result["f1_terms"])
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax_mask, ax_terms, ax_mean = fig.subplots(1, 3)
    ax_mask.imshow(masks, cmap="Blues", vmin=0, vmax=1.3)
    limit = max(float(np.abs(terms).max()), 1e-12)
    image = ax_terms.imshow(terms, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(masks.shape[0]):
        for j in range(masks.shape[1]):
            kept = bool(masks[i, j])
            ax_mask.text(j, i, "kept" if kept else "dropped", ha="center", va="center",
                         fontsize=8, color="white" if kept else "black")  # fmt: skip
            strong = abs(terms[i, j]) > 0.6 * limit
            ax_terms.text(j, i, f"{terms[i, j]:.3g}", ha="center", va="center",
                          fontsize=8, color="white" if strong else "black")  # fmt: skip
    for ax, title in (
        (ax_mask, "masks (one subnetwork per sample)"),
        (ax_terms, "dL_i/dw_j (weights from f1)"),
    ):
        ax.set_xticks(
            range(masks.shape[1]), [f"unit {j + 1}" for j in range(masks.shape[1])]
        )
        ax.set_yticks(
            range(masks.shape[0]), [f"sample {i + 1}" for i in range(masks.shape[0])]
        )
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax_terms, shrink=0.8)
    ax_mean.bar(
        [f"w{j + 1}" for j in range(masks.shape[1])], result["f1_mean"], color="#1f5fa8"
    )
    ax_mean.axhline(0, color="k", lw=0.8)
    ax_mean.set_title("batch average (update = -lr x this)", fontsize=10)
    return fig


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks: agreement with autograd and zero terms of dropped units."""
    return [
        {
            "quantity": "max |reference - autograd| over all per-sample terms",
            "value": result["max_abs_diff_autograd"],
            "low": None,
            "high": None,
            "unit": "",
        },
        {
            "quantity": f"max |term| of dropped units ({result['dropped_terms']} terms)",
            "value": result["dropped_terms_max_abs"],
            "low": None,
            "high": None,
            "unit": "",
        },
        {
            "quantity": "mini-batch loss (cross-entropy, mean)",
            "value": result["loss"],
            "low": None,
            "high": None,
            "unit": "",
        },
    ]


def tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per hidden unit: masks, per-sample terms, average and the weight update."""
    masks, terms = result["masks"], result["f1_terms"]
    batch = len(masks)
    columns = ["weight"]
    for i in range(batch):
        columns += [f"sample {i + 1}", f"dL{i + 1}/dw"]
    columns += ["average", "w before", f"w after (lr {result['lr']})"]
    rows = []
    for j in range(len(result["f1_mean"])):
        row: list[Any] = [f"w{j + 1} (f1 -> unit {j + 1})"]
        for i in range(batch):
            row += ["kept" if masks[i][j] else "dropped", terms[i][j]]
        row += [result["f1_mean"][j], result["f1_before"][j], result["f1_after"][j]]
        rows.append(row)
    return [
        {
            "title": "The update of the weights from input f1 (the blog's equations)",
            "columns": columns,
            "rows": rows,
        }
    ]


def answer(result: dict[str, Any]) -> str:
    """Zero terms for dropped units, averaging over the whole batch, agreement with autograd."""
    masks = np.asarray(result["masks"])
    batch = masks.shape[0]
    zero = result["dropped_terms_max_abs"] == 0.0
    agree = result["max_abs_diff_autograd"] <= 1e-10
    if zero:
        s1 = (
            f"A dropped unit contributes exactly 0 to the gradient of its incoming and outgoing weights "
            f"(all {result['dropped_terms']} such terms are 0.0): for that sample the unit is not in the network."
        )
    else:
        s1 = f"Dropped units do NOT give zero gradient terms here (largest {result['dropped_terms_max_abs']:.3g}): a bug."
    kept_counts = masks.sum(axis=0)
    examples = ", ".join(f"unit {j + 1} in {int(k)}" for j, k in enumerate(kept_counts))
    s2 = (
        f"The update averages over all {batch} samples, zeros included, not over the samples that kept the unit "
        f"(kept: {examples} of {batch}), so a unit kept less often moves its weights less."
    )
    s3 = (
        f"The hand-written backprop of droplab.lab.reference agrees with PyTorch autograd to {result['max_abs_diff_autograd']:.1e}."
        if agree
        else f"The hand-written backprop differs from autograd by {result['max_abs_diff_autograd']:.3g}: a bug."
    )
    return " ".join([s1, s2, s3])
