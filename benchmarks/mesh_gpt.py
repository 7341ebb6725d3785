"""One model, any mesh, shown: a tiny GPT trained at TP=1, 2, 4 and DP x TP = 2 x 2.

Run by hand (not collected by pytest): ``python benchmarks/mesh_gpt.py``
(about a minute or two on 2 CPU cores). It launches gloo processes on
127.0.0.1 (1, 2, then 4), trains the same GPT-style model (2 blocks: attention,
MLP, dropout on attention probabilities, residual and MLP paths, p = 0.1) for
20 AdamW steps from the same initial weights and batches, once with droplab's
dropout and once with ``torch.nn.Dropout``, with torch's TP plan
(``ColwiseParallel`` / ``RowwiseParallel``), and with the data-parallel half
of the 2 x 2 mesh averaging gradients. It prints, per mesh, the largest
``|loss - loss at TP=1|`` over the steps and whether every dropout mask of
every step equals the one-process mask, and writes
``docs/figures/mesh-loss-curves.png`` and ``.json``.

droplab's modules declare what the plan hands them as local tensors
(``droplab.mesh.ShardedInput``: heads split across TP ranks for the
attention dropout, replicated activations for the others; on the 2 x 2 mesh
the batch split over DP as well). torch's dropout draws from each rank's
generator on its local shapes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import droplab.nn as dnn

VOCAB, DIM, HEADS, HIDDEN, SEQ, BATCH, STEPS, P = 64, 32, 4, 64, 16, 8, 20, 0.1
MESHES = {"TP=1": (1,), "TP=2": (2,), "TP=4": (4,), "DP x TP = 2 x 2": (2, 2)}
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


class Block(nn.Module):
    def __init__(self, make_dropout: Any, index: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.wq, self.wk, self.wv = (nn.Linear(DIM, DIM) for _ in range(3))
        self.wo = nn.Linear(DIM, DIM)
        self.w1, self.w2 = nn.Linear(DIM, HIDDEN), nn.Linear(HIDDEN, DIM)
        self.attn_drop = make_dropout(3 * index)
        self.resid_drop = make_dropout(3 * index + 1)
        self.mlp_drop = make_dropout(3 * index + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        q, k, v = (w(h) for w in (self.wq, self.wk, self.wv))
        b, t = q.shape[:2]
        q, k, v = (z.view(b, t, -1, DIM // HEADS).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / (DIM // HEADS) ** 0.5
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        y = (self.attn_drop(att) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.resid_drop(self.wo(y))
        return x + self.mlp_drop(self.w2(F.gelu(self.w1(self.norm2(x)))))


class GPT(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()

        def make_dropout(index: int) -> nn.Module:
            if kind == "droplab":
                return dnn.Dropout(P, seed=1000 + index)
            return nn.Dropout(P)

        self.embed = nn.Embedding(VOCAB, DIM)
        self.position = nn.Parameter(torch.randn(SEQ, DIM) * 0.02)
        self.blocks = nn.ModuleList(Block(make_dropout, i) for i in range(2))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    # a learnable stream: each token is the previous plus a small step
    steps = torch.randint(0, 3, (STEPS, BATCH, SEQ + 1), generator=generator)
    return [s.cumsum(-1) % VOCAB for s in steps]


def train(kind: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """Train on this process's part of ``shape`` (a mesh, or one process)."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = GPT(kind)
    masks: list[torch.Tensor] = []

    def record(_: nn.Module, __: Any, out: torch.Tensor) -> None:
        # registered before the plan's hooks: it sees the DTensor droplab's
        # modules return (the whole mask); torch's return local tensors
        full = out.full_tensor() if hasattr(out, "full_tensor") else out
        masks.append(full != 0)

    for module in model.modules():
        if isinstance(module, (nn.Dropout, dnn.Dropout)):
            module.register_forward_hook(record)
    mesh = None
    dp = 1
    if shape != (1,):
        from torch.distributed.tensor import Replicate, Shard, init_device_mesh
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        from droplab.mesh import ShardedInput, shard_inputs

        names = ("dp", "tp") if len(shape) == 2 else ("tp",)
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=names)
        tp_mesh = mesh["tp"]
        dp = shape[0] if len(shape) == 2 else 1
        plan: dict[str, Any] = {}
        for i in range(2):
            plan |= {
                f"blocks.{i}.wq": ColwiseParallel(),
                f"blocks.{i}.wk": ColwiseParallel(),
                f"blocks.{i}.wv": ColwiseParallel(),
                f"blocks.{i}.wo": RowwiseParallel(),
                f"blocks.{i}.w1": ColwiseParallel(),
                f"blocks.{i}.w2": RowwiseParallel(),
            }
            if kind == "droplab" and dp == 1:  # what the plan hands dropout
                plan |= {
                    f"blocks.{i}.attn_drop": ShardedInput(Shard(1)),  # heads
                    f"blocks.{i}.resid_drop": ShardedInput(Replicate()),
                    f"blocks.{i}.mlp_drop": ShardedInput(Replicate()),
                }
        parallelize_module(model, tp_mesh, plan)
        if kind == "droplab" and dp > 1:  # the batch split over DP as well
            for block in model.blocks:
                shard_inputs(block.attn_drop, mesh, [Shard(0), Shard(1)])
                shard_inputs(block.resid_drop, mesh, [Shard(0), Replicate()])
                shard_inputs(block.mlp_drop, mesh, [Shard(0), Replicate()])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, digests = [], []
    for tokens in batches():
        if dp > 1 and mesh is not None:
            part = BATCH // dp
            rank = mesh.get_local_rank("dp")
            tokens = tokens[rank * part : (rank + 1) * part]
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        report = loss.detach().clone()
        if dp > 1 and mesh is not None:
            group = mesh.get_group("dp")
            for param in model.parameters():
                grad = param.grad
                local = grad.to_local() if hasattr(grad, "to_local") else grad
                dist.all_reduce(local, group=group)
                local /= dp
            dist.all_reduce(report, group=group)
            report /= dp
        optimizer.step()
        losses.append(float(report))
        digest = hashlib.sha256()
        for m in masks:
            digest.update(m.to(torch.uint8).numpy().tobytes())
        digests.append(digest.hexdigest())
        masks.clear()
    return {"losses": losses, "digests": digests}


def worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        results = {}
        for name, shape in MESHES.items():
            if torch.Size(shape).numel() != world:
                continue
            for kind in ("droplab", "torch"):
                results[f"{kind}/{name}"] = train(kind, shape)
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def launch(world: int, tmp: Path) -> dict[str, Any]:
    store, out = tmp / f"store{world}", tmp / f"out{world}.json"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--worker"]
    procs = [
        subprocess.Popen([*command, str(r), str(world), str(store), str(out)], env=env)
        for r in range(world)
    ]
    if any(p.wait(timeout=900) for p in procs):
        raise SystemExit(f"a worker of the {world}-process run failed")
    return json.loads(out.read_text())


def figure(results: dict[str, Any], path: Path) -> None:
    """Left: droplab's loss curves on every mesh. Right: each mesh's distance
    from TP=1, step by step, droplab's against torch's (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    steps = range(1, STEPS + 1)
    colors = dict(zip(MESHES, ("C0", "C1", "C2", "C3"), strict=True))
    for name in MESHES:
        left.plot(
            steps,
            results[f"droplab/{name}"]["losses"],
            label=name,
            color=colors[name],
            linewidth=1.4,
        )
    left.set(
        title="droplab's dropout: one curve on every mesh",
        xlabel="step",
        ylabel="training loss",
    )
    left.legend(frameon=False, fontsize=8)
    floor = 1e-9  # steps where the two losses are equal, drawn at the floor
    for kind, style in (("droplab", "-"), ("torch", "--")):
        base = results[f"{kind}/TP=1"]["losses"]
        for name in list(MESHES)[1:]:
            gap = [
                max(abs(a - b), floor)
                for a, b in zip(results[f"{kind}/{name}"]["losses"], base, strict=True)
            ]
            right.plot(
                steps,
                gap,
                style,
                color=colors[name],
                linewidth=1.2,
                label=f"{kind}, {name}",
            )
    right.set_yscale("log")
    right.set(title="|loss - loss at TP=1|", xlabel="step")
    right.legend(frameon=False, fontsize=7, ncol=2, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=4, metavar=("RANK", "WORLD", "STORE", "OUT"))
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the figure from the JSON"
    )
    args = parser.parse_args()
    if args.plot_only:
        saved = json.loads((FIGURES / "mesh-loss-curves.json").read_text())
        figure(saved, FIGURES / "mesh-loss-curves.png")
        return
    if args.worker:
        rank, world, store, out = args.worker
        worker(int(rank), int(world), store, out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, Any] = {}
        for world in (1, 2, 4):
            results |= launch(world, Path(tmp))
    print(f"{'mesh':18} {'kind':8} {'max |loss - TP=1|':>18} {'masks = TP=1':>13}")
    for kind in ("droplab", "torch"):
        base = results[f"{kind}/TP=1"]
        for name in MESHES:
            run = results[f"{kind}/{name}"]
            gap = max(
                abs(a - b) for a, b in zip(run["losses"], base["losses"], strict=True)
            )
            # torch's masks are per rank and of local shapes: only droplab's
            # (whole, gathered) masks can equal the one-process masks
            same = run["digests"] == base["digests"] if kind == "droplab" else "-"
            print(f"{name:18} {kind:8} {gap:18.3g} {same!s:>13}")
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "mesh-loss-curves.json").write_text(json.dumps(results, indent=1))
    figure(results, FIGURES / "mesh-loss-curves.png")
    print("wrote", FIGURES / "mesh-loss-curves.png")


if __name__ == "__main__":
    main()
