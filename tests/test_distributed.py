"""Distributed ranks: the folding rule, the rank override, and DDP on gloo.

The DDP test runs this file's ``worker`` in two processes (as torchrun would:
each its own interpreter, rank and world size given explicitly) on the gloo
backend over loopback (``tests/_processes.py``), then checks in the test
process that

- the two ranks drew different masks, and a rerun from scratch (a fresh model,
  offsets back at 0, in the same processes: each launch costs two imports of
  torch) draws the same ones;
- the gradients DDP averaged equal those of one process on the concatenated
  batch, whose masks are drawn with ``droplab.functional.dropout`` from the
  documented keys ``fold_rank(seed, rank)`` and the module's offsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from droplab import Dropout, StochasticModule
from droplab.distributed import RANK_MULTIPLIER, current_rank, fold_rank, use_rank
from droplab.functional import dropout

SEED = 2024  # the Dropout module's seed on every rank
STEPS = 3
WORLD = 2
PER_RANK = 4  # samples per rank
IN, HIDDEN, OUT = 6, 16, 3


# ---------------------------------------------------------------- the rule


@settings(derandomize=True, deadline=None, max_examples=50)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_fold_rank_is_an_involution_and_rank_0_is_the_identity(seed, rank):
    assert fold_rank(seed, 0) == seed
    assert fold_rank(fold_rank(seed, rank), rank) == seed
    assert 0 <= fold_rank(seed, rank) < 2**64


@settings(derandomize=True, deadline=None, max_examples=20)
@given(st.integers(0, 2**64 - 1))
def test_distinct_ranks_get_distinct_keys(seed):
    keys = {fold_rank(seed, rank) for rank in range(4096)}
    assert len(keys) == 4096


def test_small_seeds_on_small_ranks_never_share_a_key():
    # For seeds < 2**32 the high key word is the high word of rank * M alone,
    # so it suffices that those words differ for ranks in [0, 2**20).
    ranks = np.arange(2**20, dtype=np.uint64)
    with np.errstate(over="ignore"):
        high = (ranks * np.uint64(RANK_MULTIPLIER)) >> np.uint64(32)  # wraps mod 2**64
    assert high[0] == 0
    assert np.unique(high).size == ranks.size
    # spot check the NumPy arithmetic against Python's exact integers
    for r in (1, 2**19 + 7, 2**20 - 1):
        assert int(high[r]) == fold_rank(0, r) >> 32


def test_fold_rank_rejects_bad_input():
    with pytest.raises(
        ValueError, match=r"'rank' argument of fold_rank must be an integer in \[0, "
    ):
        fold_rank(1, -1)
    with pytest.raises(TypeError, match=r"'rank' argument of fold_rank .* got 1.0"):
        fold_rank(1, 1.0)
    with pytest.raises(ValueError, match=r"'seed' argument of fold_rank .* got -3"):
        fold_rank(-3, 1)
    with pytest.raises(ValueError, match=r"'rank' argument of use_rank .* got -2"):
        with use_rank(-2):
            pass


# ---------------------------------------------------------------- the override


def test_use_rank_nests_and_restores():
    assert current_rank() == 0
    with use_rank(3):
        assert current_rank() == 3
        with use_rank(None):  # back to automatic: no process group here
            assert current_rank() == 0
        with use_rank(5):
            assert current_rank() == 5
        assert current_rank() == 3
    assert current_rank() == 0


def test_module_draws_from_the_folded_key_and_saves_the_unfolded_seed():
    x = torch.randn(5, 32, dtype=torch.float64)
    single = Dropout(0.3, seed=SEED)
    y0 = single(x)
    torch.testing.assert_close(y0, dropout(x, 0.3, seed=SEED, offset=0))
    with use_rank(0):  # rank 0 is the single-process stream
        torch.testing.assert_close(Dropout(0.3, seed=SEED)(x), y0)
    module = Dropout(0.3, seed=SEED)
    with use_rank(1):
        first, second = module(x), module(x)
    assert module.state_dict()["_extra_state"].tolist() == [SEED, 320]
    key = fold_rank(SEED, 1)
    torch.testing.assert_close(first, dropout(x, 0.3, seed=key, offset=0))
    torch.testing.assert_close(second, dropout(x, 0.3, seed=key, offset=160))
    assert not torch.equal(first != 0, y0 != 0)
    with use_rank(1):
        assert StochasticModule(seed=7).next_stream(4) == (fold_rank(7, 1), 0)


def test_unseeded_modules_fold_the_rank_too():
    # Both ranks seed torch alike (the usual DDP script), yet draw apart.
    x = torch.ones(4, 64)
    masks = []
    for rank in (0, 1):
        torch.manual_seed(0)
        with use_rank(rank):
            masks.append(Dropout(0.5)(x) != 0)
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.5)(x) != 0, masks[0])
    assert not torch.equal(masks[0], masks[1])


# ---------------------------------------------------------------- DDP on gloo


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    # Tanh is never exactly 0 here, so a zero after dropout means "dropped".
    return nn.Sequential(
        nn.Linear(IN, HIDDEN),
        nn.Tanh(),
        Dropout(0.5, seed=SEED),
        nn.Linear(HIDDEN, OUT),
    ).double()


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    n = WORLD * PER_RANK
    return [
        (
            torch.randn(n, IN, generator=g, dtype=torch.float64),
            torch.randn(n, OUT, generator=g, dtype=torch.float64),
        )
        for _ in range(STEPS)
    ]


def train(rank: int) -> dict[str, list[Any]]:
    """STEPS steps of DDP training on this rank's slice: masks, grads, offsets."""
    from torch.nn.parallel import DistributedDataParallel

    model = make_model()
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    masks: list[torch.Tensor] = []
    model[2].register_forward_hook(lambda m, i, o: masks.append(o != 0))
    grads, offsets = [], []
    mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    for x, y in make_batches():
        offsets.append(model[2].offset)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp(x[mine]), y[mine])
        loss.backward()  # DDP averages the gradients over the ranks
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return {"masks": masks, "grads": grads, "offsets": offsets}


class MCModel(nn.Module):
    """Dropout three ways: a torch module, functional dropout, attention dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(IN, HIDDEN)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(HIDDEN, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.tanh(self.proj(x)))
        h = nn.functional.dropout(h, 0.2, self.training)
        q = h.reshape(x.shape[0], 2, 2, HIDDEN // 4)  # (B, heads, L, E)
        p = 0.25 if self.training else 0.0
        a = nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=p)
        return self.head(a.reshape(x.shape[0], HIDDEN))


def mc_case() -> dict[str, torch.Tensor]:
    """mc_predict on the unconverted and the converted model, on this rank."""
    import copy

    import droplab

    torch.manual_seed(0)
    model = MCModel().double().eval()
    x = torch.randn(
        PER_RANK, IN, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    converted = droplab.convert(copy.deepcopy(model), seed=1)
    runs = {
        name: droplab.mc_predict(net, x, samples=6, seed=9, chunk=3, keep_samples=True)
        for name, net in (("plain", model), ("converted", converted))
    }
    return {name: run.samples for name, run in runs.items()}  # type: ignore[misc]


def worker(rank: int, world: int, folder: Path) -> None:
    """One DDP rank, in a gloo process group (``tests/_processes.py``): a run
    and a rerun from scratch (fresh model, offset 0)."""
    assert world == WORLD, world
    runs = [train(rank), train(rank)]
    result = {"rank": current_rank(), "runs": runs, "mc": mc_case()}
    torch.save(result, folder / f"rank{rank}.pt")


def test_ddp_on_gloo_ranks_draw_apart_replay_and_match_one_process(
    tmp_path, launch_ranks
):
    folder = launch_ranks(__file__, WORLD, tmp_path, timeout=120)
    saved = [
        torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)
    ]
    assert [r["rank"] for r in saved] == [0, 1]  # read from torch.distributed
    runs = [r["runs"][0] for r in saved]
    reruns = [r["runs"][1] for r in saved]

    for step in range(STEPS):
        m0, m1 = runs[0]["masks"][step], runs[1]["masks"][step]
        assert m0.shape == m1.shape == (PER_RANK, HIDDEN)
        assert not torch.equal(m0, m1)
        for rank in range(WORLD):
            assert torch.equal(runs[rank]["masks"][step], reruns[rank]["masks"][step])
            for g, h in zip(
                runs[rank]["grads"][step], reruns[rank]["grads"][step], strict=True
            ):
                assert torch.equal(g, h)
        # after the all-reduce every rank holds the same averaged gradient
        for g0, g1 in zip(runs[0]["grads"][step], runs[1]["grads"][step], strict=True):
            torch.testing.assert_close(g0, g1, rtol=0, atol=0)

    # One process, the concatenated batch, each half masked with its rank's key.
    model = make_model()
    lin1, _, _, lin2 = model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, (x, y) in enumerate(make_batches()):
        offset = runs[0]["offsets"][step]
        assert offset == runs[1]["offsets"][step] == step * PER_RANK * HIDDEN
        hidden = torch.tanh(lin1(x))
        halves = []
        for rank in range(WORLD):
            part = hidden[rank * PER_RANK : (rank + 1) * PER_RANK]
            dropped = dropout(part, 0.5, seed=fold_rank(SEED, rank), offset=offset)
            assert torch.equal(dropped != 0, runs[rank]["masks"][step])
            halves.append(dropped)
        loss = nn.functional.mse_loss(lin2(torch.cat(halves)), y)
        optimizer.zero_grad()
        loss.backward()
        for p, g in zip(model.parameters(), runs[0]["grads"][step], strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-14)
        optimizer.step()
    # rank 0 drew exactly what a run without torch.distributed draws
    assert fold_rank(SEED, 0) == SEED

    # mc_predict: one key rule for modules, intercepted calls and its streams,
    # so the unconverted model equals the converted one on every rank ...
    mc = [r["mc"] for r in saved]
    for rank in range(WORLD):
        assert torch.equal(mc[rank]["plain"], mc[rank]["converted"])
    # ... the ranks draw apart, and rank 1 is what use_rank(1) replays here
    assert not torch.equal(mc[0]["plain"], mc[1]["plain"])
    assert torch.equal(mc_case()["plain"], mc[0]["plain"])
    with use_rank(1):
        assert torch.equal(mc_case()["plain"], mc[1]["plain"])
