"""The Triton kernel against the NumPy reference.

On machines without a GPU the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``) on CPU tensors: slow, so sizes stay small. Tests that
need a real CUDA device carry the ``gpu`` marker and are skipped elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from droplab import kernels, masks, rng
from droplab.kernels.reference import reference_masked_scale
from droplab.mesh import Box, Runs, plan
from droplab.scaling import SCALES

pytest.importorskip("triton")

from droplab.kernels import gpu

BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
SEEDS = (0, 7, 2**32 + 1, 2**63 - 1, 2**63, 2**64 - 1)
# Offsets not a multiple of 4, and blocks crossing 2**32 (randint4x's limit
# with a 32-bit offset; this kernel passes the high word itself).
OFFSETS = (0, 3, 4 * 2**32 - 6, 2**62 + 1)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = BITS[a.dtype]
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


@pytest.fixture
def interpreter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the Triton kernels on the CPU through Triton's interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_words_equal_the_reference_stream(seed: int, offset: int) -> None:
    n = gpu.BLOCK + 9  # two programs, a ragged end
    words = gpu.stream_words(n, seed=seed, offset=offset, device="cpu")
    expected = rng.random_words(seed, offset, n).astype(np.int64)
    np.testing.assert_array_equal(words.numpy(), expected)


@pytest.mark.usefixtures("interpreter")
@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
    p=st.sampled_from((0.0, 0.2, 0.5, 0.9, 1.0)),
    seed=st.sampled_from(SEEDS),
    offset=st.sampled_from(OFFSETS),
    sampler=st.sampled_from(masks.SAMPLERS),
    scale=st.sampled_from(SCALES),
    dtype=st.sampled_from(tuple(BITS)),
    shared=st.sets(st.integers(0, 2), max_size=2),
)
def test_matches_reference_bit_for_bit(
    shape: list[int],
    p: float,
    seed: int,
    offset: int,
    sampler: str,
    scale: str,
    dtype: torch.dtype,
    shared: set[int],
) -> None:
    check_against_reference(shape, dtype, shared, "cpu", p=p, seed=seed,
                            offset=offset, sampler=sampler, scale=scale)  # fmt: skip


def check_against_reference(
    shape: list[int], dtype: torch.dtype, shared: set[int], device: str, **kw: Any
) -> None:
    """The Triton path on ``device`` gives the NumPy reference's bits."""
    dims = tuple(sorted(d for d in shared if d < len(shape)))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    got = gpu.masked_scale(x.to(device), shared_dims=dims, **kw).cpu()
    assert same_bits(got, reference_masked_scale(x, shared_dims=dims, **kw))


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("dtype", list(BITS))
def test_fused_kernel_rounds_like_torch(dtype: torch.dtype) -> None:
    # Enough elements, and a factor (1/0.7) that needs rounding, to catch a
    # truncating float32 -> bfloat16/float16 conversion; specials included.
    x = torch.randn(3000, generator=torch.Generator().manual_seed(0))
    x[:4] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0])
    x = x.to(dtype)
    kw = dict(
        p=0.3,
        seed=2**64 - 5,
        offset=4 * 2**32 - 7,
        scale="inverted",
        sampler="bernoulli",
        shared_dims=(),
    )
    got = gpu.masked_scale(x, **kw)
    want = reference_masked_scale(x, **kw)
    finite = ~torch.isnan(want)
    assert same_bits(got[finite], want[finite])
    assert torch.isnan(got[~finite]).all()


@pytest.mark.usefixtures("interpreter")
def test_out_and_layouts() -> None:
    base = torch.randn(5, 40, 3)
    x = base.transpose(0, 2)
    kw = dict(
        p=0.5, seed=1, offset=2, scale="inverted", sampler="bernoulli", shared_dims=()
    )
    want = reference_masked_scale(x, **kw)
    out = torch.empty_like(x)
    assert gpu.masked_scale(x, out=out, **kw) is out
    assert same_bits(out, want)


@pytest.mark.usefixtures("interpreter")
def test_forced_triton_backend_runs_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DROPLAB_BACKEND", "triton")
    assert kernels.select(torch.zeros(2)) is gpu.masked_scale
    assert gpu.runs_on(torch.zeros(2))
    assert not gpu.runs_on(torch.zeros(2, dtype=torch.int64))


def test_cpu_tensors_do_not_go_to_triton_without_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not gpu.interpreting()
    assert not gpu.runs_on(torch.zeros(2))
    monkeypatch.setenv("DROPLAB_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="DROPLAB_BACKEND='triton' was requested"):
        kernels.select(torch.zeros(2))


# Triton's pointer types for the fused kernel's (x, out, factor) by input dtype:
# bfloat16 output is written as int16 bits (the kernel rounds by hand).
_POINTERS = {
    torch.float16: ("*fp16", "*fp16", "*fp32"),
    torch.bfloat16: ("*bf16", "*i16", "*fp32"),
    torch.float32: ("*fp32", "*fp32", "*fp32"),
    torch.float64: ("*fp64", "*fp64", "*fp64"),
}
_SCALARS = ("n", "head", "first_lo", "first_hi", "key_lo", "key_hi")


def _compile_for_hopper(
    kernel: object, signature: dict[str, str], constexprs: dict[str, object]
) -> dict[str, object]:
    """Compile a jitted kernel for an H100/H200 (sm_90) without a GPU: PTX and cubin."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    # FP fusion off: the kernels multiply once and add nothing, and saying so
    # keeps Triton's warning about its changing default out of the test.
    return triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False}
    ).asm


@pytest.mark.parametrize("scalar", ["i32", "i64"])
@pytest.mark.parametrize("dtype", list(BITS))
def test_kernels_compile_for_a_gpu_without_one(dtype: torch.dtype, scalar: str) -> None:
    # The interpreter runs kernels that the real compiler refuses (the first GPU
    # run found one: BLOCK had lost its tl.constexpr annotation). Triton compiles
    # to PTX and cubin on any machine, so every launch signature is compiled here.
    fused, words, run_fused, run_words = gpu._kernels(False)
    assert [p.name for p in fused.params if p.is_constexpr] == ["BLOCK", "OUT_BF16"]
    assert [p.name for p in words.params if p.is_constexpr] == ["BLOCK"]
    x, out, factor = _POINTERS[dtype]
    scalars = dict.fromkeys(_SCALARS, scalar)
    asm = _compile_for_hopper(
        fused,
        {
            "x_ptr": x,
            "out_ptr": out,
            "factor_ptr": factor,
            **scalars,
            "threshold": "i64",
            "BLOCK": "constexpr",
            "OUT_BF16": "constexpr",
        },
        {"BLOCK": gpu.BLOCK, "OUT_BF16": dtype == torch.bfloat16},
    )
    assert "cubin" in asm and ".target sm_90" in str(asm["ptx"])
    asm = _compile_for_hopper(
        words,
        {"out_ptr": "*i64", **scalars, "BLOCK": "constexpr"},
        {"BLOCK": gpu.BLOCK},
    )
    assert "cubin" in asm
    # a DTensor shard's runs (droplab.mesh): the result in the compute dtype
    runs = {"starts_ptr": "*i64", "length": scalar, **scalars}
    asm = _compile_for_hopper(
        run_fused,
        {
            "x_ptr": x,
            "out_ptr": factor,
            "factor_ptr": factor,
            **runs,
            "threshold": "i64",
            "BLOCK": "constexpr",
        },
        {"BLOCK": gpu.BLOCK},
    )
    assert "cubin" in asm and ".target sm_90" in str(asm["ptx"])
    asm = _compile_for_hopper(
        run_words,
        {"out_ptr": "*i64", **runs, "BLOCK": "constexpr"},
        {"BLOCK": gpu.BLOCK},
    )
    assert "cubin" in asm


# ----------------------------------------------------------------- real GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(BITS))
@pytest.mark.parametrize(
    ("sampler", "scale", "dims"),
    [
        ("bernoulli", "inverted", ()),
        ("bernoulli", "realized", (1,)),
        ("fixed", "classic", ()),
    ],
)
def test_cuda_matches_reference(
    dtype: torch.dtype, sampler: str, scale: str, dims: tuple[int, ...]
) -> None:
    x = torch.randn(8, 1000, 3, device="cuda").to(dtype)
    kw = dict(
        p=0.3,
        seed=2**64 - 1,
        offset=4 * 2**32 - 3,
        scale=scale,
        sampler=sampler,
        shared_dims=dims,
    )
    assert kernels.select(x) is gpu.masked_scale
    got = gpu.masked_scale(x, **kw).cpu()
    assert same_bits(got, reference_masked_scale(x.cpu(), **kw))


@pytest.mark.gpu
def test_cuda_large_and_backward() -> None:
    from droplab import functional

    x = torch.randn(1 << 22, device="cuda", requires_grad=True)
    y = functional.dropout(x, p=0.1, seed=5, offset=1)
    y.sum().backward()
    assert x.grad is not None
    want = reference_masked_scale(
        torch.ones(1 << 22),
        p=0.1,
        seed=5,
        offset=1,
        scale="inverted",
        sampler="bernoulli",
        shared_dims=(),
    )
    assert same_bits(x.grad.cpu(), want)


_RANDINT4X_PROBE = """
import json, os
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
import torch, triton, triton.language as tl

@triton.jit
def probe(counter_ptr, out_ptr, seed, N: tl.constexpr):
    counter = tl.load(counter_ptr + tl.arange(0, N))
    r0, r1, r2, r3 = tl.randint4x(seed, counter)
    for i, r in enumerate((r0, r1, r2, r3)):
        tl.store(out_ptr + i * N + tl.arange(0, N), r.to(tl.int64) & 0xFFFFFFFF)

result = {}
for dtype in (torch.int32, torch.int64):
    big = 2**31 - 1 if dtype == torch.int32 else 2**40 + 3
    counters = torch.tensor([0, 1, 2**31 - 2, big], dtype=dtype)
    out = torch.empty(16, dtype=torch.int64)
    probe[(1,)](counters, out, SEED, N=4)
    result[str(dtype)] = [counters.tolist(), out.view(4, 4).T.tolist()]
print(json.dumps(result))
"""


def test_triton_randint4x_gives_the_contract_words() -> None:
    # DESIGN.md: Triton's randint4x(seed, j // 4) reproduces the stream. Checked
    # in a fresh interpreter (Triton must be imported with TRITON_INTERPRET=1
    # for its own jitted library functions to run on the CPU).
    import json
    import subprocess
    import sys

    seed = 2**64 - 12345
    code = _RANDINT4X_PROBE.replace("SEED", str(seed))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    for counters, words in json.loads(done.stdout.strip().splitlines()[-1]).values():
        for block, four in zip(counters, words, strict=True):
            expected = rng.random_words(seed, 4 * block, 4)
            assert four == expected.tolist()


# Seeds and offsets at the edges of the contract: the top bit of the key set,
# the last seed, a block that crosses 2**32, an offset beyond 2**62.
EDGE_STREAMS = [(0, 0), (2**63, 4 * 2**32 - 3), (2**64 - 1, 2**62 + 1), (7, 5)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(BITS))
@pytest.mark.parametrize("sampler", masks.SAMPLERS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dims", [(), (1,), (0, 2)])
def test_cuda_every_sampler_rule_dtype_and_shared_dims(
    dtype: torch.dtype, sampler: str, scale: str, dims: tuple[int, ...]
) -> None:
    x = torch.randn(6, 700, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    xd = x.cuda()
    for seed, offset in EDGE_STREAMS:
        for p in (0.0, 0.3, 0.9, 1.0):
            kw = dict(
                p=p,
                seed=seed,
                offset=offset,
                scale=scale,
                sampler=sampler,
                shared_dims=dims,
            )
            got = gpu.masked_scale(xd, **kw).cpu()
            assert same_bits(got, reference_masked_scale(x, **kw)), kw


@pytest.mark.gpu
@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**64 - 1),
    offset=st.integers(0, 4 * 2**64 - 1),
    sampler=st.sampled_from(masks.SAMPLERS),
    scale=st.sampled_from(SCALES),
    dtype=st.sampled_from(tuple(BITS)),
    shared=st.sets(st.integers(0, 3), max_size=3),
)
def test_cuda_matches_reference_on_any_shape(
    shape: list[int],
    p: float,
    seed: int,
    offset: int,
    sampler: str,
    scale: str,
    dtype: torch.dtype,
    shared: set[int],
) -> None:
    check_against_reference(shape, dtype, shared, "cuda", p=p, seed=seed,
                            offset=offset, sampler=sampler, scale=scale)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("seed", SEEDS)
def test_cuda_stream_words_equal_the_reference(seed: int) -> None:
    for offset in OFFSETS:
        n = 3 * gpu.BLOCK + 5
        words = gpu.stream_words(n, seed=seed, offset=offset, device="cuda")
        expected = rng.random_words(seed, offset, n).astype(np.int64)
        np.testing.assert_array_equal(words.cpu().numpy(), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(BITS))
def test_same_seed_same_values_on_cpu_and_cuda(dtype: torch.dtype) -> None:
    # The product's promise through the public API: the Numba path on the CPU
    # and the Triton path on the GPU give the same bits, forward and backward.
    from droplab import functional
    from droplab.nn import Dropout

    x = torch.randn(64, 257, generator=torch.Generator().manual_seed(2)).to(dtype)
    g = torch.randn(64, 257, generator=torch.Generator().manual_seed(3)).to(dtype)
    outs, grads = [], []
    for device in ("cpu", "cuda"):
        xd = x.to(device, copy=True).requires_grad_()
        y = functional.dropout(xd, 0.4, seed=2**63 + 9, offset=11)
        y.backward(g.to(device))
        outs.append(y.detach().cpu())
        grads.append(xd.grad.cpu())
    assert same_bits(outs[0], outs[1])
    assert same_bits(grads[0], grads[1])
    modules = [Dropout(0.25, seed=2**64 - 2), Dropout(0.25, seed=2**64 - 2).cuda()]
    for _ in range(3):  # consecutive calls advance both streams alike
        a = modules[0](x)
        b = modules[1](x.cuda()).cpu()
        assert same_bits(a, b)
    assert modules[0].offset == modules[1].offset


@pytest.mark.gpu
def test_mc_predict_on_cuda_draws_the_cpu_masks() -> None:
    from droplab.nn import Dropout
    from droplab.uncertainty import mc_predict

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.ReLU(), Dropout(0.5), torch.nn.Linear(16, 2)
    ).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    cpu = mc_predict(net, x, samples=50, seed=3, keep_samples=True)
    gpu_result = mc_predict(net.cuda(), x.cuda(), samples=50, seed=3, keep_samples=True)
    assert gpu_result.samples is not None and cpu.samples is not None
    torch.testing.assert_close(
        gpu_result.samples.cpu(), cpu.samples, rtol=1e-12, atol=1e-12
    )


def layouts_of(x: torch.Tensor) -> list[torch.Tensor]:
    """``x`` channels_last, transposed and sliced (all non-contiguous)."""
    cl = x.to(memory_format=torch.channels_last)
    return [cl, x.transpose(1, 3), cl[:, 1:, ::2]]


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("sampler", masks.SAMPLERS)
@pytest.mark.parametrize("shared", [(), (2, 3)])
def test_the_triton_path_keeps_the_layout_and_the_values(
    sampler: str, shared: tuple[int, ...]
) -> None:
    x = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(4))
    for t in layouts_of(x):
        kw = dict(p=0.3, seed=7, offset=3, scale="inverted", sampler=sampler)
        got = gpu.masked_scale(t, shared_dims=shared, **kw)
        assert got.stride() == torch.empty_like(t).stride()
        assert same_bits(
            got, reference_masked_scale(t.contiguous(), shared_dims=shared, **kw)
        )


@pytest.mark.gpu
def test_cuda_keeps_the_layout_and_the_cpu_values() -> None:
    import droplab.nn as dn

    x = torch.randn(8, 16, 10, 12, generator=torch.Generator().manual_seed(5))
    for t in layouts_of(x):
        for make in (
            lambda: dn.Dropout(0.3, seed=1),
            lambda: dn.Dropout2d(0.3, seed=1),
        ):
            on_cpu = make()(t)
            on_cuda = make()(t.cuda())
            assert on_cuda.stride() == on_cpu.stride() == torch.empty_like(t).stride()
            assert torch.equal(on_cuda.cpu(), on_cpu)


# A DTensor shard's runs of the logical stream (droplab.mesh): a 2-d box of
# a (9, 14) tensor, and of a (4, 6, 5) one with a shared dim; runs start at
# positions that are not multiples of 4.
RUN_BOXES = [
    (Box((9, 14), (2, 5), (4, 6)), ()),
    (Box((9, 14), (0, 13), (9, 1)), ()),
    (Box((4, 6, 5), (1, 2, 0), (2, 3, 5)), (2,)),
]


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize(("box", "shared"), RUN_BOXES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("offset", [0, 4 * 2**32 - 6])
def test_runs_agree_with_the_cpu_kernel_and_the_unsharded_mask(
    box: Box, shared: tuple[int, ...], dtype: torch.dtype, offset: int
) -> None:
    from droplab.kernels import cpu

    runs = plan(box, shared)
    assert isinstance(runs, Runs)
    full = torch.randn(box.shape, dtype=torch.float64).to(dtype)
    window = tuple(slice(s, s + n) for s, n in zip(box.start, box.local, strict=True))
    local = full[window].contiguous()
    args = dict(p=0.4, seed=2**63 + 5, offset=offset, scale="inverted")
    args |= dict(sampler="bernoulli", shared_dims=shared)
    triton_result = gpu.masked_scale(local, **args, runs=runs)
    cpu_result = cpu.masked_scale(local, **args, runs=runs)
    reference = reference_masked_scale(local, **args, runs=runs)
    unsharded = reference_masked_scale(full, **args)[window]
    assert same_bits(triton_result, cpu_result)
    assert same_bits(cpu_result, reference)
    assert same_bits(reference, unsharded.contiguous())


@pytest.mark.gpu
@pytest.mark.parametrize(("box", "shared"), RUN_BOXES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_runs_match_the_cpu_kernel(
    box: Box, shared: tuple[int, ...], dtype: torch.dtype
) -> None:
    # a DTensor shard's runs (droplab.mesh) on a real GPU: the CPU's bits
    from droplab.kernels import cpu

    runs = plan(box, shared)
    assert isinstance(runs, Runs)
    local = torch.randn(box.local, dtype=torch.float64).to(dtype)
    args = dict(p=0.4, seed=2**63 + 5, offset=4 * 2**32 - 6, scale="inverted")
    args |= dict(sampler="bernoulli", shared_dims=shared)
    on_gpu = gpu.masked_scale(local.cuda(), **args, runs=runs).cpu()
    assert same_bits(on_gpu, cpu.masked_scale(local, **args, runs=runs))
