"""Metrics for predictive uncertainty: regression and classification.

- Gaussian test log-likelihood of an MC-dropout predictive (Gal & Ghahramani,
  "Dropout as a Bayesian Approximation", ICML 2016, https://arxiv.org/abs/1506.02142):
  a mixture of T Gaussians of precision ``tau`` centred on the T passes.
- Expected calibration error (Naeini et al., AAAI 2015; Guo et al., "On
  Calibration of Modern Neural Networks", ICML 2017), Brier score (Brier, 1950).
- Predictive entropy, mutual information (BALD: Houlsby et al., 2011) and
  variation ratio (Freeman, 1965) of MC samples of class probabilities.

Inputs are array-likes or tensors; they are computed in float64 NumPy and the
results are Python floats (or float64 arrays, one value per point).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp

from droplab._validation import check_int, fail

__all__ = [
    "brier_score",
    "expected_calibration_error",
    "gaussian_log_likelihood",
    "gaussian_log_likelihood_per_point",
    "mutual_information",
    "negative_log_likelihood",
    "predictive_entropy",
    "rmse",
    "variation_ratio",
]

FloatArray = npt.NDArray[np.float64]


def _array(value: Any, name: str, owner: str) -> FloatArray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(
            name, value, "an array of real numbers", owner=owner, kind=TypeError
        ) from None
    if not np.isfinite(array).all():
        raise fail(
            name, "an array with non-finite values", "finite numbers", owner=owner
        )
    return array


def _labels(value: Any, n: int, classes: int, owner: str) -> npt.NDArray[np.int64]:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    labels = np.asarray(value)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise fail(
            "labels",
            f"array of shape {labels.shape} and dtype {labels.dtype}",
            f"an integer array of shape ({n},)",
            owner=owner,
        )
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise fail("labels", labels, f"class indices in [0, {classes})", owner=owner)
    return labels.astype(np.int64)


def _probabilities(value: Any, owner: str, ndim: int) -> FloatArray:
    probs = _array(value, "probs", owner)
    shape = "(N, K)" if ndim == 2 else "(T, N, K)"
    if probs.ndim != ndim:
        raise fail(
            "probs",
            f"array of shape {probs.shape}",
            f"an array of shape {shape}",
            owner=owner,
        )
    if (probs < 0).any() or not np.allclose(probs.sum(-1), 1.0, rtol=0, atol=1e-6):
        raise fail(
            "probs",
            "rows that are not probability vectors",
            "non-negative rows summing to 1",
            owner=owner,
        )
    return probs


def gaussian_log_likelihood(samples: Any, targets: Any, tau: float) -> float:
    """Mean test log-likelihood of the MC predictive of Gal & Ghahramani (2016).

    The average over points of :func:`gaussian_log_likelihood_per_point`.
    Samples, targets and ``tau`` must be in the same units (the paper: original
    target units).

    Args:
        samples: (T, N) or (T, N, 1): the T stochastic predictions of each point.
        targets: (N,) or (N, 1).
        tau: model precision, > 0.

    >>> round(gaussian_log_likelihood([[0.0]], [0.0], tau=1.0), 6)  # N(0; 0, 1)
    -0.918939
    """
    per_point = _gaussian_per_point(samples, targets, tau, "gaussian_log_likelihood")
    return float(np.mean(per_point))


def gaussian_log_likelihood_per_point(
    samples: Any, targets: Any, tau: float
) -> FloatArray:
    """Each point's log-likelihood under the MC predictive, shape (N,).

    Per point ``n``: ``logsumexp_t(-tau/2 (y_n - yhat_tn)^2) - log T - log(2 pi)/2
    + log(tau)/2``, the log density of a uniform mixture of the T Gaussians
    N(yhat_t, 1/tau). Arguments as :func:`gaussian_log_likelihood`, whose value
    is the mean of these.

    >>> gaussian_log_likelihood_per_point([[0.0, 1.0]], [0.0, 0.0], tau=1.0).round(6)
    array([-0.918939, -1.418939])
    """
    return _gaussian_per_point(
        samples, targets, tau, "gaussian_log_likelihood_per_point"
    )


def _gaussian_per_point(
    samples: Any, targets: Any, tau: float, owner: str
) -> FloatArray:
    """:func:`gaussian_log_likelihood_per_point`, its errors naming ``owner``."""
    predictions = _array(samples, "samples", owner)
    y = _array(targets, "targets", owner).reshape(-1)
    if predictions.ndim == 3 and predictions.shape[-1] == 1:
        predictions = predictions[..., 0]
    if predictions.ndim != 2 or predictions.shape[1] != y.shape[0]:
        raise fail(
            "samples",
            f"array of shape {predictions.shape}",
            f"an array of shape (T, {y.shape[0]}) matching the targets",
            owner=owner,
        )
    if (
        isinstance(tau, bool)
        or not isinstance(tau, (int, float))
        or not tau > 0
        or math.isinf(tau)
    ):
        raise fail("tau", tau, "a positive finite real number", owner=owner)
    passes = predictions.shape[0]
    per_point = (
        logsumexp(-0.5 * tau * (y[None, :] - predictions) ** 2, axis=0)
        - math.log(passes)
        - 0.5 * math.log(2.0 * math.pi)
        + 0.5 * math.log(tau)
    )
    return np.asarray(per_point, dtype=np.float64)


def rmse(predictions: Any, targets: Any) -> float:
    """Root mean squared error ``sqrt(mean((y - yhat)^2))`` (shapes must match
    after flattening trailing size-1 dims).

    >>> rmse([1.0, 3.0], [0.0, 0.0])
    2.23606797749979
    """
    yhat = _array(predictions, "predictions", "rmse").reshape(-1)
    y = _array(targets, "targets", "rmse").reshape(-1)
    if yhat.shape != y.shape:
        raise fail(
            "predictions",
            f"{yhat.size} values",
            f"{y.size} values, one per target",
            owner="rmse",
        )
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean ``-log p(label)`` of predicted class probabilities (N, K), in nats.

    Probabilities are clipped at 1e-300 so a confident miss is large, not inf.

    >>> round(negative_log_likelihood([[0.5, 0.5], [0.9, 0.1]], [0, 0]), 6)
    0.399254
    """
    owner = "negative_log_likelihood"
    p = _probabilities(probs, owner, 2)
    y = _labels(labels, p.shape[0], p.shape[1], owner)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-300))))


def brier_score(probs: Any, labels: Any) -> float:
    """Brier score: mean over points of ``sum_k (p_k - 1[k = label])^2``.

    This is Brier's original multi-class score, in [0, 2] (some libraries divide
    by K or keep only the true class's term).

    >>> brier_score([[1.0, 0.0], [0.5, 0.5]], [0, 1])
    0.25
    """
    owner = "brier_score"
    p = _probabilities(probs, owner, 2)
    y = _labels(labels, p.shape[0], p.shape[1], owner)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins.

    The confidence of a point is its largest probability, its prediction the
    arg-max (first on ties). Bin ``b`` holds confidences in ``((b-1)/M, b/M]``
    (the first also holds 0). ECE = ``sum_b |B_b|/N * |accuracy(B_b) -
    mean confidence(B_b)|``.

    >>> expected_calibration_error([[0.8, 0.2], [0.8, 0.2]], [0, 1], n_bins=10)
    0.30000000000000004
    """
    owner = "expected_calibration_error"
    p = _probabilities(probs, owner, 2)
    y = _labels(labels, p.shape[0], p.shape[1], owner)
    bins = check_int(n_bins, "n_bins", low=1, owner=owner)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            total += members.sum() / len(y) * gap
    return float(total)


def _entropy(p: FloatArray) -> FloatArray:
    logs = np.log(np.where(p > 0, p, 1.0))  # 0 log 0 = 0
    return -np.sum(p * logs, axis=-1)


def predictive_entropy(prob_samples: Any) -> FloatArray:
    """``H[mean_t p_t]`` per point, in nats, from samples of shape (T, N, K).

    >>> predictive_entropy([[[1.0, 0.0]], [[0.0, 1.0]]]).round(6).tolist()
    [0.693147]
    """
    p = _probabilities(prob_samples, "predictive_entropy", 3)
    return _entropy(p.mean(axis=0))


def mutual_information(prob_samples: Any) -> FloatArray:
    """BALD: ``H[mean_t p_t] - mean_t H[p_t]`` per point, samples (T, N, K).

    It is the disagreement between passes: zero when every pass gives the same
    vector, however uncertain that vector is.

    >>> mutual_information([[[0.5, 0.5]], [[0.5, 0.5]]]).tolist()
    [0.0]
    """
    p = _probabilities(prob_samples, "mutual_information", 3)
    return np.maximum(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0)


def variation_ratio(prob_samples: Any) -> FloatArray:
    """``1 - f/T`` per point, ``f`` the count of passes voting for the modal class.

    >>> variation_ratio([[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]]]).round(6).tolist()
    [0.333333]
    """
    p = _probabilities(prob_samples, "variation_ratio", 3)
    votes = np.eye(p.shape[2])[p.argmax(axis=2)].sum(axis=0)  # (N, K)
    return 1.0 - votes.max(axis=1) / p.shape[0]
