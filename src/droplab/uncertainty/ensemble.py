"""The average over all 2^n subnetworks, and what stands in for it: weight scaling, MC-k.

- Srivastava et al., "Dropout: a simple way to prevent neural networks from
  overfitting", JMLR 15, 2014 (weight scaling vs Monte-Carlo averaging, Fig. 11).
  https://jmlr.org/papers/v15/srivastava14a.html
- Baldi and Sadowski, "Understanding dropout", NIPS 2013, and "The dropout
  learning algorithm", Artificial Intelligence 210, 2014 (the normalized weighted
  geometric mean, NWGM). https://doi.org/10.1016/j.artint.2014.02.004

A network with one dropout layer of ``n`` units is an ensemble of ``2^n``
subnetworks, mask ``m`` having probability ``p^(dropped) (1-p)^(kept)`` (or, for
the ``fixed`` sampler, ``1 / C(n, k)`` for each mask keeping exactly ``k``).
For ``n <= 16`` the ensemble's prediction is computed exactly: the network is cut
at its dropout layer, the activations ``h`` reaching it are computed once, and the
rest of the network is run on ``h * m * scale`` for every mask, vectorised over
masks in chunks. Two averages of the subnetworks' softmax outputs are reported:

- the arithmetic mean ``E[softmax(z)]`` (what MC dropout estimates), and
- the NWGM ``softmax(E[z])`` (the geometric mean of the class probabilities,
  renormalised: the log-partition cancels, leaving the softmax of mean logits).

Known answers (Baldi and Sadowski): if the part after dropout is one Linear layer,
``E[z]`` equals the weight-scaled logits exactly, so the NWGM *is* weight scaling.
Everything returned is a float64 NumPy array, ready for JSON and plots.

The exact average uses keep probability ``1 - p``; droplab's Bernoulli masks, hence
:func:`mc_logits`, keep with ``keep_threshold(p) / 2**32``, which differs from it
by less than ``2**-33`` (exactly equal for p = 0, 1/4, 1/2, 3/4, 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from droplab._core.dropout import Dropout as DroplabDropout
from droplab._validation import (
    check_choice,
    check_int,
    check_offset,
    check_seed,
    fail,
)
from droplab.interop.kinds import DROPOUT_TYPES
from droplab.masks import SAMPLERS, fixed_keep_count, make_mask
from droplab.scaling import SCALES, eval_scale, realized_row_scale, train_scale

__all__ = [
    "AveragingErrors",
    "DropoutSite",
    "ExactAverage",
    "averaging_errors",
    "exact_average",
    "mask_probabilities",
    "mc_logits",
    "split_at_dropout",
    "tv_distance",
    "weight_scaling",
]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DropoutSite:
    """A network cut at its only dropout layer: ``model(x) = tail(drop(head(x)))``."""

    head: nn.Module
    tail: nn.Module
    p: float
    scale: str
    sampler: str


@dataclass(frozen=True)
class ExactAverage:
    """The exact ensemble average over every mask, weighted by its probability.

    Shapes are (batch, outputs). ``var_*`` are the variances over masks, i.e. of a
    single Monte-Carlo pass: an MC-k mean has variance ``var / k`` per entry.
    """

    mean_logits: Array  # E[z], the mean network output
    mean_probs: Array  # E[softmax(z)], the arithmetic mean
    nwgm: Array  # softmax(E[z]), Baldi and Sadowski's normalized geometric mean
    var_logits: Array
    var_probs: Array
    n_units: int  # n, the width of the dropout layer
    n_masks: int  # masks with non-zero probability that were evaluated


def split_at_dropout(
    model: nn.Module, *, scale: str | None = None, sampler: str | None = None
) -> DropoutSite:
    """Cut an ``nn.Sequential`` at its single dropout layer.

    ``torch.nn.Dropout`` means ``scale="inverted"``, ``sampler="bernoulli"``;
    droplab's :class:`~droplab.nn.Dropout` brings its own (unshared masks only).
    ``scale`` and ``sampler`` override what the module says.
    """
    owner = "split_at_dropout"
    if not isinstance(model, nn.Sequential):
        raise fail(
            "model",
            type(model).__name__,
            "an nn.Sequential",
            owner=owner,
            kind=TypeError,
        )
    sites = [i for i, m in enumerate(model) if isinstance(m, DROPOUT_TYPES)]
    if len(sites) != 1:
        raise fail(
            "model",
            f"a Sequential with {len(sites)} dropout layers",
            "a Sequential with exactly one dropout layer",
            owner=owner,
        )
    layer = model[sites[0]]
    if type(layer) is nn.Dropout:
        found = ("inverted", "bernoulli")
    elif isinstance(layer, DroplabDropout) and not layer.shared_dims:
        found = (layer.scale, layer.sampler)
    else:
        raise fail(
            "model",
            f"a network with a {type(layer).__name__} layer",
            "a network whose dropout layer is torch.nn.Dropout or "
            "droplab.nn.Dropout without shared_dims",
            owner=owner,
        )
    return DropoutSite(
        head=model[: sites[0]],
        tail=model[sites[0] + 1 :],
        p=float(layer.p),
        scale=check_choice(scale or found[0], "scale", SCALES, owner=owner),
        sampler=check_choice(sampler or found[1], "sampler", SAMPLERS, owner=owner),
    )


def mask_probabilities(n: int, p: float, sampler: str = "bernoulli") -> Array:
    """Probability of each of the ``2^n`` masks; mask ``i`` keeps unit ``j`` iff bit
    ``j`` of ``i`` is set.

    >>> mask_probabilities(2, 0.25)  # masks 00, 10, 01, 11 (unit 0 first)
    array([0.0625, 0.1875, 0.1875, 0.5625])
    >>> mask_probabilities(3, 0.5, "fixed")  # exactly 2 of 3 kept
    array([0.        , 0.        , 0.        , 0.33333333, 0.        ,
           0.33333333, 0.33333333, 0.        ])
    """
    kept = _all_masks(n).sum(axis=1)
    if sampler == "fixed":
        k = fixed_keep_count(n, p)
        return np.where(kept == k, 1.0 / math.comb(n, k), 0.0)
    return (1.0 - p) ** kept * p ** (n - kept)  # 0.0 ** 0 == 1: p in {0, 1} is fine


def _all_masks(n: int) -> npt.NDArray[np.bool_]:
    codes = np.arange(2**n, dtype=np.int64)[:, None]
    return ((codes >> np.arange(n)) & 1).astype(bool)  # (2^n, n)


def _factors(masks: npt.NDArray[np.bool_], site: DropoutSite) -> Array:
    """``mask * scale`` for each row: what multiplies ``h`` in training."""
    if site.scale == "realized":
        scale = realized_row_scale(masks.sum(axis=-1), masks.shape[-1])[..., None]
    else:
        scale = np.float64(train_scale(site.p, site.scale))
    return masks * scale


class _Eval:
    """Run a model in eval mode without gradients; restore every module's mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = [m.training for m in model.modules()]

    def __enter__(self) -> None:
        self.grad = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        torch.set_grad_enabled(self.grad)
        for m, mode in zip(self.model.modules(), self.modes, strict=True):
            m.training = mode


def _tail_on(site: DropoutSite, h: torch.Tensor, factors: Array) -> torch.Tensor:
    """Tail outputs for each factor row set: factors (m, batch, n) -> (m, batch, c)."""
    scaled = h.unsqueeze(0) * torch.from_numpy(factors).to(h.device, h.dtype)
    out = site.tail(scaled.reshape(-1, h.shape[1]))
    return out.reshape(factors.shape[0], h.shape[0], -1).to("cpu", torch.float64)


def _head(site: DropoutSite, x: Any) -> torch.Tensor:
    like = next(itertools.chain(site.head.parameters(), site.tail.parameters()), None)
    if like is None:
        h = site.head(torch.as_tensor(x))
    else:  # arrays and tensors follow the model's dtype and device
        h = site.head(torch.as_tensor(x, dtype=like.dtype, device=like.device))
    if h.ndim != 2:
        raise fail(
            "x",
            f"an input reaching the dropout layer as shape {tuple(h.shape)}",
            "an input that reaches the dropout layer as (batch, units)",
        )
    return h


def exact_average(
    model: nn.Module,
    x: Any,
    *,
    scale: str | None = None,
    sampler: str | None = None,
    max_units: int = 16,
    chunk_rows: int = 2**15,
) -> ExactAverage:
    """The exact average of ``model``'s output over all masks of its dropout layer.

    Args:
        model: an ``nn.Sequential`` with one dropout layer (see
            :func:`split_at_dropout`, which also explains ``scale`` and ``sampler``).
        x: a batch of inputs (tensor or array) in the model's dtype.
        max_units: the largest dropout layer allowed (2^n tail evaluations).
        chunk_rows: at most this many (mask, sample) rows go through the tail at once.

    Returns:
        An :class:`ExactAverage`; the model's train/eval modes are left as found.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(0.5),
        ...                     nn.Linear(3, 2)).double()
        >>> avg = exact_average(net, torch.ones(4, 2, dtype=torch.float64))
        >>> avg.n_masks, avg.mean_probs.shape
        (8, (4, 2))
        >>> bool(np.allclose(avg.nwgm, weight_scaling(net, torch.ones(4, 2,
        ...      dtype=torch.float64))[1], atol=1e-15))  # one Linear after dropout
        True
    """
    site = split_at_dropout(model, scale=scale, sampler=sampler)
    max_units = check_int(max_units, "max_units", low=1, high=31, owner="exact_average")
    chunk_rows = check_int(chunk_rows, "chunk_rows", low=1, owner="exact_average")
    with _Eval(model):
        h = _head(site, x)
        n = h.shape[1]
        if n > max_units:
            raise fail(
                "model",
                f"a network whose dropout layer has {n} units",
                f"a network whose dropout layer has at most max_units={max_units} "
                "units (2^n subnetworks are evaluated; raise max_units, or "
                "estimate with mc_logits)",
                owner="exact_average",
            )
        weights = mask_probabilities(n, site.p, site.sampler)
        used = np.nonzero(weights > 0)[0]
        masks = _all_masks(n)[used]
        weights = weights[used]
        totals: list[torch.Tensor] = []  # sums of w*z, w*z^2, w*prob, w*prob^2
        step = max(1, chunk_rows // h.shape[0])
        for start in range(0, len(used), step):
            factors = _factors(masks[start : start + step], site)[:, None, :]
            z = _tail_on(site, h, factors)  # (masks, batch, outputs)
            w = torch.from_numpy(weights[start : start + step])  # (masks,)
            prob = torch.softmax(z, dim=-1)
            chunk = [torch.tensordot(w, t, 1) for t in (z, z * z, prob, prob * prob)]
            if totals:
                chunk = [a + b for a, b in zip(totals, chunk, strict=True)]
            totals = chunk
    mean_z, mean_z2, mean_p, mean_p2 = (t.numpy() for t in totals)
    return ExactAverage(
        mean_logits=mean_z,
        mean_probs=mean_p,
        nwgm=torch.softmax(torch.from_numpy(mean_z), dim=-1).numpy(),
        var_logits=np.maximum(mean_z2 - mean_z**2, 0.0),  # E[X^2] - E[X]^2 >= 0
        var_probs=np.maximum(mean_p2 - mean_p**2, 0.0),
        n_units=n,
        n_masks=len(used),
    )


def weight_scaling(
    model: nn.Module, x: Any, *, scale: str | None = None
) -> tuple[Array, Array]:
    """(logits, probabilities) of the deterministic network: every unit kept, times
    the evaluation factor (``1 - p`` under ``classic``, else 1; with ``inverted``
    this is ``model.eval()(x)``). This is Srivastava et al.'s weight scaling."""
    site = split_at_dropout(model, scale=scale)
    with _Eval(model):
        h = _head(site, x)
        factor = np.full((1, 1, h.shape[1]), eval_scale(site.p, site.scale))
        z = _tail_on(site, h, factor)[0]
    return z.numpy(), torch.softmax(z, dim=-1).numpy()


def mc_logits(
    model: nn.Module,
    x: Any,
    k: int,
    *,
    seed: int,
    offset: int = 0,
    scale: str | None = None,
    sampler: str | None = None,
    chunk_rows: int = 2**15,
) -> Array:
    """Logits of ``k`` Monte-Carlo dropout passes, shape (k, batch, outputs).

    Pass ``t`` drops the units of ``make_mask((batch, n), p, seed=seed,
    offset=offset + t * batch * n)``: what ``k`` calls of a droplab
    :class:`~droplab.nn.Dropout` owning stream ``seed`` at ``offset`` draw.
    """
    site = split_at_dropout(model, scale=scale, sampler=sampler)
    k = check_int(k, "k", low=1, owner="mc_logits")
    seed = check_seed(seed, owner="mc_logits")
    offset = check_offset(offset, owner="mc_logits")
    chunk_rows = check_int(chunk_rows, "chunk_rows", low=1, owner="mc_logits")
    out = []
    with _Eval(model):
        h = _head(site, x)
        batch, n = h.shape
        step = max(1, chunk_rows // batch)
        for start in range(0, k, step):
            passes = min(step, k - start)
            masks = make_mask(
                (passes * batch, n),
                site.p,
                seed=seed,
                offset=offset + start * batch * n,
                sampler=site.sampler,
            )
            factors = _factors(masks, site).reshape(passes, batch, n)
            out.append(_tail_on(site, h, factors).numpy())
    return np.concatenate(out)


def tv_distance(probs: npt.ArrayLike, target: npt.ArrayLike) -> Array:
    """Total-variation distance ``0.5 * sum_c |p_c - q_c|`` per row (last axis).

    >>> tv_distance([[0.5, 0.5], [1.0, 0.0]], [[0.25, 0.75], [1.0, 0.0]])
    array([0.25, 0.  ])
    """
    diff = np.asarray(probs, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return 0.5 * np.abs(diff).sum(axis=-1)


@dataclass(frozen=True)
class AveragingErrors:
    """Mean total-variation distance (over the batch) of each stand-in from the
    exact arithmetic mean ``E[softmax(z)]``."""

    ks: list[int]
    mc: list[float]  # MC-k: mean of the k passes' softmax outputs
    mc_geometric: list[float]  # softmax of the mean of the k passes' logits
    weight_scaling: float
    nwgm: float  # softmax(E[z]): the k -> infinity limit of mc_geometric
    exact: ExactAverage


def averaging_errors(
    model: nn.Module,
    x: Any,
    ks: Sequence[int],
    *,
    seed: int,
    offset: int = 0,
    max_units: int = 16,
) -> AveragingErrors:
    """Error vs the exact average, as a function of the number of MC passes ``k``.

    One run of ``max(ks)`` passes; MC-k uses its first ``k`` (running means), so
    the curve is one realisation, as an MC user would see it.
    """
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise fail(
            "ks",
            ks,
            "a non-empty sequence of positive integers",
            owner="averaging_errors",
            kind=TypeError,
        )
    counts = [check_int(k, "ks", low=1, owner="averaging_errors") for k in ks]
    exact = exact_average(model, x, max_units=max_units)
    z = mc_logits(model, x, max(counts), seed=seed, offset=offset)
    probs = torch.softmax(torch.from_numpy(z), dim=-1).numpy()
    run_p = np.cumsum(probs, axis=0)
    run_z = np.cumsum(z, axis=0)
    target = exact.mean_probs

    def err(p: npt.ArrayLike) -> float:
        return float(tv_distance(p, target).mean())

    geo = [
        torch.softmax(torch.from_numpy(run_z[k - 1] / k), -1).numpy() for k in counts
    ]
    return AveragingErrors(
        ks=counts,
        mc=[err(run_p[k - 1] / k) for k in counts],
        mc_geometric=[err(g) for g in geo],
        weight_scaling=err(weight_scaling(model, x)[1]),
        nwgm=err(exact.nwgm),
        exact=exact,
    )
