"""Every droplab variant against the torch code a user would write instead.

Run by hand (not collected by pytest), e.g.
``python benchmarks/bench_variants.py --threads 1 2``. Forward+backward,
float32, at about 2^15 and 2^20 elements, in this one process and round-robin
(``droplab.cli.bench.best_seconds``), so the ratios are fair when the load
drifts. Prints, per variant and size, ns per element of droplab, of its
counterpart and of ``x.clone()`` (reading and writing the tensor once), and
the ratios droplab / counterpart and droplab / clone.

The counterparts (timm is not a dependency: its algorithms are written out in
torch, as timm writes them):

- Gaussian: ``x * (1 + s * torch.randn_like(x))``;
- alpha, feature alpha: ``torch.nn.AlphaDropout``, ``torch.nn.FeatureAlphaDropout``;
- channel: ``torch.nn.Dropout2d``;
- DropBlock: timm's ``drop_block_fast_2d`` (``bernoulli`` of ``gamma`` on the
  valid seed positions, ``max_pool2d`` of the block, scale by
  ``numel / kept``), block 5;
- Concrete: Gal et al.'s code (uniform noise, ``sigmoid`` of the logits over the
  temperature, ``x * (1 - drop) / (1 - p)``, ``p`` a learned 0-d tensor);
- DropConnect: ``F.linear(x, w * bernoulli_mask / keep)``;
- standard dropout: ``torch.nn.functional.dropout``;
- DropPath: timm's ``drop_path`` (a ``(N, 1, ..., 1)`` Bernoulli mask).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from droplab import functional
from droplab.cli.bench import best_seconds
from droplab.variants import (
    concrete_dropout,
    drop_block2d,
    drop_connect_linear,
    drop_path,
    dropout2d,
)
from droplab.variants.alpha import alpha_dropout, feature_alpha_dropout
from droplab.variants.gaussian import gaussian_dropout, gaussian_noise_std

P = 0.5
Case = tuple[str, tuple[int, ...], Callable[..., Any], Callable[..., Any]]


def _timm_drop_block(x: torch.Tensor, p: float, block: int) -> torch.Tensor:
    """timm's ``drop_block_fast_2d`` (batchwise=False), written in torch."""
    _, _, h, w = x.shape
    bh, bw = min(block, h), min(block, w)
    gamma = p * h * w / (bh * bw) / ((h - bh + 1) * (w - bw + 1))
    seeds = torch.empty_like(x).bernoulli_(gamma)
    seeds[:, :, h - bh + 1 :, :] = 0
    seeds[:, :, :, w - bw + 1 :] = 0
    padded = F.pad(seeds, (bw - 1, 0, bh - 1, 0))
    block_mask = 1 - F.max_pool2d(padded, (bh, bw), stride=1)
    scale = block_mask.numel() / block_mask.sum().add(1e-7)
    return x * block_mask * scale


def _gal_concrete(x: torch.Tensor, p: torch.Tensor, t: float) -> torch.Tensor:
    """Gal, Hron and Kendall's concrete dropout (their Keras/PyTorch code)."""
    eps = 1e-7
    u = torch.rand_like(x)
    drop = torch.sigmoid(
        (
            torch.log(p + eps)
            - torch.log(1 - p + eps)
            + torch.log(u + eps)
            - torch.log(1 - u + eps)
        )
        / t
    )
    return x * (1 - drop) / (1 - p)


def _timm_drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    keep = 1 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def cases(log2: int) -> list[Case]:
    """(name, input shape, droplab op, counterpart op) at about 2^log2 elements."""
    n = 1 << log2
    s = gaussian_noise_std(P)
    p_t = torch.tensor(P, requires_grad=True)
    seed = 1234
    # (N, C, 16, 16) maps and (rows, 512) matrices of n elements
    maps = (n // (64 * 256), 64, 16, 16)
    rows = (n // 512, 512)
    alpha_torch = torch.nn.AlphaDropout(P)
    feature_torch = torch.nn.FeatureAlphaDropout(P)
    channel_torch = torch.nn.Dropout2d(P)
    w_shape = (512, n // 512)  # (out, in): the weight DropConnect masks
    x_lin = torch.randn(64, w_shape[1])
    return [
        (
            "gaussian",
            rows,
            lambda x: gaussian_dropout(x, P, seed=seed),
            lambda x: x * (1 + s * torch.randn_like(x)),
        ),
        (
            "alpha",
            rows,
            lambda x: alpha_dropout(x, P, True, seed=seed),
            alpha_torch,
        ),
        (
            "feature_alpha",
            maps,
            lambda x: feature_alpha_dropout(x, P, True, seed=seed),
            feature_torch,
        ),
        (
            "dropout2d",
            maps,
            lambda x: dropout2d(x, P, seed=seed),
            channel_torch,
        ),
        (
            "drop_block (5)",
            maps,
            lambda x: drop_block2d(x, 0.1, 5, seed=seed),
            lambda x: _timm_drop_block(x, 0.1, 5),
        ),
        (
            "concrete",
            rows,
            lambda x: concrete_dropout(x, p_t, 0.1, seed=seed),
            lambda x: _gal_concrete(x, p_t, 0.1),
        ),
        (
            "drop_connect (w)",
            w_shape,
            lambda w: drop_connect_linear(x_lin, w, None, P, seed=seed),
            lambda w: F.linear(
                x_lin, w * torch.empty_like(w).bernoulli_(1 - P) / (1 - P)
            ),
        ),
        (
            "dropout",
            rows,
            lambda x: functional.dropout(x, P, seed=seed),
            lambda x: F.dropout(x, P),
        ),
        (
            "drop_path",
            maps,
            lambda x: drop_path(x, P, seed=seed),
            lambda x: _timm_drop_path(x, P),
        ),
    ]


def _step(
    op: Callable[..., Any], x: torch.Tensor, grad: torch.Tensor
) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        op(x).backward(grad)

    return step


def run(log2: int, repeats: int, only: set[str] | None) -> list[dict[str, Any]]:
    rows = []
    for name, shape, ours, theirs in cases(log2):
        if only and name.split()[0] not in only:
            continue
        x = torch.randn(*shape, requires_grad=True)
        with torch.no_grad():
            grad_ours = torch.ones_like(ours(x))
        best = best_seconds(
            {
                "droplab": _step(ours, x, grad_ours),
                "counterpart": _step(theirs, x, grad_ours),
                "clone": lambda x=x: x.detach().clone(),
            },
            repeats=repeats,
        )
        n = x.numel()
        rows.append(
            {
                "variant": name,
                "elements": n,
                "droplab_ns": best["droplab"] / n * 1e9,
                "torch_ns": best["counterpart"] / n * 1e9,
                "clone_ns": best["clone"] / n * 1e9,
                "vs_torch": best["droplab"] / best["counterpart"],
                "vs_clone": best["droplab"] / best["clone"],
            }
        )
    return rows


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--log2", type=int, nargs="+", default=[15, 20])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="variant names (first word)")
    args = parser.parse_args()
    only = set(args.only) if args.only else None
    print(
        f"{_machine()}, torch {torch.__version__}, float32, p = {P}, forward+backward"
    )
    header = (
        f"{'variant':<18}{'elements':>10}{'droplab ns':>12}{'torch ns':>10}"
        f"{'clone ns':>10}{'x torch':>9}{'x clone':>9}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        for log2 in args.log2:
            load = os.getloadavg()[0]
            print(f"\n{threads} thread(s), 2^{log2}, load average {load:.2f} at start")
            print(header)
            for row in run(log2, args.repeats, only):
                print(
                    f"{row['variant']:<18}{row['elements']:>10}"
                    f"{row['droplab_ns']:>12.2f}{row['torch_ns']:>10.2f}"
                    f"{row['clone_ns']:>10.2f}{row['vs_torch']:>9.2f}"
                    f"{row['vs_clone']:>9.2f}"
                )


if __name__ == "__main__":
    main()
