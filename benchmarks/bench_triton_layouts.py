"""Which shape of the fused Triton dropout kernel is fastest, with the same bits?

The kernel in droplab.kernels.gpu draws BLOCK // 4 Philox blocks per program
and interleaves the four words with ``tl.join`` + ``tl.reshape`` into BLOCK
consecutive elements. This script times, on a CUDA GPU and at 2^28 elements:

- ``join``: that kernel, BLOCK in {1024, 2048} and num_warps in {4, 8} (the
  library launches BLOCK 1024 with 4 warps);
- ``tile``: the same Philox blocks (the library's ``_philox_block``, jitted as
  the library jits it), but x is loaded as a (BLOCK // 4, 4) tile and the word
  of column m is picked with ``tl.where`` (no interleaving shuffle);

each against a device copy of the same bytes, and checks every variant's output
equals ``droplab.kernels.gpu.masked_scale``'s bit for bit. Run by hand on a GPU:
``python benchmarks/bench_triton_layouts.py``; with ``TRITON_INTERPRET=1`` it
checks the bits only, on small CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from droplab import masks, scaling
from droplab.kernels import gpu

INTERPRET = gpu.interpreting()

# The library's Philox4x32-10 block, jitted for this mode (triton.jit reads
# TRITON_INTERPRET): the tile kernel draws exactly the library's words.
_philox_block = gpu._jitted(INTERPRET)[0]


@triton.jit(do_not_specialize=gpu._RUNTIME_SCALARS)
def tile_kernel(
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
):
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK // 4)
    local = pid.to(tl.int64) * (BLOCK // 4) + rows.to(tl.int64)
    w0, w1, w2, w3 = _philox_block(local, first_lo, first_hi, key_lo, key_hi)
    # x as a (BLOCK // 4, 4) tile; column m takes word m
    col = tl.arange(0, 4)[None, :]
    words = tl.where(
        col == 0,
        w0[:, None],
        tl.where(col == 1, w1[:, None], tl.where(col == 2, w2[:, None], w3[:, None])),
    )
    index = pid.to(tl.int64) * BLOCK + (4 * rows.to(tl.int64))[:, None] + col - head
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
    if variant == "join":
        fused = gpu._kernels(INTERPRET)[0]
        fused[grid](x, out, factor, *args, BLOCK=block, OUT_BF16=False, **extra)
    else:
        tile_kernel[grid](x, out, factor, *args, BLOCK=block, **extra)
    return out


def main() -> None:
    device = "cpu" if INTERPRET else "cuda"
    n = (1 << 12) + 5 if INTERPRET else 1 << 28
    configs = [
        (v, b, w) for v in ("join", "tile") for b in (1024, 2048) for w in (4, 8)
    ]
    if INTERPRET:
        configs = [(v, b, 4) for v in ("join", "tile") for b in (1024, 2048)]
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
