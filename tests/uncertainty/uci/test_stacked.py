"""Tests of stacked training (droplab.uncertainty.uci.stacked): gradients, independence, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from droplab.uncertainty.uci import stacked as uci_train
from droplab.uncertainty.uci.stacked import Job, slot, train_stacked


def make_job(p: float, tau: float, seed: int, where: int, rows: int = 40) -> Job:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    y = x[:, 0] - x[:, 1] ** 2 + 0.1 * rng.normal(size=rows)
    return Job(x=x, y=y, p=p, tau=tau, seed=seed, slot=where)


def weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in net.parameters()]


def test_gradients_match_autograd() -> None:
    """The hand-written gradients of every network equal autograd's, per network."""
    gen = torch.Generator().manual_seed(0)
    count, rows, features, hidden = 3, 7, 4, 5
    params = [
        torch.randn(count, features, hidden, generator=gen),
        torch.randn(count, 1, hidden, generator=gen),
        torch.randn(count, 1, hidden, generator=gen),
        torch.randn(count, 1, 1, generator=gen),
    ]
    x = torch.randn(count, rows, features, generator=gen)
    y = torch.randn(count, rows, generator=gen)
    rates = torch.tensor([0.0, 0.3, 0.5])
    scales = 1.0 / (1.0 - rates)
    regs = torch.tensor([0.01, 0.2, 3.0])
    masks = [
        (torch.rand(count, rows, width, generator=gen) >= rates.view(-1, 1, 1)).float()
        for width in (features, hidden)
    ]

    def drop(h: torch.Tensor, layer: int) -> torch.Tensor:
        return h.mul_(masks[layer] * scales.view(-1, 1, 1))

    grads = uci_train._gradients(params, x.clone(), y, regs, scales, drop)
    for k in range(count):
        w1, b1, w2, b2 = (t[k].clone().double().requires_grad_(True) for t in params)
        s = float(scales[k])
        inputs = x[k].double() * masks[0][k].double() * s
        h = torch.relu(inputs @ w1 + b1) * masks[1][k].double() * s
        out = (h * w2).sum(dim=1) + b2[0, 0]
        loss = torch.mean((out - y[k].double()) ** 2) + float(regs[k]) * (
            (w1**2).sum() + (w2**2).sum()
        )
        expected = torch.autograd.grad(loss, [w1, b1, w2, b2])
        for got, want in zip(grads, expected, strict=True):
            torch.testing.assert_close(got[k].double(), want, rtol=1e-5, atol=1e-5)


def test_a_network_trains_the_same_alone_or_stacked() -> None:
    """Slots, not neighbours, place the masks: stacking changes nothing."""
    jobs = [
        make_job(0.1, 1.0, seed=1, where=slot(1, 0, 0, splits=3, cells=2)),
        make_job(0.1, 0.5, seed=2, where=slot(1, 0, 1, splits=3, cells=2)),
        make_job(0.01, 1.0, seed=3, where=slot(0, 2, 0, splits=3, cells=2)),
        make_job(0.1, 2.0, seed=4, where=slot(1, 2, 1, splits=3, cells=2)),
    ]
    settings = dict(epochs=5, n_hidden=6, slots=12, seed=7, batch_size=16)
    together = train_stacked(jobs, **settings)
    for job, stacked in zip(jobs, together, strict=True):
        (alone,) = train_stacked([job], **settings)
        for a, b in zip(weights(alone), weights(stacked), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # and the training did something: weights moved from their initial values
    initial = uci_train.build_network(3, 6, 0.1, seed=1)
    assert not torch.equal(weights(together[0])[0], weights(initial)[0])


def test_training_reduces_the_error_and_masks_depend_on_the_seed() -> None:
    job = make_job(0.05, 1.0, seed=5, where=0, rows=64)
    x = torch.as_tensor(job.x, dtype=torch.float32)
    y = torch.as_tensor(job.y, dtype=torch.float32)
    settings = dict(n_hidden=16, slots=1, batch_size=16)
    (short,) = train_stacked([job], epochs=1, seed=0, **settings)
    (long,) = train_stacked([job], epochs=60, seed=0, **settings)
    (other,) = train_stacked([job], epochs=60, seed=1, **settings)
    with torch.no_grad():
        errors = [float(((net(x)[:, 0] - y) ** 2).mean()) for net in (short, long)]
    assert errors[1] < 0.5 * errors[0]
    assert not torch.equal(weights(long)[0], weights(other)[0])
    assert not long.training  # returned in eval mode


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    jobs = [make_job(0.1, 1.0, seed=s, where=s) for s in range(3)]
    settings = dict(epochs=6, n_hidden=5, slots=3, seed=0, batch_size=16)
    checkpoint = tmp_path / "train.pt"
    reference = train_stacked(jobs, **settings)
    assert (
        train_stacked(jobs, **settings, checkpoint=checkpoint, stop_after_epochs=2)
        == []
    )
    assert checkpoint.is_file() and torch.load(checkpoint)["epoch"] == 2
    resumed = train_stacked(jobs, **settings, checkpoint=checkpoint)
    assert not checkpoint.exists()  # removed once the training is done
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left
    for a, b in zip(reference, resumed, strict=True):
        for wa, wb in zip(weights(a), weights(b), strict=True):
            assert torch.equal(wa, wb)


def test_a_checkpoint_of_other_jobs_is_ignored(tmp_path: Path) -> None:
    jobs = [make_job(0.1, 1.0, seed=s, where=s) for s in range(2)]
    settings = dict(epochs=4, n_hidden=5, slots=2, seed=0, batch_size=16)
    checkpoint = tmp_path / "train.pt"
    train_stacked(jobs, **settings, checkpoint=checkpoint, stop_after_epochs=2)
    other = [make_job(0.1, 2.0, seed=s, where=s) for s in range(2)]  # another tau
    fresh = train_stacked(other, **settings)
    resumed = train_stacked(other, **settings, checkpoint=checkpoint)
    for a, b in zip(fresh, resumed, strict=True):
        for wa, wb in zip(weights(a), weights(b), strict=True):
            assert torch.equal(wa, wb)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        (
            [make_job(0.1, 1.0, 0, 0), make_job(0.1, 1.0, 1, 0)],
            "slots .* must be distinct",
        ),
        ([make_job(0.1, 1.0, 0, 5)], r"in \[0, slots=2\)"),
        ([make_job(1.0, 1.0, 0, 0)], r"p in \[0, 1\).*p=1.0"),
        ([make_job(0.1, 0.0, 0, 0)], "tau > 0.*tau=0.0"),
        ([make_job(0.1, 1.0, 0, 0), make_job(0.1, 1.0, 1, 1, rows=30)], "share one"),
    ],
)
def test_bad_jobs_are_refused(jobs: list[Job], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_stacked(jobs, epochs=1, n_hidden=4, slots=2, seed=0)


def test_runs_group_consecutive_slots_of_one_rate() -> None:
    jobs = [
        make_job(0.1, 1.0, 0, 0), make_job(0.1, 1.0, 0, 1), make_job(0.1, 1.0, 0, 3),
        make_job(0.2, 1.0, 0, 4), make_job(0.2, 1.0, 0, 5),
    ]  # fmt: skip
    assert uci_train._runs(jobs) == [(0, 2, 0.1, 0), (2, 3, 0.1, 3), (3, 5, 0.2, 4)]
