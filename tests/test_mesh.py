"""One model, any mesh: DTensor shards draw their part of the unsharded mask.

Each launch runs this file's ``worker`` in 2 or 4 processes (gloo over
loopback, a file store: ``tests/_processes.py``); the workers compute every case
on DTensors and save the gathered results (``full_tensor()``: outputs,
gradients, masks, offsets); the tests then compute the same calls in this
process on the unsharded tensors and compare bit for bit. One launch per world
size serves every test, so the whole file costs two start-ups of torch per rank.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import droplab.nn as dnn
from droplab.functional import (
    alpha_dropout,
    drop_connect_linear,
    dropout,
    gaussian_dropout,
)
from droplab.mesh import Box, plan

# ------------------------------------------------------------------ the cases
# Each case is a function of a tensor: called on a DTensor in the workers and
# on the unsharded tensor here. It returns a list of tensors to compare.


def _input(shape: tuple[int, ...], salt: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(salt)
    return torch.randn(shape, generator=generator)


def f_dropout(x: Any) -> list[Any]:
    return [dropout(x, 0.5, seed=7, offset=5)]


def f_module_stream(x: Any) -> list[Any]:
    # a module's stream over several calls: fresh masks, the same on any mesh
    module = dnn.Dropout(0.3, seed=3)
    outs = [module(x) for _ in range(3)]
    return [*outs, torch.tensor(module.offset)]


def f_gradient(x: Any) -> list[Any]:
    x = x.detach().requires_grad_()
    y = dropout(x, 0.4, seed=11, offset=2)
    (y * y).sum().backward()  # the mask replayed in backward, nothing stored
    return [y.detach(), x.grad]


def f_shared(x: Any) -> list[Any]:
    return [dropout(x, 0.4, seed=5, shared_dims=(1,))]


def f_channel(x: Any) -> list[Any]:
    return [dnn.Dropout2d(0.5, seed=2)(x)]


def f_drop_path(x: Any) -> list[Any]:
    return [dnn.DropPath(0.3, seed=2)(x)]


def f_locked(x: Any) -> list[Any]:
    return [dnn.LockedDropout(0.3, seed=4)(x)]


def f_gaussian(x: Any) -> list[Any]:
    return [gaussian_dropout(x, 0.3, seed=6), dnn.GaussianDropout(0.2, seed=1)(x)]


def f_alpha(x: Any) -> list[Any]:
    return [alpha_dropout(x, 0.2, True, seed=9)]


def f_drop_connect(w: Any) -> list[Any]:
    # a sharded weight (Shard(0): ColwiseParallel's, Shard(1): RowwiseParallel's)
    x = _input((3, 10), salt=8)
    if hasattr(w, "device_mesh"):
        from torch.distributed.tensor import Replicate, distribute_tensor

        x = distribute_tensor(x, w.device_mesh, [Replicate()] * w.device_mesh.ndim)
    masked = dropout(w, 0.5, seed=2)  # the weight mask drop_connect_linear draws
    return [masked, drop_connect_linear(x, w, None, 0.5, seed=2)]


def f_fixed_rows(x: Any) -> list[Any]:
    # whole rows on each rank: the fixed sampler and realized scale work
    return [
        dropout(x, 0.5, seed=3, sampler="fixed"),
        dropout(x, 0.5, seed=3, scale="realized"),
    ]


SHAPES = {
    "dropout": (6, 10),
    "module_stream": (6, 10),
    "gradient": (6, 10),
    "shared": (6, 10, 4),
    "channel": (4, 6, 5, 5),
    "drop_path": (6, 4, 3),
    "locked": (5, 4, 6),
    "gaussian": (6, 10),
    "alpha": (6, 10),
    "fixed_rows": (6, 10),
    "drop_connect": (6, 10),
}
FUNCTIONS: dict[str, Callable[[Any], list[Any]]] = {
    "dropout": f_dropout,
    "module_stream": f_module_stream,
    "gradient": f_gradient,
    "shared": f_shared,
    "channel": f_channel,
    "drop_path": f_drop_path,
    "locked": f_locked,
    "gaussian": f_gaussian,
    "alpha": f_alpha,
    "fixed_rows": f_fixed_rows,
    "drop_connect": f_drop_connect,
}

# (case, placements): 1-d mesh of 4 ranks (uneven shards: 6 rows and 10
# columns over 4, 5 over 4 with an empty shard) and a 2 x 2 mesh.
ONE_D = "S0 S1 S2 R".split()
CASES_1D = [
    ("dropout", ["S0"]),
    ("dropout", ["S1"]),
    ("dropout", ["R"]),
    ("module_stream", ["S1"]),
    ("module_stream", ["R"]),
    ("gradient", ["S0"]),
    ("gradient", ["S1"]),
    ("shared", ["S1"]),
    ("shared", ["S2"]),
    ("shared", ["S0"]),
    ("channel", ["S1"]),
    ("channel", ["S2"]),
    ("channel", ["S0"]),
    ("drop_path", ["S0"]),
    ("drop_path", ["S2"]),
    ("locked", ["S2"]),
    ("locked", ["S0"]),
    ("gaussian", ["S0"]),
    ("gaussian", ["S1"]),
    ("alpha", ["S1"]),
    ("fixed_rows", ["S0"]),
    ("drop_connect", ["S0"]),
    ("drop_connect", ["S1"]),
]
CASES_2D = [
    ("dropout", ["S0", "S1"]),
    ("dropout", ["R", "S1"]),
    ("dropout", ["S1", "S1"]),  # both mesh dims split the same tensor dim
    ("module_stream", ["S0", "S1"]),
    ("gradient", ["S1", "S0"]),
    ("channel", ["S0", "S1"]),
    ("gaussian", ["S1", "R"]),
]


def _placement(code: str) -> Any:
    from torch.distributed.tensor import Replicate, Shard

    return Replicate() if code == "R" else Shard(int(code[1:]))


def _gather(values: list[Any]) -> list[torch.Tensor]:
    from droplab.mesh import is_dtensor

    return [v.full_tensor() if is_dtensor(v) else v for v in values]


# --------------------------------------------------------- TP plans and DP


class Block(nn.Module):
    """A Llama-style block with dropout on attention, residual and MLP paths."""

    def __init__(self, dim: int = 16, hidden: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.wq, self.wk, self.wv = (nn.Linear(dim, dim) for _ in range(3))
        self.wo = nn.Linear(dim, dim)
        self.w1, self.w2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.attn_drop = dnn.Dropout(0.2, seed=1)
        self.resid_drop = dnn.Dropout(0.2, seed=2)
        self.mlp_drop = dnn.Dropout(0.2, seed=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)  # with sequence parallelism: gathered to the whole T
        q, k, v = (w(h) for w in (self.wq, self.wk, self.wv))
        b, t = q.shape[:2]
        q, k, v = (
            z.view(b, t, -1, 4).transpose(1, 2) for z in (q, k, v)
        )  # (B, heads on this rank, T, 4)
        att = self.attn_drop(torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.resid_drop(self.wo(y))
        return x + self.mlp_drop(self.w2(F.gelu(self.w1(self.norm2(x)))))


def _record_masks(model: nn.Module) -> list[torch.Tensor]:
    """A hook on each droplab module: its output's zero pattern, gathered."""
    masks: list[torch.Tensor] = []

    def hook(_: nn.Module, __: Any, out: Any) -> None:
        masks.append(_gather([out])[0] != 0)

    for module in model.modules():
        if isinstance(module, dnn.Dropout):
            module.register_forward_hook(hook)
    return masks


def run_block(x: torch.Tensor, mesh: Any = None, sequence: bool = False) -> dict:
    """Two training steps of :class:`Block` (one process when ``mesh`` is None)."""
    torch.manual_seed(0)
    block = Block()
    masks = _record_masks(block)
    if mesh is not None:
        from torch.distributed.tensor import Replicate, Shard
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            SequenceParallel,
            parallelize_module,
        )

        from droplab.mesh import ShardedInput

        plan: dict[str, Any] = {
            "wq": ColwiseParallel(),
            "wk": ColwiseParallel(),
            "wv": ColwiseParallel(),
            "w1": ColwiseParallel(),
            # heads split across ranks: a local (B, H/tp, T, T) tensor
            "attn_drop": ShardedInput(Shard(1)),
        }
        if sequence:  # torchtitan's layout: norms and residual stream on Shard(1)
            plan |= {
                "norm1": SequenceParallel(),
                "norm2": SequenceParallel(),
                "wq": ColwiseParallel(input_layouts=Replicate()),
                "wo": RowwiseParallel(output_layouts=Shard(1)),
                "w1": ColwiseParallel(input_layouts=Replicate()),
                "w2": RowwiseParallel(output_layouts=Shard(1)),
                "resid_drop": ShardedInput(Shard(1)),
                "mlp_drop": ShardedInput(Shard(1)),
            }
            for name in ("wk", "wv"):
                plan[name] = ColwiseParallel(input_layouts=Replicate())
        else:  # replicated activations: every rank the same mask
            plan |= {
                "wo": RowwiseParallel(),
                "w2": RowwiseParallel(),
                "resid_drop": ShardedInput(Replicate()),
                "mlp_drop": ShardedInput(Replicate()),
            }
        parallelize_module(block, mesh, plan)
        if sequence:  # the residual stream: a local slice of the sequence
            for norm in (block.norm1, block.norm2):  # all-gather into attention/MLP
                norm.register_forward_hook(
                    lambda m, a, out: out.redistribute(placements=[Replicate()])
                )
            rank, world = mesh.get_local_rank(), mesh.size()
            step = x.shape[1] // world
            x = x[:, rank * step : (rank + 1) * step]
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    losses = []
    for _ in range(2):
        out = block(x)
        if mesh is not None and sequence:
            from torch.distributed.tensor import DTensor, Shard

            out = DTensor.from_local(out, mesh, [Shard(1)]).full_tensor()
        loss = out.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    offsets = [m.offset for m in (block.attn_drop, block.resid_drop, block.mlp_drop)]
    return {"masks": masks, "losses": losses, "offsets": offsets}


def run_data_parallel(x: torch.Tensor, mesh: Any = None) -> list[torch.Tensor]:
    """Masks of a model whose batch is split over ``mesh`` (declared layout)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), dnn.Dropout(0.5, seed=21), nn.Tanh())
    if mesh is None:
        return [model(x) != 0 for _ in range(2)]
    from torch.distributed.tensor import Shard

    from droplab.mesh import shard_inputs

    rank, world = mesh.get_local_rank(), mesh.size()
    step = x.shape[0] // world
    shard_inputs(model, mesh, [Shard(0)])
    local = x[rank * step : (rank + 1) * step]
    found = []
    for _ in range(2):
        keep = (model(local) != 0).to(torch.uint8)
        parts = [torch.empty_like(keep) for _ in range(world)]
        torch.distributed.all_gather(parts, keep)
        found.append(torch.cat(parts).bool())
    return found


def run_compiled(mesh: Any = None) -> list[torch.Tensor]:
    """A compiled model's outputs on a Shard(1) DTensor over two calls."""
    x = _input((6, 10), salt=5)
    model = nn.Sequential(nn.Tanh(), dnn.Dropout(0.5, seed=3), nn.Tanh())
    if mesh is None:
        return [model(x) for _ in range(2)] + [torch.tensor(model[1].offset)]
    from torch.distributed.tensor import Shard, distribute_tensor

    compiled = torch.compile(model)
    sharded = distribute_tensor(x, mesh, [Shard(1)])
    outs = [compiled(sharded).full_tensor() for _ in range(2)]
    return [*outs, torch.tensor(model[1].offset)]


BLOCK_INPUT = (2, 8, 16)
DP_INPUT = (8, 8)


# ----------------------------------------------------------------- workers


def worker(rank: int, world: int, folder: Path) -> None:
    """One rank, in a gloo process group (``tests/_processes.py``): every case
    of this world size, gathered; rank 0 saves them."""
    from torch.distributed.tensor import distribute_tensor, init_device_mesh

    results: dict[str, Any] = {}
    if world == 4:
        meshes = [
            (init_device_mesh("cpu", (4,)), CASES_1D),
            (
                init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp")),
                CASES_2D,
            ),
        ]
        for mesh, cases in meshes:
            for name, codes in cases:
                placements = [_placement(c) for c in codes]
                x = _input(SHAPES[name], salt=len(name))
                sharded = distribute_tensor(x, mesh, placements)
                key = f"{name}/{'+'.join(codes)}"
                results[key] = _gather(FUNCTIONS[name](sharded))
        results["errors"] = _errors(init_device_mesh("cpu", (4,)))
    else:
        mesh = init_device_mesh("cpu", (world,))
        x = _input(BLOCK_INPUT, salt=3)
        results["tp"] = run_block(x, mesh)
        results["tp_sp"] = run_block(x, mesh, sequence=True)
        results["dp"] = run_data_parallel(_input(DP_INPUT, salt=4), mesh)
        results["compiled"] = run_compiled(mesh)
    if rank == 0:
        torch.save(results, folder / "results.pt")


def _errors(mesh: Any) -> list[str]:
    """The messages of what a shard cannot draw (empty string: no error)."""
    from torch.distributed.tensor import DTensor, Partial, Shard, distribute_tensor

    x = _input((6, 10), salt=1)
    attempts = [
        lambda: dropout(
            distribute_tensor(x, mesh, [Shard(1)]), 0.5, seed=1, sampler="fixed"
        ),
        lambda: dropout(
            DTensor.from_local(x, mesh, [Partial()], run_check=False), 0.5, seed=1
        ),
        lambda: dnn.FeatureAlphaDropout(0.2, seed=1)(
            distribute_tensor(_input((4, 6, 3), 2), mesh, [Shard(1)])
        ),
        lambda: dnn.DropBlock2d(0.2, 3, seed=1)(
            distribute_tensor(_input((2, 3, 8, 8), 3), mesh, [Shard(0)])
        ),
    ]
    messages = []
    for attempt in attempts:
        try:
            attempt()
            messages.append("")
        except (ValueError, TypeError) as error:
            messages.append(f"{type(error).__name__}: {error}")
    return messages


def launch(launch_ranks: Callable[..., Path], tmp: Path, world: int) -> dict[str, Any]:
    folder = launch_ranks(__file__, world, tmp, timeout=300)
    return torch.load(folder / "results.pt", weights_only=False)


@pytest.fixture(scope="module")
def four(
    tmp_path_factory: pytest.TempPathFactory, launch_ranks: Callable[..., Path]
) -> dict[str, Any]:
    return launch(launch_ranks, tmp_path_factory.mktemp("mesh4"), 4)


@pytest.fixture(scope="module")
def two(
    tmp_path_factory: pytest.TempPathFactory, launch_ranks: Callable[..., Path]
) -> dict[str, Any]:
    return launch(launch_ranks, tmp_path_factory.mktemp("mesh2"), 2)


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("name", "codes"),
    CASES_1D + CASES_2D,
    ids=lambda v: v if isinstance(v, str) else "+".join(v),
)
def test_shards_draw_the_unsharded_call_bit_for_bit(
    four: dict[str, Any], name: str, codes: list[str]
) -> None:
    mesh_key = f"{name}/{'+'.join(codes)}"
    expected = FUNCTIONS[name](_input(SHAPES[name], salt=len(name)))
    found = four[mesh_key]
    assert len(found) == len(expected)
    masks_and_outputs = zip(found, expected, strict=True)
    if name == "drop_connect":  # the mask bit for bit; the sums of the
        (got_mask, want_mask), (got, want) = masks_and_outputs  # sharded matmul
        assert torch.equal(got_mask, want_mask), mesh_key  # round apart
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        return
    for got, want in masks_and_outputs:
        assert torch.equal(got, want), mesh_key


def test_refusals_say_what_to_redistribute_to(four: dict[str, Any]) -> None:
    fixed, partial, feature_alpha, drop_block = four["errors"]
    assert "ValueError" in fixed and "Redistribute to Shard(0) or Replicate()" in fixed
    assert "Partial" in partial and "redistribute" in partial.lower()
    assert "Redistribute to Shard(0) or Replicate()" in feature_alpha
    assert drop_block.startswith("TypeError") and "to_local()" in drop_block


def test_tensor_parallel_plans_draw_the_one_process_masks(two: dict[str, Any]) -> None:
    x = _input(BLOCK_INPUT, salt=3)
    alone = run_block(x)
    for key in ("tp", "tp_sp"):
        run = two[key]
        assert run["offsets"] == alone["offsets"]  # ranks in step with one process
        assert len(run["masks"]) == len(alone["masks"]) == 6
        for got, want in zip(run["masks"], alone["masks"], strict=True):
            assert torch.equal(got, want), key
        # the same masks; the losses differ only by the sharded sums' rounding
        for got, want in zip(run["losses"], alone["losses"], strict=True):
            assert abs(got - want) <= 1e-5 * max(1.0, abs(want)), key


def test_declared_batch_layout_gives_each_global_sample_its_mask(
    two: dict[str, Any],
) -> None:
    alone = run_data_parallel(_input(DP_INPUT, salt=4))
    for got, want in zip(two["dp"], alone, strict=True):
        assert torch.equal(got, want)


def test_compiled_model_on_a_dtensor_draws_the_eager_masks(
    two: dict[str, Any],
) -> None:
    # the DTensor path runs eagerly inside the compiled code (a graph break)
    expected = run_compiled()
    found = two["compiled"]
    for got, want in zip(found, expected, strict=True):
        assert torch.equal(got, want)


def test_plan_of_a_box() -> None:
    # a 2-d shard on a 2 x 2 mesh: 3 rows of 2 columns, rows 3-5, columns 5-6
    runs = plan(Box((6, 7), (3, 5), (3, 2)), ())
    assert not isinstance(runs, int)
    assert runs.starts.tolist() == [3 * 7 + 5, 4 * 7 + 5, 5 * 7 + 5]
    assert runs.length == 2
    # shared dims have one mask element: sharding along them changes nothing
    assert plan(Box((4, 6, 5), (0, 0, 3), (4, 6, 2)), (2,)) == 0
