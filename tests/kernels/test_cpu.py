"""The Numba CPU kernel against the NumPy reference: the same bits, every case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from droplab import functional, kernels, masks, rng
from droplab.kernels.reference import reference_masked_scale
from droplab.scaling import SCALES

pytest.importorskip("numba")

from droplab.kernels import _numba_philox as nk
from droplab.kernels import cpu

BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
# Seeds and offsets at the edges of the contract: 64-bit keys, offsets not a
# multiple of 4, counters whose block number crosses 2**32.
SEEDS = (0, 1, 2**32 - 1, 2**32, 2**63 + 12345, 2**64 - 1)
OFFSETS = (0, 1, 2, 3, 4 * 2**32 - 5, 4 * 2**32 + 2, 2**62 + 7)
PS = (0.0, 0.1, 0.5, 0.7, 1.0 - 2**-30, 1.0)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (so +0.0 and -0.0 differ, and equal NaNs are equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = BITS[a.dtype]
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def both(x: torch.Tensor, **kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    args = {"p": 0.5, "seed": 0, "offset": 0, "scale": "inverted"}
    args.update(sampler="bernoulli", shared_dims=())
    args.update(kw)
    return cpu.masked_scale(x, **args), reference_masked_scale(x, **args)


def test_philox_known_answer_and_stream() -> None:
    # DESIGN.md's first vector: counter 0, key 0.
    words = nk.philox_block(np.uint64(0), np.uint64(0), np.uint64(0))
    assert [f"{int(w):08x}" for w in words] == [
        "6627e8d5",
        "e169c58d",
        "bc57ac4c",
        "9b00dbd8",
    ]
    for seed in SEEDS:
        for first in (0, 2**32 - 3, 2**64 - 2):  # crossing 2**32 and wrapping 2**64
            out = np.empty(24, np.uint32)
            k0, k1 = rng.seed_to_key(seed)
            nk.fill_words(np.uint64(first), np.uint64(k0), np.uint64(k1), out)
            expected = rng.random_words(seed, 4 * first, 24)
            if first == 2**64 - 2:  # the reference's block numbers wrap the same way
                expected = np.concatenate(
                    [
                        rng.random_words(seed, 4 * first, 8),
                        rng.random_words(seed, 0, 16),
                    ]
                )
            np.testing.assert_array_equal(out, expected)


@settings(derandomize=True, deadline=None, max_examples=120)
@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=4),
    p=st.sampled_from(PS),
    seed=st.sampled_from(SEEDS),
    offset=st.sampled_from(OFFSETS),
    sampler=st.sampled_from(masks.SAMPLERS),
    scale=st.sampled_from(SCALES),
    dtype=st.sampled_from(tuple(BITS)),
    shared=st.sets(st.integers(0, 3), max_size=2),
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
    dims = tuple(sorted(d for d in shared if d < len(shape)))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape)))
    x = x.to(dtype)
    got, want = both(
        x, p=p, seed=seed, offset=offset, sampler=sampler, scale=scale, shared_dims=dims
    )
    assert same_bits(got, want)


@settings(derandomize=True, deadline=None, max_examples=150)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    order=st.randoms(use_true_random=False),
    steps=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    p=st.sampled_from(PS),
    offset=st.sampled_from(OFFSETS),
    sampler=st.sampled_from(masks.SAMPLERS),
    scale=st.sampled_from(SCALES),
    dtype=st.sampled_from(tuple(BITS)),
    shared=st.sets(st.integers(0, 3), max_size=2),
    inplace=st.booleans(),
)
def test_any_layout_gives_the_contiguous_bits_in_the_inputs_layout(
    shape: list[int],
    order: object,
    steps: list[int],
    p: float,
    offset: int,
    sampler: str,
    scale: str,
    dtype: torch.dtype,
    shared: set[int],
    inplace: bool,
) -> None:
    # A permuted, then sliced, tensor: strides in any order, gaps, storage offset.
    perm = list(range(len(shape)))
    order.shuffle(perm)  # type: ignore[attr-defined]
    base = torch.randn(
        [s * k for s, k in zip(shape, steps, strict=False)], dtype=torch.float64
    )
    permuted = base.to(dtype).permute(perm)
    window = tuple(
        slice(1 if n > 1 else 0, None, k)
        for n, k in zip(permuted.shape, steps, strict=False)
    )
    x = permuted[window]
    dims = tuple(sorted(d for d in shared if d < x.ndim))
    args = dict(
        p=p, seed=99, offset=offset, sampler=sampler, scale=scale, shared_dims=dims
    )
    want = reference_masked_scale(x.contiguous(), **args)  # type: ignore[arg-type]
    if inplace:
        target = permuted.clone()[window]  # x's strides, its own memory
        assert target.stride() == x.stride()
        got = cpu.masked_scale(target, out=target, **args)  # type: ignore[arg-type]
        assert got is target
    else:
        got = cpu.masked_scale(x, **args)  # type: ignore[arg-type]
        assert got.stride() == torch.empty_like(x).stride()
    assert same_bits(got, want)
    ref = reference_masked_scale(x, **args)  # type: ignore[arg-type]
    assert ref.stride() == torch.empty_like(x).stride() and same_bits(ref, want)


@pytest.mark.parametrize("sampler", masks.SAMPLERS)
@pytest.mark.parametrize("scale", ["inverted", "realized"])
@pytest.mark.parametrize("head", [0, 3])
def test_many_chunks_and_long_rows(sampler: str, scale: str, head: int) -> None:
    # Several chunks per call, rows that straddle chunks, the parallel kernels.
    x = torch.randn(3, 2 * nk.CHUNK + 7, dtype=torch.float32)
    got, want = both(
        x, p=0.3, seed=99, offset=4 * 2**32 - 8 + head, sampler=sampler, scale=scale
    )
    assert same_bits(got, want)


def test_ranges_agree_with_one_call() -> None:
    # A kernel run over [0, n) in one go or in uneven pieces writes the same bits.
    n = 3 * nk.CHUNK + 5
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    one, pieces = np.empty_like(x), np.empty_like(x)
    args = (
        np.uint64(7),
        3,
        np.uint64(5),
        np.uint64(6),
        np.uint64(2**31),
        np.float32(2),
    )
    nk.bernoulli_scale(x, one, 0, n, *args)
    for lo, hi in [(0, 1), (1, 4099), (4099, nk.CHUNK + 2), (nk.CHUNK + 2, n)]:
        nk.bernoulli_scale(x, pieces, lo, hi, *args)
    np.testing.assert_array_equal(one.view(np.int32), pieces.view(np.int32))


@pytest.mark.parametrize(
    ("sampler", "scale", "dims"),
    [
        ("bernoulli", "inverted", ()),
        ("bernoulli", "realized", ()),
        ("fixed", "inverted", ()),
        ("bernoulli", "classic", (2,)),
    ],
)
def test_same_result_on_any_thread_count(
    sampler: str, scale: str, dims: tuple[int, ...]
) -> None:
    # Big enough to be split over threads (cpu.PER_THREAD elements each).
    x = torch.randn(16, 9, 4096)
    assert x.numel() >= 2 * cpu.PER_THREAD
    kw = dict(
        p=0.4, seed=2**64 - 3, offset=6, scale=scale, sampler=sampler, shared_dims=dims
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu.masked_scale(x, **kw)
        torch.set_num_threads(3)  # more threads than this machine may have cores
        many = cpu.masked_scale(x, **kw)
    finally:
        torch.set_num_threads(before)
    assert same_bits(one, many)
    assert same_bits(one, reference_masked_scale(x, **kw))


def test_any_layout_and_out() -> None:
    base = torch.randn(6, 40, 8, dtype=torch.float64)
    kw = dict(
        p=0.25, seed=5, offset=1, scale="inverted", sampler="bernoulli", shared_dims=()
    )
    for x in (base.transpose(0, 2), base[:, ::3, 1:], base.permute(1, 2, 0)):
        assert not x.is_contiguous()
        assert same_bits(cpu.masked_scale(x, **kw), reference_masked_scale(x, **kw))
    want = reference_masked_scale(base, **kw)
    out = torch.empty_like(base)
    assert cpu.masked_scale(base, out=out, **kw) is out and same_bits(out, want)
    strided = torch.empty(8, 40, 6, dtype=torch.float64).transpose(0, 2)
    assert cpu.masked_scale(base, out=strided, **kw) is strided
    assert same_bits(strided, want)
    inplace = base.clone()
    assert cpu.masked_scale(inplace, out=inplace, **kw) is inplace
    assert same_bits(inplace, want)
    half = base.to(torch.bfloat16)
    half_out = torch.empty_like(half)
    cpu.masked_scale(half, out=half_out, **kw)
    assert same_bits(half_out, reference_masked_scale(half, **kw))


def test_dropped_specials_are_plus_zero_and_kept_ones_scale() -> None:
    x = torch.tensor([math.inf, -math.inf, math.nan, -0.0, -1.0] * 400)
    got, want = both(x, p=0.5, seed=3)
    assert same_bits(got, want)
    dropped = ~masks.bernoulli_mask((2000,), 0.5, seed=3)
    assert (got[torch.from_numpy(dropped)].view(torch.int32) == 0).all()  # +0.0


def test_backward_is_the_same_op_on_the_gradient() -> None:
    x = torch.randn(32, 300, requires_grad=True)
    grad = torch.randn(32, 300)
    kw = dict(p=0.3, seed=11, offset=5, scale="realized", sampler="fixed")
    y = functional.dropout(x, **kw)
    y.backward(grad)
    assert x.grad is not None
    op = dict(kw, shared_dims=())
    assert same_bits(x.grad, cpu.masked_scale(grad, **op))
    assert same_bits(y.detach(), cpu.masked_scale(x.detach(), **op))


def test_dispatch_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(3)
    monkeypatch.delenv("DROPLAB_BACKEND", raising=False)
    assert kernels.select(x) is cpu.masked_scale
    monkeypatch.setenv("DROPLAB_BACKEND", "numba")
    assert kernels.select(x) is cpu.masked_scale
    monkeypatch.setenv("DROPLAB_BACKEND", "reference")
    assert kernels.select(x) is reference_masked_scale
    # Without Numba the reference path takes over, unless Numba was demanded.
    monkeypatch.setattr(kernels, "numba_available", lambda: False)
    monkeypatch.delenv("DROPLAB_BACKEND")
    assert kernels.select(x) is reference_masked_scale
    monkeypatch.setenv("DROPLAB_BACKEND", "numba")
    with pytest.raises(RuntimeError, match="DROPLAB_BACKEND='numba' was requested"):
        kernels.select(x)


def test_functional_dropout_uses_the_kernel_and_matches_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(64, 512)
    kw = dict(p=0.2, seed=2**63, offset=3, shared_dims=1)
    monkeypatch.delenv("DROPLAB_BACKEND", raising=False)
    fast = functional.dropout(x, **kw)
    monkeypatch.setenv("DROPLAB_BACKEND", "reference")
    assert same_bits(fast, functional.dropout(x, **kw))


def test_masks_are_the_documented_ones() -> None:
    # Known answer from masks.bernoulli_mask's docstring, through the kernel.
    got = cpu.masked_scale(
        torch.ones(2, 3),
        p=0.5,
        seed=0,
        offset=0,
        scale="none",
        sampler="bernoulli",
        shared_dims=(),
    )
    assert got.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    # The fixed sampler keeps exactly round(n (1 - p)) per row.
    kept = cpu.masked_scale(
        torch.ones(50, 33),
        p=0.3,
        seed=1,
        offset=0,
        scale="none",
        sampler="fixed",
        shared_dims=(),
    )
    assert (kept.sum(dim=1) == masks.fixed_keep_count(33, 0.3)).all()


def test_nothing_of_the_input_size_is_saved_for_backward() -> None:
    from droplab.cli import bench

    saved = bench.saved_bytes(n=4096)
    assert saved["droplab"] == 0
    assert saved["torch"] >= 4096  # torch keeps a mask of at least a byte each


def test_bench_cli_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    from droplab import cli

    code = cli.main(
        [
            "bench",
            "--min-log2",
            "8",
            "--max-log2",
            "9",
            "--repeats",
            "1",
            "--skip",
            "mlp",
            "jit",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "| 2^8 |" in printed and "| 2^9 |" in printed
    assert "'droplab': 0" in printed
    assert cli.main(["bench", "--min-log2", "9", "--max-log2", "8"]) == 2


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_split_work_after_fork() -> None:
    # A forked child (e.g. a DataLoader worker) must not wait on the parent's
    # worker threads, which it does not have.
    import multiprocessing

    x = torch.randn(4 * cpu.PER_THREAD)
    kw = dict(
        p=0.5, seed=8, offset=0, scale="inverted", sampler="bernoulli", shared_dims=()
    )
    want = cpu.masked_scale(x, **kw)  # the parent's pool now exists
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        # NumPy arrays, not tensors, cross the pipe: torch's pickling of tensors
        # (shared memory) is not what this test is about.
        job = pool.apply_async(_child_masked_scale, (x.numpy(), kw))
        got = torch.from_numpy(job.get(timeout=60))
    assert same_bits(got, want)


def _child_masked_scale(x: np.ndarray, kw: dict[str, object]) -> np.ndarray:
    torch.set_num_threads(2)  # big enough to be split: the child's own pool
    return cpu.masked_scale(torch.from_numpy(x), **kw).numpy()


# ------------------------------------- issue 31: 16-bit input, chunk by chunk

HALF_CASES = [  # (shape, sampler, scale, shared_dims, layout)
    ((6, 50, 7), "bernoulli", "inverted", (), "contiguous"),  # flat chunks
    ((6, 50, 7), "bernoulli", "classic", (), "transposed"),  # rows of a view
    ((6, 50, 7), "fixed", "inverted", (), "contiguous"),  # whole rows
    ((6, 50, 7), "bernoulli", "realized", (), "contiguous"),
    ((6, 50, 7), "fixed", "realized", (2,), "contiguous"),  # a shared dim
    ((2, 3000), "bernoulli", "inverted", (0,), "contiguous"),  # shared dim 0: whole
    ((4100,), "fixed", "inverted", (), "contiguous"),  # one row: whole
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("shape", "sampler", "scale", "shared", "layout"), HALF_CASES)
def test_16bit_input_in_chunks_gives_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    sampler: str,
    scale: str,
    shared: tuple[int, ...],
    layout: str,
) -> None:
    base = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    x = (
        base.transpose(0, -1).contiguous().transpose(0, -1)
        if layout != "contiguous"
        else base
    )
    kw = dict(p=0.3, seed=2**63 + 5, offset=4 * 2**32 - 3, scale=scale,
              sampler=sampler, shared_dims=shared)  # fmt: skip
    want = reference_masked_scale(x, **kw)
    chunks: list[int] = []
    real = cpu.masked_scale

    def counted(t: torch.Tensor, **k: object) -> torch.Tensor:
        chunks.append(t.numel())
        return real(t, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(cpu, "_half_chunk", lambda: 700)
    monkeypatch.setattr(cpu, "masked_scale", counted)
    assert same_bits(cpu.masked_scale(x, **kw), want)
    cut = not (shared == (0,) or (len(shape) == 1 and sampler == "fixed"))
    assert (len(chunks) > 2) == cut, chunks
    if cut:  # the whole call, then chunks of at most 700 elements
        assert max(chunks[1:]) <= 700, chunks
    inplace = x.clone()
    assert cpu.masked_scale(inplace, out=inplace, **kw) is inplace
    assert same_bits(inplace, want)


def test_16bit_dropout_takes_the_output_and_a_bounded_buffer() -> None:
    """Peak extra memory over the input's size, in a fresh process (see
    benchmarks/bench_half_memory.py): at most the output (1.0) plus a
    bounded working buffer; it was 5.0 before issue 31 (torch's: 2.0)."""
    import subprocess
    import sys

    probe = (
        "import resource, torch, droplab.functional as F\n"
        "x = torch.ones(1 << 26, dtype=torch.float16)\n"
        "F.dropout(torch.ones(1 << 16, dtype=torch.float16), 0.5, seed=0)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "y = F.dropout(x, 0.5, seed=0)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024 / (x.numel() * 2))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    extra = float(done.stdout.split()[-1])
    buffer = 10 * cpu._half_chunk() / 2**27  # f32 in and out, 16-bit copy: 10 B each
    assert extra <= 1.0 + buffer + 0.1, extra


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [0, 3, 2**63 - 5, 2**63, 2**64 + 9, 4 * 2**64 - 7])
def test_the_address_entry_of_small_tensors_is_the_array_kernel(dtype, offset) -> None:
    # Small contiguous float32/float64 tensors take bernoulli_scale_at (Python
    # ints and two addresses); offsets from 2**63 on take the array kernel.
    # Either way the reference's bits, seeds across the whole 64-bit range.
    x = torch.randn(3, 37, dtype=dtype, generator=torch.Generator().manual_seed(3))
    for seed in SEEDS:
        ours, ref = both(x, seed=seed, offset=offset, p=0.3)
        assert same_bits(ours, ref), (seed, offset)
    # a view with a storage offset: the address is its first element's
    base = torch.randn(50, dtype=dtype)
    ours, ref = both(base[7:40], seed=2**64 - 1, offset=offset)
    assert same_bits(ours, ref)


class _Unwrapping(torch.Tensor):
    """A wrapper subclass without memory of its own whose ops return plain
    tensors (as torch.distributed's AsyncCollectiveTensor does)."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> _Unwrapping:
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, dtype=elem.dtype, strides=elem.stride()
        )
        wrapper.elem = elem
        return wrapper

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        def unwrap(t: object) -> object:
            return t.elem if isinstance(t, _Unwrapping) else t

        args = torch.utils._pytree.tree_map(unwrap, args)
        kwargs = torch.utils._pytree.tree_map(unwrap, kwargs or {})
        return func(*args, **kwargs)


def test_a_wrapper_subclass_is_read_through_its_ops_not_its_address() -> None:
    # The address entry of small tensors is for plain tensors only: a wrapper
    # subclass has no memory at its data_ptr (reading it crashed a TP plan).
    x = torch.randn(4, 8)
    ours = cpu.masked_scale(
        _Unwrapping(x), p=0.5, seed=3, offset=1, scale="inverted",
        sampler="bernoulli", shared_dims=(),
    )  # fmt: skip
    expected = reference_masked_scale(
        x, p=0.5, seed=3, offset=1, scale="inverted", sampler="bernoulli",
        shared_dims=(),
    )  # fmt: skip
    assert type(ours) is torch.Tensor  # the ops unwrapped it
    assert same_bits(ours, expected)


@pytest.mark.parametrize(
    ("shape", "shared"),
    [((37, 1), (1,)), ((5, 3, 1, 1), (2, 3)), ((5, 3, 4, 2), (2, 3)), ((6, 7), (1,))],
)
def test_the_address_entry_of_shared_trailing_masks_is_the_reference(
    shape, shared
) -> None:
    # Small masks shared along trailing dims take group_scale's address entry
    # (bernoulli_scale's when the shared dims have size 1).
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    for seed in SEEDS:
        for offset in (0, 3, 2**62 + 7):
            ours, ref = both(x, seed=seed, offset=offset, shared_dims=shared)
            assert same_bits(ours, ref), (seed, offset)
