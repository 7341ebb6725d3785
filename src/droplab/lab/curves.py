"""Training with learning curves: per-epoch errors, losses and seconds.

:func:`droplab.lab.training.train_classifier` returns the final model and a short
history; the training questions (which rate, how many epochs, how long) need the
whole curve: training and validation error after every epoch, the test error of
the final model, and the seconds each epoch took. :func:`train_with_curves`
records them from an ``on_epoch`` callback of the lab's one training loop
(:func:`droplab.lab.training.fit`), so a curve and a ``train_classifier`` run of
the same seeds see the same batches. :func:`train_regressor` is the same loop
for a 1-D regression network (MSE loss).

Seconds are measured with ``time.perf_counter`` around the training steps only
(evaluation excluded); they are the one output that is not reproducible.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from droplab._validation import check_int
from droplab.lab.data import Dataset
from droplab.lab.training import fit, load_classification, predict

__all__ = [
    "cross_entropy",
    "load_cached",
    "train_regressor",
    "train_with_curves",
    "warm_up_kernels",
]


def cross_entropy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean softmax cross-entropy (nats) of ``logits`` (N, C) against ``labels`` (N,).

    >>> round(cross_entropy([[0.0, 0.0]], [1]), 4)
    0.6931
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(len(y)), y]))


def _error(logits: npt.NDArray[Any], labels: npt.NDArray[Any]) -> float:
    return float(np.mean(np.argmax(logits, axis=1) != labels))


def train_with_curves(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    train_rows: npt.NDArray[np.int64] | None = None,
    track_test: bool = False,
    penalty: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train a classifier with Adam, recording its curves after every epoch.

    Args:
        model: the network (trained in place, left in evaluation mode).
        data: a classification :class:`~droplab.lab.data.Dataset`.
        epochs: passes over the training rows.
        seed: seed of the shuffling generator.
        batch_size, lr, weight_decay: the optimiser's settings.
        train_rows: train on these rows of ``data.x_train`` only (e.g. a subset
            for the data-size question); all rows when None.
        track_test: also record the test error after every epoch
            (``test_error_curve``), e.g. to report it at the epoch that validation
            would pick (early stopping).
        penalty: a term added to every mini-batch loss (e.g. the regulariser
            of concrete dropout, which learns its rate through it).
        after_step: called after every optimiser step (e.g. a max-norm projection).

    Returns:
        Lists with one entry per epoch: ``train_loss`` (mean mini-batch loss with
        dropout on), ``train_error`` and ``val_error`` (evaluation mode, fractions),
        ``val_loss``, ``epoch_seconds``; and the final model's ``test_error``,
        ``test_loss`` (floats).
    """
    epochs = check_int(epochs, "epochs", low=1, owner="train_with_curves")
    rows = np.arange(len(data.x_train)) if train_rows is None else train_rows
    dtype = next(model.parameters()).dtype
    x_np = data.x_train[rows]
    x = torch.as_tensor(x_np).to(dtype)
    y_np = np.asarray(data.y_train, dtype=np.int64)[rows]
    y = torch.as_tensor(y_np)
    curves: dict[str, Any] = {
        key: []
        for key in (
            "train_loss",
            "train_error",
            "val_error",
            "val_loss",
            "epoch_seconds",
        )
    }
    if track_test:
        curves["test_error_curve"] = []

    def record(epoch: int, train_loss: float, seconds: float) -> None:
        curves["epoch_seconds"].append(seconds)
        curves["train_loss"].append(train_loss)
        curves["train_error"].append(_error(predict(model, x_np), y_np))
        val_logits = predict(model, data.x_val)
        curves["val_error"].append(_error(val_logits, data.y_val))
        curves["val_loss"].append(cross_entropy(val_logits, data.y_val))
        if track_test:
            curves["test_error_curve"].append(
                _error(predict(model, data.x_test), data.y_test)
            )

    fit(model, x, y, nn.CrossEntropyLoss(), epochs=epochs, seed=seed,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, penalty=penalty,
        after_step=after_step, on_epoch=record)  # fmt: skip
    test_logits = predict(model, data.x_test)
    curves["test_error"] = _error(test_logits, data.y_test)
    curves["test_loss"] = cross_entropy(test_logits, data.y_test)
    return curves


def train_regressor(
    model: nn.Module,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
) -> list[float]:
    """Train a regression network with Adam on mean squared error.

    Args:
        model: maps (N, features) to (N, outputs); trained in place, left in eval mode.
        x, y: training inputs (N, features) and targets (N, outputs).
        epochs, seed, batch_size, lr, weight_decay: as in :func:`train_with_curves`.

    Returns:
        The mean training loss (dropout on) of every epoch.
    """
    epochs = check_int(epochs, "epochs", low=1, owner="train_regressor")
    dtype = next(model.parameters()).dtype
    inputs = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(dtype)
    targets = torch.as_tensor(np.asarray(y, dtype=np.float32)).to(dtype)

    def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean((out - target) ** 2)

    return fit(model, inputs, targets, mse, epochs=epochs, seed=seed,
               batch_size=batch_size, lr=lr, weight_decay=weight_decay)  # fmt: skip


@functools.lru_cache(maxsize=8)
def load_cached(
    name: str, seed: int, experiment: str = "a training experiment"
) -> Dataset:
    """A classification data set, :func:`droplab.lab.data.load` ``(name, seed=seed)``,
    loaded once per process.

    Training tasks of one experiment share their data set; generating MNIST-1D
    takes seconds, so each worker process keeps the last few sets it loaded.
    The arrays are shared: treat them as read-only. A regression set (``toy``)
    is refused with a message naming ``experiment``.

    >>> load_cached("toy", 0, "rate")
    Traceback (most recent call last):
    ...
    ValueError: The 'data' argument of rate must be a classification data set (digits, mnist1d or mnist:DIR); got 'toy'.
    """
    return load_classification(name, seed=seed, experiment=experiment)


@functools.cache
def warm_up_kernels() -> None:
    """Run droplab dropout once per scaling rule and sampler, forward and backward.

    The first call of a compiled kernel in a process loads (or compiles) it,
    which takes longer than many training steps; experiments that time their
    training call this first so the first network timed is not charged for it.
    Runs once per process.
    """
    from droplab.nn import Dropout

    # A small and a large input: the kernels take a serial path below 2**13
    # elements and a parallel one above.
    for shape in ((4, 16), (128, 128)):
        x = torch.ones(*shape, requires_grad=True)
        for scale in ("inverted", "realized"):
            for sampler in ("bernoulli", "fixed"):
                Dropout(0.5, seed=0, scale=scale, sampler=sampler)(x).sum().backward()
