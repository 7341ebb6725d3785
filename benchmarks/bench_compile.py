"""Training steps eager and under ``torch.compile``: no dropout, torch's, droplab's.

Two models, in one process: the 40-512-512-10 ReLU MLP of bench_mlp_step.py
(batch 64, dropout p = 0.5 after each hidden layer), and a ViT-like encoder
(4 blocks of width 192, 3 heads, sequence 65, batch 8; dropout 0.1 after the
attention and in the MLP of each block, as timm's ViT-tiny with drop_rate=0.1).
Dropout is ``torch.nn.Dropout`` or, after ``droplab.convert(model, seed=0)``,
droplab's; "none" has p = 0 modules replaced by ``nn.Identity``.

With timm installed (``pip install ".[timm]"``), a third model: timm's own
ViT-tiny (``vit_tiny_patch16_224``: 12 blocks of width 192, 3 heads) on 64x64
images in 8x8 patches (65 tokens, as the ViT-like), batch 8, with
``drop_rate = proj_drop_rate = pos_drop_rate = 0.1`` and ``drop_path_rate =
0.1`` (droplab's: after ``droplab.convert(model, seed=0)``, which also swaps
timm's ``DropPath``); "none" builds it with every rate 0.

Run by hand: ``nice python benchmarks/bench_compile.py``. Prints ms per step
(the best of ``repeats`` runs of ``steps`` steps, after warm-up) and the ratio
of droplab's compiled step to torch's compiled step.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable

import torch
from torch import nn

import droplab


def mlp(p: float) -> nn.Module:
    def drop() -> nn.Module:
        return nn.Dropout(p) if p else nn.Identity()

    return nn.Sequential(
        nn.Linear(40, 512), nn.ReLU(), drop(), nn.Linear(512, 512), nn.ReLU(), drop(),
        nn.Linear(512, 10),
    )  # fmt: skip


class Block(nn.Module):
    def __init__(self, width: int, heads: int, p: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.drop1 = nn.Dropout(p) if p else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width),
            nn.GELU(),
            nn.Dropout(p) if p else nn.Identity(),
            nn.Linear(4 * width, width),
            nn.Dropout(p) if p else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, width)
        h = self.norm1(x)
        x = x + self.drop1(self.attn(h, h, h, need_weights=False)[0])
        return x + self.mlp(self.norm2(x))


def vit(p: float) -> nn.Module:
    return nn.Sequential(*(Block(192, 3, p) for _ in range(4)))


def timm_vit_tiny(p: float) -> nn.Module:
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=8,
        num_classes=10, drop_rate=p, proj_drop_rate=p, pos_drop_rate=p,
        drop_path_rate=p,
    )  # fmt: skip


def step_fn(
    model: nn.Module, inputs: torch.Tensor, compiled: bool
) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    forward = torch.compile(model, fullgraph=True) if compiled else model

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward(inputs).float().square().mean().backward()
        opt.step()

    return step


def best_ms(step: Callable[[], None], steps: int, repeats: int) -> float:
    for _ in range(3):
        step()  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e3


def main(steps: int = 50, repeats: int = 5) -> None:
    models = {
        "mlp": (mlp, 0.5, torch.randn(64, 40)),
        "vit": (vit, 0.1, torch.randn(8, 65, 192)),
    }
    if importlib.util.find_spec("timm") is not None:
        models["timm vit-tiny"] = (timm_vit_tiny, 0.1, torch.randn(8, 3, 64, 64))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for name, (build, p, inputs) in models.items():
        row: dict[str, float] = {}
        for compiled in (False, True):
            for kind in ("none", "torch", "droplab"):
                torch.manual_seed(0)
                model = build(0.0 if kind == "none" else p)
                if kind == "droplab":
                    droplab.convert(model, seed=0)
                key = f"{'compiled' if compiled else 'eager'} {kind}"
                row[key] = best_ms(step_fn(model, inputs, compiled), steps, repeats)
                print(f"{name:13s} {key:17s} {row[key]:8.3f} ms/step", flush=True)
        ratio = row["compiled droplab"] / row["compiled torch"]
        print(f"{name:13s} compiled droplab / compiled torch: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
