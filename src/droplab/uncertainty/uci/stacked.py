"""Train many small UCI networks at once: stacked weights, one batched step.

The protocol of :mod:`droplab.uncertainty.uci` trains 13 networks per split (12 grid cells
and the retrain) on a few hundred rows each. One such network is far too small
to keep even one core busy: a training step is mostly Python and dispatch. Here
``K`` networks of the same shape are trained together: their weights are stacked
into ``(K, ...)`` tensors, every step runs one batched matrix product per layer
(``torch.baddbmm``), one Adam update (element-wise, so each network's update is
exactly its own) and one droplab dropout call per run of networks that share a
dropout rate. Each network keeps its own data, initial weights, data order,
dropout rate and weight decay, so the result is the one of training it alone.

Independence from the batch. A network is named by a *slot* ``u`` (see
:func:`slot`), which depends only on its split, its grid cell and the settings,
never on which other networks are in the same call. The dropout mask of network
``u`` at step ``s`` of layer ``l`` is the stretch of the Philox stream
``stream_seed(seed, l, STREAM_TAG)`` starting at element
``s * U * batch_size * F + u * B * F`` (``U`` slots, ``F`` the layer's width,
``B <= batch_size`` the rows of that step): the stretches of different slots
and steps never overlap, and a network gets the same masks whether it is
trained alone or with others. Initial weights come from ``build_network``'s
generator and the data order from a per-network generator, both seeded by the
network's own seed. Tests check that training alone and stacked agree.

Interruption. With a ``checkpoint`` path the whole training state (epoch,
weights, Adam's moments, the data-order generators) is written atomically
every ``checkpoint_seconds``; a call with the same networks and settings resumes
from it, and the result equals an uninterrupted run (the masks depend on the
step number only).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from droplab._core.dropout import Dropout
from droplab._core.op import MASKED_SCALE
from droplab.execution import write_atomically
from droplab.rng import STREAM_TAGS, stream_seed

__all__ = ["Job", "build_network", "slot", "train_stacked"]

# Third word of the dropout streams of stacked training (two layers: 0 and 1).
STREAM_TAG = STREAM_TAGS["uci_train"]


@dataclass(frozen=True)
class Job:
    """One network to train: its data (standardised), its settings, its names.

    ``slot`` places its dropout masks in the shared stream (see :func:`slot`);
    ``seed`` seeds its initial weights, its data order and its MC streams.
    """

    x: np.ndarray  # (N, D) inputs
    y: np.ndarray  # (N,) target
    p: float  # dropout rate
    tau: float  # model precision, in the weight decay
    seed: int
    slot: int


def slot(rate_index: int, split: int, cell: int, *, splits: int, cells: int) -> int:
    """The slot of a network: ``(rate_index * splits + split) * cells + cell``.

    Networks that share a dropout rate and come from consecutive splits get
    consecutive slots, so a stacked call draws their masks in one dropout call.

    >>> slot(1, 2, 0, splits=20, cells=3)
    66
    """
    return (rate_index * splits + split) * cells + cell


def build_network(
    n_features: int, n_hidden: int, p: float, seed: int
) -> torch.nn.Sequential:
    """Dropout -> Linear(n_features, n_hidden) -> ReLU -> Dropout -> Linear(n_hidden, 1).

    Weights are Glorot-uniform and biases zero (Keras's defaults, as in the
    paper's code), drawn from a generator seeded by ``seed``; each dropout
    module owns a stream derived from ``seed`` (used by MC prediction).
    """
    generator = torch.Generator().manual_seed(seed % 2**63)
    hidden = torch.nn.Linear(n_features, n_hidden)
    output = torch.nn.Linear(n_hidden, 1)
    for layer in (hidden, output):
        torch.nn.init.xavier_uniform_(layer.weight, generator=generator)
        torch.nn.init.zeros_(layer.bias)
    return torch.nn.Sequential(
        Dropout(p, seed=stream_seed(seed, 0, 1)),
        hidden,
        torch.nn.ReLU(),
        Dropout(p, seed=stream_seed(seed, 1, 1)),
        output,
    )


def _linears(net: torch.nn.Sequential) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """The hidden and output layers of a :func:`build_network` network."""
    hidden, output = net[1], net[4]
    if not (
        isinstance(hidden, torch.nn.Linear) and isinstance(output, torch.nn.Linear)
    ):
        raise TypeError(f"not a network of build_network: {net}")  # pragma: no cover
    return hidden, output


def _runs(jobs: Sequence[Job]) -> list[tuple[int, int, float, int]]:
    """Maximal runs ``(start, stop, p, first slot)`` of consecutive jobs with
    consecutive slots and one dropout rate (jobs are sorted by slot)."""
    runs: list[tuple[int, int, float, int]] = []
    for k, job in enumerate(jobs):
        if runs:
            start, _, p, first = runs[-1]
            if job.p == p and job.slot == first + (k - start):
                runs[-1] = (start, k + 1, p, first)
                continue
        runs.append((k, k + 1, job.p, job.slot))
    return runs


def _gradients(
    params: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    regs: torch.Tensor,
    scales: torch.Tensor,
    drop: Callable[[torch.Tensor, int], torch.Tensor],
) -> list[torch.Tensor]:
    """Gradients of every network's loss with respect to its own weights.

    ``params`` = ``w1 (K, D, H)``, ``b1 (K, 1, H)``, ``w2 (K, 1, H)``, ``b2
    (K, 1, 1)``; ``x (K, B, D)``, ``y (K, B)``; ``regs`` and ``scales`` (K,)
    the weight decays and dropout scales 1/(1-p); ``drop(h, layer)`` applies
    that layer's dropout of this step in place. Written out by hand (one
    hidden layer) because autograd's batched products with an output of width
    1 cost several times more here; a test checks them against autograd.
    """
    w1, b1, w2, b2 = params
    rows = x.shape[1]
    dropped_x = drop(x, 0)
    dropped_h = drop(torch.relu(torch.baddbmm(b1, dropped_x, w1)), 1)
    error = (dropped_h * w2).sum(dim=2) + b2[:, :, 0] - y  # (K, B)
    grad_out = error * (2.0 / rows)
    grad_w2 = (
        torch.bmm(grad_out.unsqueeze(1), dropped_h) + 2.0 * regs.view(-1, 1, 1) * w2
    )
    grad_b2 = grad_out.sum(dim=1).view(-1, 1, 1)
    # Through the hidden dropout and the ReLU: a unit passes the gradient, times
    # the dropout scale, exactly where its dropped output is positive.
    grad_pre = torch.ops.aten.threshold_backward(
        grad_out.unsqueeze(2) * (w2 * scales.view(-1, 1, 1)), dropped_h, 0.0
    )
    grad_w1 = (
        torch.bmm(dropped_x.transpose(1, 2), grad_pre) + 2.0 * regs.view(-1, 1, 1) * w1
    )
    grad_b1 = grad_pre.sum(dim=1, keepdim=True)
    return [grad_w1, grad_b1, grad_w2, grad_b2]


def _fingerprint(jobs: Sequence[Job], config: dict[str, Any]) -> str:
    """A hash of everything that defines a stacked run (data included)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for job in jobs:
        digest.update(json.dumps([job.p, job.tau, job.seed, job.slot]).encode())
        digest.update(np.ascontiguousarray(job.x, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(job.y, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _save_atomically(path: Path, state: dict[str, Any]) -> None:
    write_atomically(path, lambda stream: torch.save(state, stream))


def train_stacked(
    jobs: Sequence[Job],
    *,
    epochs: int,
    n_hidden: int,
    slots: int,
    seed: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    lengthscale: float = 1e-2,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 60.0,
    stop_after_epochs: int | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> list[torch.nn.Module]:
    """Train every job's network; returns them (in ``jobs`` order) in eval mode.

    All jobs must have the same number of rows and features. ``slots`` is the
    number of slots of the whole protocol (an upper bound of every job's slot
    plus one) and ``seed`` the protocol's seed: together they lay out the
    dropout streams (module docstring). Loss per network: mean squared error
    plus ``reg * sum(W**2)`` over both weight matrices, ``reg = lengthscale**2
    * (1 - p) / (2 * N * tau)``; Adam; ``epochs`` passes over the rows in a
    fresh random order, in batches of ``batch_size``.

    ``on_epoch(done, epochs)`` is called after every epoch (progress).
    ``stop_after_epochs`` ends the call early (after saving a checkpoint) and
    returns an empty list: it exists to test the resume.
    """
    if not jobs:
        return []
    order = sorted(range(len(jobs)), key=lambda k: jobs[k].slot)
    ordered = [jobs[k] for k in order]
    slot_list = [job.slot for job in ordered]
    if (
        len(set(slot_list)) != len(slot_list)
        or not 0 <= slot_list[0] <= slot_list[-1] < slots
    ):
        raise ValueError(
            f"The jobs' slots of train_stacked must be distinct and in [0, slots={slots}); "
            f"got {slot_list}."
        )
    for job in ordered:
        if not (0.0 <= job.p < 1.0 and job.tau > 0.0):
            raise ValueError(
                f"Every job of train_stacked needs a dropout rate p in [0, 1) and a "
                f"tau > 0; got p={job.p!r}, tau={job.tau!r} (slot {job.slot})."
            )
    shapes = {job.x.shape for job in ordered}
    if len(shapes) != 1 or any(job.y.shape != (job.x.shape[0],) for job in ordered):
        raise ValueError(
            f"The jobs of train_stacked must share one (rows, features) shape with "
            f"a target of (rows,); got inputs {sorted(shapes)}."
        )
    rows, features = ordered[0].x.shape
    count = len(ordered)
    inputs = torch.as_tensor(
        np.concatenate([job.x for job in ordered]), dtype=torch.float32
    )
    targets = torch.as_tensor(
        np.concatenate([job.y for job in ordered]), dtype=torch.float32
    )
    networks = [build_network(features, n_hidden, job.p, job.seed) for job in ordered]
    layers = [_linears(net) for net in networks]
    w1 = torch.stack([hidden.weight.detach().t() for hidden, _ in layers]).contiguous()
    b1 = torch.stack([hidden.bias.detach() for hidden, _ in layers]).unsqueeze(1)
    w2 = torch.stack([output.weight.detach() for _, output in layers])  # (K, 1, H)
    b2 = torch.stack([output.bias.detach() for _, output in layers]).unsqueeze(1)
    params = [t.clone() for t in (w1, b1, w2, b2)]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    regs = torch.tensor(
        [lengthscale**2 * (1.0 - job.p) / (2.0 * rows * job.tau) for job in ordered],
        dtype=torch.float32,
    )
    scales = torch.tensor([1.0 / (1.0 - job.p) for job in ordered], dtype=torch.float32)
    generators = [
        torch.Generator().manual_seed(stream_seed(job.seed, 2, 1) % 2**63)
        for job in ordered
    ]
    runs = _runs(ordered)
    layer_seeds = [stream_seed(seed, layer, STREAM_TAG) for layer in (0, 1)]
    steps_per_epoch = -(-rows // batch_size)
    first_epoch = 0
    path = Path(checkpoint) if checkpoint is not None else None
    config = {
        "epochs": epochs, "n_hidden": n_hidden, "slots": slots, "seed": seed,
        "batch_size": batch_size, "learning_rate": learning_rate,
        "lengthscale": lengthscale,
    }  # fmt: skip
    fingerprint = _fingerprint(ordered, config)
    if path is not None and path.is_file():
        state = torch.load(path, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            first_epoch = int(state["epoch"])
            with torch.no_grad():
                for param, saved in zip(params, state["params"], strict=True):
                    param.copy_(saved)
            optimizer.load_state_dict(state["optimizer"])
            for generator, saved in zip(generators, state["generators"], strict=True):
                generator.set_state(saved)

    def save(epoch: int) -> None:
        if path is None:
            return
        _save_atomically(
            path,
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "params": [param.detach().clone() for param in params],
                "optimizer": optimizer.state_dict(),
                "generators": [generator.get_state() for generator in generators],
            },
        )

    def drop(h: torch.Tensor, layer: int, step: int) -> torch.Tensor:
        """Dropout of ``layer`` at ``step``, in place on ``h`` (a fresh tensor)."""
        width, used = h.shape[2], h.shape[1] * h.shape[2]
        base = step * slots * batch_size * width
        for start, stop, p, first in runs:
            part = h[start:stop]
            MASKED_SCALE.kernel(
                part, layer_seeds[layer], base + first * used,
                p, "inverted", "bernoulli", (), out=part,
            )  # fmt: skip
        return h

    network_start = torch.arange(count).unsqueeze(1) * rows
    saved_at = time.monotonic()
    for epoch in range(first_epoch, epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            save(epoch)
            return []
        permutation = torch.stack(
            [torch.randperm(rows, generator=generator) for generator in generators]
        )
        for batch in range(steps_per_epoch):
            chosen = permutation[:, batch * batch_size : (batch + 1) * batch_size]
            flat = (chosen + network_start).reshape(-1)
            grads = _gradients(
                params,
                inputs.index_select(0, flat).view(count, -1, features),
                targets.index_select(0, flat).view(count, -1),
                regs,
                scales,
                functools.partial(drop, step=epoch * steps_per_epoch + batch),
            )
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)
        if path is not None and time.monotonic() - saved_at >= checkpoint_seconds:
            save(epoch + 1)
            saved_at = time.monotonic()
    if path is not None:
        path.unlink(missing_ok=True)
    trained: list[torch.nn.Module] = [torch.nn.Module()] * count
    with torch.no_grad():
        for k, (net, (hidden, output)) in enumerate(zip(networks, layers, strict=True)):
            hidden.weight.copy_(params[0][k].t())
            hidden.bias.copy_(params[1][k, 0])
            output.weight.copy_(params[2][k])
            output.bias.copy_(params[3][k, 0])
            trained[order[k]] = net.eval()
    return trained
