"""Small torch MLPs for the experiments: build, train (:func:`fit`, the one loop), predict.

Every function is deterministic given its seeds and leaves torch's and NumPy's
global random state untouched (initialisation runs under
``torch.random.fork_rng``; shuffling uses its own NumPy generator; dropout
layers are :class:`droplab.nn.Dropout` with their own seeds). Run it under
:func:`droplab.execution.one_thread` (``parallel_map`` does) for results that
do not depend on the number of jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from droplab._validation import fail
from droplab.lab.data import Dataset, load
from droplab.nn import Dropout
from droplab.rng import derive_seed

__all__ = [
    "accuracy",
    "build_mlp",
    "fit",
    "load_classification",
    "max_norm_",
    "predict",
    "train_classifier",
]


def load_classification(name: str, *, seed: int, experiment: str) -> Dataset:
    """:func:`droplab.lab.data.load`, refusing regression sets with a clear message.

    >>> load_classification("toy", seed=0, experiment="averaging")
    Traceback (most recent call last):
    ...
    ValueError: The 'data' argument of averaging must be a classification data set (digits, mnist1d or mnist:DIR); got 'toy'.
    """
    data = load(name, seed=seed)
    if not data.n_classes:
        raise fail(
            "data",
            name,
            "a classification data set (digits, mnist1d or mnist:DIR)",
            owner=experiment,
        )
    return data


def build_mlp(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    *,
    p: float,
    seed: int,
    p_input: float = 0.0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
) -> nn.Sequential:
    """``[Dropout(p_input)] -> (Linear -> ReLU -> Dropout(p)) * len(hidden) -> Linear``.

    Dropout layers with rate 0 are left out. Weights use PyTorch's default
    initialisation under ``torch.manual_seed(seed)`` (in a forked RNG); dropout
    layer ``i`` gets the seed ``derive_seed(seed, i)``.

    Examples:
        >>> build_mlp(4, [8], 3, p=0.5, seed=0)  # doctest: +ELLIPSIS
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): ReLU()
          (2): Dropout(p=0.5, inplace=False, seed=..., offset=0)
          (3): Linear(in_features=8, out_features=3, bias=True)
        )
    """
    layers: list[nn.Module] = []
    site = 0

    def drop(rate: float) -> None:
        nonlocal site
        if rate > 0:
            layers.append(
                Dropout(
                    rate, seed=derive_seed(seed, site), scale=scale, sampler=sampler
                )
            )
        site += 1

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        drop(p_input)
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            drop(p)
            width = h
        layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def max_norm_(model: nn.Module, limit: float) -> None:
    """Clip, in place, every hidden unit's incoming weight vector to norm ``limit``.

    The max-norm constraint of Srivastava et al. (2014, Sec. 5.1): after each
    update, a row of a ``Linear`` weight (the weights into one unit) whose L2
    norm exceeds ``limit`` is scaled back onto the ball; shorter rows are left
    alone. Every ``Linear`` layer of ``model`` is constrained, the output
    layer included.

    Examples:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> max_norm_(nn.Sequential(layer), 1.0)
        >>> [round(v, 4) for v in layer.weight[0].tolist()]
        [0.6, 0.8]
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(
                    torch.renorm(module.weight, p=2, dim=0, maxnorm=limit)
                )


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def predict(
    model: nn.Module, x: npt.ArrayLike, *, batch: int = 4096
) -> npt.NDArray[np.float32]:
    """The model's outputs (logits) in evaluation mode, as a NumPy array."""
    was_training = model.training
    model.eval()
    inputs = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(_dtype(model))
    try:
        with torch.no_grad():
            out = [model(inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
    finally:
        model.train(was_training)
    return torch.cat(out).float().numpy()


def accuracy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Fraction of rows whose largest logit is at the label."""
    return float(np.mean(np.argmax(np.asarray(logits), axis=1) == np.asarray(labels)))


EpochCallback = Callable[[int, float, float], None]


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    penalty: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[float]:
    """The lab's one seeded training loop: Adam on mini-batches of a seeded shuffle.

    Every experiment, the curves of :mod:`droplab.lab.curves` and the sweep
    train through this loop, so runs with the same seeds see the same batches.
    Epoch ``e`` visits the rows in the order of the ``e``-th permutation of
    ``numpy.random.default_rng(seed)``, ``batch_size`` rows at a time, in
    training mode.

    Args:
        model: trained in place; left in evaluation mode.
        x, y: all training inputs and targets, as tensors of the model's dtype
            (targets as the loss wants them).
        loss_fn: ``loss_fn(model(x[rows]), y[rows])``, a scalar mean over the rows.
        epochs, seed, batch_size, lr, weight_decay: the loop's and Adam's settings.
        penalty: a term added to every mini-batch loss (not to the recorded loss),
            e.g. the regulariser through which concrete dropout learns its rate.
        on_epoch: called after every epoch with ``(epoch, mean training loss,
            seconds of the epoch's steps)``: the place to record curves.

    Returns:
        The mean mini-batch loss (dropout on) of every epoch.
    """
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for epoch in range(epochs):
        model.train()
        clock = time.perf_counter()
        order = torch.as_tensor(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            total += float(loss.detach()) * len(index)
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
        seconds = time.perf_counter() - clock
        losses.append(total / len(x))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1], seconds)
    model.eval()
    return losses


def train_classifier(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
) -> dict[str, Any]:
    """Train with Adam on softmax cross-entropy; returns the per-epoch history.

    Returns:
        ``{"train_loss": [...], "val_accuracy": [...]}`` (one entry per epoch),
        the model trained in place and left in evaluation mode.
    """
    x = torch.as_tensor(data.x_train).to(_dtype(model))
    y = torch.as_tensor(np.asarray(data.y_train, dtype=np.int64))
    history: dict[str, list[float]] = {"train_loss": [], "val_accuracy": []}

    def record(epoch: int, train_loss: float, seconds: float) -> None:
        history["train_loss"].append(train_loss)
        history["val_accuracy"].append(accuracy(predict(model, data.x_val), data.y_val))

    fit(model, x, y, nn.CrossEntropyLoss(), epochs=epochs, seed=seed,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, on_epoch=record)  # fmt: skip
    return history
