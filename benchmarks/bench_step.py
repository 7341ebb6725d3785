"""A user-level training step with torch's dropout and with ``droplab.convert`` (issue 23).

Two models, random init, dropout 0.1 everywhere, AdamW, bf16 autocast on CUDA:

- ``gpt2``: GPT-2 small's shape (12 layers, width 768, 12 heads, sequence 1024,
  batch 8, vocabulary 50257, tied embedding) written with ``torch.nn``. The
  attention weights go through an ``nn.Dropout`` module (nanoGPT's and Hugging
  Face's "eager" attention), so ``convert`` swaps every dropout of the model;
  ``--attention sdpa`` uses ``scaled_dot_product_attention(dropout_p=0.1)``
  instead, whose attention dropout stays torch's in both runs.
  ``--gpt2 hf`` builds transformers' ``GPT2LMHeadModel`` from a config instead
  (eager attention), where transformers is importable.
- ``vit``: timm's ``vit_base_patch16_224`` (batch 64 at 224, 1000 classes, drop,
  attention drop, projection drop and drop path 0.1; attention not fused, so its
  dropout is a module), where timm is importable; otherwise skipped with a note.

Modes: ``eager``, ``compiled`` (``torch.compile(model)``) and
``reduce-overhead`` (``torch.compile(model, mode="reduce-overhead")``, CUDA
graphs). The optimizer step runs eagerly in every mode. For each model and mode
the torch run and the droplab run are built from the same ``torch.manual_seed``,
one after the other in this process; the time per step is the median of
``--repeats`` windows of ``--steps`` steps after ``--warmup`` steps (CUDA events
on CUDA), the peak memory ``torch.cuda.max_memory_allocated`` over the run
(reset before the model is built). A run that raises is recorded with its
error, not hidden. Printed: ms per step, droplab/torch (below 1: droplab is
faster), peak MiB. ``--json PATH`` writes every figure.

``--tiny`` shrinks everything (2 layers, width 64, sequence 32, batch 2; a
32x32 ViT) and takes a few steps: a smoke test that runs on a CPU.

Run on a GPU: ``python benchmarks/bench_step.py --json step.json``
(``benchmarks/gpu_check.sh`` does, with a time limit).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import droplab

MODES = ("eager", "compiled", "reduce-overhead")
IMPLS = ("torch", "droplab")


@dataclass
class GPTConfig:
    layers: int = 12  # transformer blocks
    width: int = 768  # model width (n_embd)
    heads: int = 12  # attention heads
    sequence: int = 1024  # tokens per sample (and positions)
    batch: int = 8  # samples per step
    vocab: int = 50257  # GPT-2's vocabulary
    dropout: float = 0.1  # every dropout of the model
    attention: str = "manual"  # "manual": softmax then nn.Dropout; "sdpa"


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.attention = cfg.attention
        self.c_attn = nn.Linear(cfg.width, 3 * cfg.width)
        self.c_proj = nn.Linear(cfg.width, cfg.width)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        causal = torch.ones(cfg.sequence, cfg.sequence, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in (q, k, v))  # (B, nh, T, hs) each  # fmt: skip
        if self.attention == "sdpa":
            p = self.attn_dropout.p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, T)
            att = att.masked_fill(~self.causal[:t, :t], float("-inf")).softmax(-1)
            y = self.attn_dropout(att) @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width, 4 * cfg.width),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * cfg.width, cfg.width),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2's shape; ``forward(tokens)`` returns the mean next-token loss."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.width)
        self.wpe = nn.Embedding(cfg.sequence, cfg.width)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.lm_head = nn.Linear(cfg.width, cfg.vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten()
        )


def _hf_gpt2(cfg: GPTConfig) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=cfg.vocab,
        n_positions=cfg.sequence,
        n_embd=cfg.width,
        n_layer=cfg.layers,
        n_head=cfg.heads,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
    )
    model = GPT2LMHeadModel._from_config(config, attn_implementation="eager")

    class Loss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=tokens, labels=tokens).loss

    return Loss()


def gpt2_case(tiny: bool, variant: str, attention: str) -> tuple[Callable, Callable]:
    """(make the model, make a batch) for the GPT-2 case."""
    cfg = GPTConfig(attention=attention)
    if tiny:
        cfg = GPTConfig(2, 64, 2, 32, 2, 512, attention=attention)
    make = (lambda: _hf_gpt2(cfg)) if variant == "hf" else (lambda: GPT(cfg))

    def batch(device: torch.device) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, cfg.vocab, (cfg.batch, cfg.sequence), generator=g)
        return (tokens.to(device),)

    return make, batch


def vit_case(tiny: bool) -> tuple[Callable, Callable]:
    """(make the model, make a batch) for timm's ViT-B/16 (ImportError without timm)."""
    import timm

    drops = dict(drop_rate=0.1, attn_drop_rate=0.1, proj_drop_rate=0.1)
    drops["drop_path_rate"] = 0.1
    size, classes, batch_size = (32, 10, 2) if tiny else (224, 1000, 64)

    def make() -> nn.Module:
        if tiny:
            net = timm.models.vision_transformer.VisionTransformer(
                img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                num_classes=classes, **drops,
            )  # fmt: skip
        else:
            net = timm.create_model("vit_base_patch16_224", pretrained=False, **drops)
        for module in net.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False  # attention dropout through its module

        class Loss(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, images: torch.Tensor, labels: torch.Tensor) -> Any:
                return F.cross_entropy(self.net(images).float(), labels)

        return Loss()

    def batch(device: torch.device) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(1)
        images = torch.randn(batch_size, 3, size, size, generator=g)
        labels = torch.randint(0, classes, (batch_size,), generator=g)
        return images.to(device), labels.to(device)

    return make, batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(
    make: Callable, batch: Callable, impl: str, mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Build, warm up and time one (model, impl, mode); the figures as a dict."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = make()
    if impl == "droplab":
        droplab.convert(model)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = model
    if mode != "eager":
        torch._dynamo.reset()
        kw = {"mode": "reduce-overhead"} if mode == "reduce-overhead" else {}
        forward = torch.compile(model, **kw)
    inputs = batch(device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=args.autocast)

    def step() -> torch.Tensor:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            loss = forward(*inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    started = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    _sync(device)
    warmup_s = time.perf_counter() - started
    windows = []
    for _ in range(args.repeats):
        if cuda:
            begin, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            begin.record()
            for _ in range(args.steps):
                loss = step()
            end.record()
            end.synchronize()
            windows.append(begin.elapsed_time(end) / args.steps)
        else:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = step()
            windows.append((time.perf_counter() - t0) * 1e3 / args.steps)
    result = {
        "ms_per_step": statistics.median(windows),
        "windows_ms": windows,
        "warmup_s": warmup_s,
        "loss": float(loss),
        "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
    }
    return result  # the model and its optimizer go with this frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes, CPU-able")
    parser.add_argument("--models", default="gpt2,vit", help="comma list: gpt2,vit")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list")
    parser.add_argument("--gpt2", choices=("nn", "hf"), default="nn")
    parser.add_argument("--attention", choices=("manual", "sdpa"), default="manual")
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--steps", type=int, default=None, help="steps per window")
    parser.add_argument("--repeats", type=int, default=None, help="timed windows")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps")
    parser.add_argument("--no-autocast", dest="autocast", action="store_false")
    parser.add_argument("--json", default=None, help="write every figure here")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = args.device.startswith("cuda")
    args.autocast = args.autocast and on_cuda  # bf16 autocast on CUDA only
    defaults = (2, 2, 2) if args.tiny else (10, 5, 5)
    for name, value in zip(("steps", "repeats", "warmup"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be an integer >= 1, got {getattr(args, name)}")
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            parser.error(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
    cases: dict[str, tuple[Callable, Callable]] = {}
    notes: list[str] = []
    for name in (m for m in args.models.split(",") if m):
        if name == "gpt2":
            cases[name] = gpt2_case(args.tiny, args.gpt2, args.attention)
        elif name == "vit":
            try:
                cases[name] = vit_case(args.tiny)
            except ImportError as error:
                notes.append(f"vit skipped: timm is not importable ({error})")
        else:
            parser.error(f"--models: {name!r} is not one of gpt2, vit")
    versions = {"torch": torch.__version__, "python": sys.version.split()[0]}
    if on_cuda:
        versions["gpu"] = torch.cuda.get_device_name(args.device)
        versions["cuda"] = str(torch.version.cuda)
    report: dict[str, Any] = {"config": vars(args), "versions": versions}
    report["notes"], report["runs"] = notes, []
    for note in notes:
        print(note)
    print(f"device {args.device}, autocast bf16 {args.autocast}, {versions}")
    print(f"{'model':6s} {'mode':16s} {'torch ms':>9s} {'droplab ms':>10s} "
          f"{'droplab/torch':>13s} {'torch MiB':>9s} {'droplab MiB':>11s}")  # fmt: skip
    for name, (make, batch) in cases.items():
        for mode in modes:
            row: dict[str, Any] = {"model": name, "mode": mode}
            for impl in IMPLS:
                try:
                    row[impl] = run_one(make, batch, impl, mode, args)
                except Exception as error:  # recorded, and the run goes on
                    row[impl] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            report["runs"].append(row)
            print(_line(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    failed = [r for r in report["runs"] if any("error" in r[i] for i in IMPLS)]
    for r in failed:
        for impl in IMPLS:
            if "error" in r[impl]:
                print(f"{r['model']} {r['mode']} {impl}: {r[impl]['error'][:400]}")
    return 1 if failed else 0


def _line(row: dict[str, Any]) -> str:
    t, d = row["torch"], row["droplab"]

    def ms(r: dict[str, Any]) -> str:
        return "error" if "error" in r else f"{r['ms_per_step']:.3f}"

    def mib(r: dict[str, Any]) -> str:
        return "-" if r.get("peak_mib") is None else f"{r['peak_mib']:.0f}"

    ratio = "-"
    if "error" not in t and "error" not in d:
        row["ratio"] = d["ms_per_step"] / t["ms_per_step"]
        ratio = f"{row['ratio']:.3f}x"
    return (f"{row['model']:6s} {row['mode']:16s} {ms(t):>9s} {ms(d):>10s} "
            f"{ratio:>13s} {mib(t):>9s} {mib(d):>11s}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
