"""Which shape of the fused Triton dropout kernel is fastest, with the same bits?

The kernel in droplab.kernels.gpu draws BLOCK // 4 Philox blocks per program
and interleaves the four words with ``tl.join`` + ``tl.reshape`` into BLOCK
consecutive elements. This script times, on a CUDA GPU and at 2^28 elements:

- ``library``: that kernel as the library launches it (BLOCK 1024, 4 warps);
- ``join-*``: the same interleave, BLOCK in {1024, 2048}, num_warps in {4, 8};
- ``tile-*``: the same Philox blocks, but x is loaded as a (BLOCK // 4, 4) tile and
  the word of column m is picked with ``tl.where`` (no interleaving shuffle);
- ``*-narrow`` computes each Philox product as the library does (``tl.umulhi``
  and a wrapping multiply), ``*-wide`` as one 32 x 32 -> 64-bit multiply;

each against a device copy of the same bytes, and checks every variant's output
equals the library kernel's bit for bit. Run by hand on a GPU:
``python benchmarks/bench_triton_layouts.py``; with ``TRITON_INTERPRET=1`` it
checks the bits only, on small CPU tensors.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from droplab import masks, scaling
from droplab.kernels import gpu

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _rounds(c0, c1, c2, c3, k0, k1, WIDE: tl.constexpr):
    for _ in tl.static_range(10):
        if WIDE:  # one 32 x 32 -> 64-bit product gives both halves
            p0 = c0.to(tl.uint64) * 0xD2511F53
            p2 = c2.to(tl.uint64) * 0xCD9E8D57
            hi0 = (p0 >> 32).to(tl.uint32)
            lo0 = p0.to(tl.uint32)
            hi2 = (p2 >> 32).to(tl.uint32)
            lo2 = p2.to(tl.uint32)
        else:  # as the library: umulhi for the high half, a wrapping multiply
            hi0 = tl.umulhi(c0, 0xD2511F53)
            lo0 = c0 * 0xD2511F53
            hi2 = tl.umulhi(c2, 0xCD9E8D57)
            lo2 = c2 * 0xCD9E8D57
        c0 = hi2 ^ c1 ^ k0
        c1 = lo2
        c2 = hi0 ^ c3 ^ k1
        c3 = lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit(do_not_specialize=gpu._RUNTIME_SCALARS)
def variant_kernel(
    x_ptr,
    out_ptr,
    factor_ptr,
    n,
    head,
    first_lo,
    first_hi,
    key_lo,
    key_hi,
    threshold,
    BLOCK: tl.constexpr,
    TILE: tl.constexpr,
    WIDE: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK // 4)
    local = pid.to(tl.int64) * (BLOCK // 4) + rows.to(tl.int64)
    low = first_lo.to(tl.int64) + local
    c0 = (low & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((first_hi.to(tl.int64) + (low >> 32)) & 0xFFFFFFFF).to(tl.uint32)
    zero = c0 * 0
    w0, w1, w2, w3 = _rounds(
        c0, c1, zero, zero, key_lo.to(tl.uint32), key_hi.to(tl.uint32), WIDE
    )
    if TILE:  # x as a (BLOCK // 4, 4) tile; column m takes word m
        col = tl.arange(0, 4)[None, :]
        words = tl.where(
            col == 0,
            w0[:, None],
            tl.where(
                col == 1, w1[:, None], tl.where(col == 2, w2[:, None], w3[:, None])
            ),
        )
        index = pid.to(tl.int64) * BLOCK + (4 * rows.to(tl.int64))[:, None] + col - head
    else:  # interleave as the library does
        words = tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), (BLOCK,))
        index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64) - head
    inside = (index >= 0) & (index < n)
    factor = tl.load(factor_ptr)
    x = tl.load(x_ptr + index, mask=inside, other=0.0)
    y = tl.where(words.to(tl.int64) < threshold, x.to(factor.dtype) * factor, 0.0)
    tl.store(out_ptr + index, y.to(out_ptr.dtype.element_ty), mask=inside)


def launch(variant: str, x, out, p, seed, offset, block, warps):
    factor = torch.tensor(scaling.train_scale(p, "inverted"), device=x.device)
    head = offset % 4
    first = offset // 4
    grid = (triton.cdiv(x.numel() + head, block),)
    args = (
        x.numel(),
        head,
        first & 0xFFFFFFFF,
        first >> 32,
        seed & 0xFFFFFFFF,
        seed >> 32,
        masks.keep_threshold(p),
    )
    extra = {} if INTERPRET else {"num_warps": warps}
    if variant == "library":
        fused = gpu._kernels(gpu.interpreting())[0]
        fused[grid](x, out, factor, *args, BLOCK=block, OUT_BF16=False, **extra)
    else:
        shape, rounds = variant.split("-")
        variant_kernel[grid](
            x,
            out,
            factor,
            *args,
            BLOCK=block,
            TILE=shape == "tile",
            WIDE=rounds == "wide",
            **extra,
        )
    return out


def main() -> None:
    device = "cpu" if INTERPRET else "cuda"
    n = (1 << 12) + 5 if INTERPRET else 1 << 28
    variants = ("join-narrow", "join-wide", "tile-narrow", "tile-wide")
    configs = [("library", 1024, 4)] + [
        (v, b, w) for v in variants for b in (1024, 2048) for w in (4, 8)
    ]
    if INTERPRET:
        configs = [("library", 1024, 4)] + [(v, 1024, 4) for v in variants]
    for dtype in (torch.float32, torch.bfloat16):
        if INTERPRET and dtype == torch.bfloat16:
            continue  # the interpreter truncates bf16; the library rounds by hand
        x = torch.randn(n, device=device).to(dtype)
        want = gpu.masked_scale(
            x,
            p=0.3,
            seed=2**63 + 5,
            offset=7,
            scale="inverted",
            sampler="bernoulli",
            shared_dims=(),
        )
        if not INTERPRET:
            copy_ms = triton.testing.do_bench(lambda x=x: torch.empty_like(x).copy_(x))
            print(f"{dtype}: copy {copy_ms:.3f} ms")
        for variant, block, warps in configs:
            out = torch.empty_like(x)

            def run(variant=variant, block=block, warps=warps, out=out, x=x):
                return launch(variant, x, out, 0.3, 2**63 + 5, 7, block, warps)

            run()
            same = torch.equal(out, want)
            line = (
                f"{dtype} {variant:4s} BLOCK {block:4d} warps {warps}: same bits {same}"
            )
            if not INTERPRET:
                ms = triton.testing.do_bench(run)
                line += f", {ms:.3f} ms, {100 * copy_ms / ms:.1f} % of copy"
            print(line, flush=True)


if __name__ == "__main__":
    main()
