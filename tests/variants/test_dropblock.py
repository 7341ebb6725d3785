"""DropBlock2d: square blocks dropped together, the seed rate gamma, the schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from droplab.masks import bernoulli_mask
from droplab.variants.dropblock import DropBlock2d, drop_block2d, drop_block_gamma


def numpy_dropblock_keep(shape, p, block, seed, offset=0, shared_channels=False):
    """Algorithm 1 of Ghiasi et al. written with loops, from the same words."""
    n, c, h, w = shape
    bh, bw = min(block, h), min(block, w)
    gamma = drop_block_gamma(p, block, h, w)
    seeds = bernoulli_mask(
        (n, 1 if shared_channels else c, h, w), 1 - gamma, seed=seed, offset=offset
    )
    keep = np.ones((n, seeds.shape[1], h, w), dtype=bool)
    for idx in zip(*np.nonzero(seeds), strict=True):
        a, b, i, j = idx
        if i <= h - bh and j <= w - bw:
            keep[a, b, i : i + bh, j : j + bw] = False
    return np.broadcast_to(keep, shape)


@pytest.mark.parametrize(
    ("shape", "block"), [((2, 3, 9, 9), 3), ((1, 2, 8, 11), 4), ((2, 2, 5, 3), 4)]
)
def test_matches_the_loop_oracle_and_the_scale(shape, block):
    x = torch.randn(*shape, dtype=torch.float64)
    y = drop_block2d(x, 0.3, block, seed=17, offset=5)
    keep = torch.from_numpy(numpy_dropblock_keep(shape, 0.3, block, 17, 5).copy())
    scale = keep.numel() / int(keep.sum())
    assert torch.allclose(y, torch.where(keep, x * scale, 0.0), rtol=1e-15, atol=0)


def test_dropped_region_is_a_union_of_whole_blocks():
    bs = 3
    y = drop_block2d(torch.ones(4, 8, 12, 12), 0.2, bs, seed=2)
    dropped = (y == 0).double()
    # positions whose whole bs x bs window is dropped (an erosion), dilated back:
    whole = (F.avg_pool2d(dropped, bs, stride=1) == 1).double()
    rebuilt = F.max_pool2d(F.pad(whole, (bs - 1, bs - 1, bs - 1, bs - 1)), bs, stride=1)
    assert torch.equal(rebuilt, dropped)
    assert bool(dropped.any())


def test_dropped_fraction_matches_the_exact_seed_coverage():
    n, c, h, w, bs, p = 50, 40, 10, 10, 3, 0.15
    y = drop_block2d(torch.ones(n, c, h, w), p, bs, seed=7)
    gamma = drop_block_gamma(p, bs, h, w)
    # seeds covering pixel (i, j): valid top-left corners within bs - 1 above/left
    rows = np.array([min(i, h - bs) - max(0, i - bs + 1) + 1 for i in range(h)])
    cols = np.array([min(j, w - bs) - max(0, j - bs + 1) + 1 for j in range(w)])
    exact = float((1 - (1 - gamma) ** np.outer(rows, cols)).mean())
    per_map = (y == 0).double().mean(dim=(2, 3)).flatten()  # independent maps
    se = float(per_map.std()) / math.sqrt(per_map.numel())
    assert abs(float(per_map.mean()) - exact) <= 5 * se
    assert exact < p  # overlapping blocks: a bit less than p


def test_shared_channels_drop_the_same_blocks_in_every_channel():
    y = drop_block2d(torch.ones(3, 5, 8, 8), 0.3, 3, seed=1, shared_channels=True)
    assert torch.equal(y, y[:, :1].expand_as(y))


def test_gradcheck_and_nothing_saved():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64).requires_grad_()
    f = lambda t: drop_block2d(t, 0.3, 2, seed=4)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: sizes.append(t.numel()) or t, lambda t: t
    ):
        f(x)
    assert sizes == []


def test_eval_and_p_zero_are_identity():
    x = torch.ones(1, 1, 4, 4)
    assert drop_block2d(x, 0.5, 2, training=False) is x
    assert drop_block2d(x, 0.0, 2, seed=0) is x


def test_linear_schedule_and_state_dict():
    m = DropBlock2d(0.2, 3, warmup_steps=4, seed=11)
    x = torch.ones(2, 2, 8, 8)
    rates = []
    for _ in range(6):
        rates.append(m.current_p)
        m(x)
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2])
    assert m.offset == 6 * 2 * 2 * 64
    state = m.state_dict()
    assert int(state["num_steps"]) == 6
    second = m(x)
    other = DropBlock2d(0.2, 3, warmup_steps=4)
    other.load_state_dict(state)
    assert torch.equal(other(x), second)
    m.eval()
    assert m(x) is x and int(m.num_steps) == 7


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: drop_block2d(torch.ones(2, 3, 4), 0.1, 3, seed=0),
            ValueError,
            r"must be a 4-d \(N, C, H, W\)",
        ),
        (
            lambda: drop_block2d(torch.ones(1, 1, 4, 4), 0.1, 0, seed=0),
            ValueError,
            r"'block_size' argument of drop_block2d",
        ),
        (
            lambda: DropBlock2d(0.1, 3, warmup_steps=-1),
            ValueError,
            r"'warmup_steps' argument",
        ),
        (lambda: DropBlock2d(1.1), ValueError, r"'p' argument of DropBlock2d"),
        (lambda: DropBlock2d(0.1, 2.5), TypeError, r"'block_size' argument"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
