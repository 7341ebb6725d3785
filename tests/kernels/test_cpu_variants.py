"""The variants' fused CPU kernels against their reference code (the oracle).

The oracle is each variant run with ``DROPLAB_BACKEND=reference`` (its NumPy
and torch code of before the kernels): alpha, feature alpha, channel dropout,
DropPath and DropBlock give the same bits; Gaussian and Concrete noise agree to
float64 rounding (their logarithm and cosine are fdlibm's algorithms, the
reference's NumPy's or torch's: a few ulp of float64, see
``droplab.kernels._numba_variants``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from droplab import functional
from droplab._core.stream import normal_noise, uniform_noise
from droplab.kernels import _numba_variants as nv
from droplab.kernels import cpu, cpu_variants, fused
from droplab.kernels.reference import reference_masked_scale
from droplab.rng import random_words
from droplab.variants import (
    concrete_dropout,
    drop_block2d,
    drop_path,
    dropout1d,
    dropout2d,
)
from droplab.variants.alpha import alpha_dropout, feature_alpha_dropout
from droplab.variants.gaussian import gaussian_dropout

BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
DTYPES = tuple(BITS)
SEEDS = (0, 7, 2**32 + 5, 2**64 - 1)
OFFSETS = (0, 1, 3, 4 * 2**32 - 2, 2**62 + 5)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = BITS[a.dtype]
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def reference(monkeypatch: pytest.MonkeyPatch, call: Callable[[], Any]) -> Any:
    """``call()`` with the reference path forced."""
    with monkeypatch.context() as m:
        m.setenv("DROPLAB_BACKEND", "reference")
        return call()


def stream(seed: int, offset: int) -> tuple[Any, ...]:
    return cpu._stream_args(seed, offset)


def forward_and_grad(
    op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_()
    y = op(leaf)
    grad = torch.linspace(-1.0, 1.0, y.numel()).reshape(y.shape).to(y.dtype)
    y.backward(grad)
    assert leaf.grad is not None
    return y.detach(), leaf.grad


def test_the_fused_kernels_serve_cpu_tensors_unless_forced(monkeypatch):
    assert fused.backend(torch.zeros(3)) == "numba"
    assert fused.backend(torch.zeros(4, 3).T) == ""  # not contiguous
    assert fused.backend(torch.zeros(3, dtype=torch.int64)) == ""
    monkeypatch.setenv("DROPLAB_BACKEND", "reference")
    assert fused.backend(torch.zeros(3)) == ""
    assert fused.gaussian_noise(torch.zeros(3), sigma=1.0, seed=0, offset=0) is None
    monkeypatch.setenv("DROPLAB_BACKEND", "no such backend")
    assert fused.backend(torch.zeros(3)) == ""  # the reference code says why


# --- Gaussian ---------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_normals_are_the_reference_ones_to_float64_rounding(seed, offset):
    n = 9001  # over a chunk, not a multiple of 4
    z = np.empty(n)
    nv.normal_words(z, 0, n, *stream(seed, offset))
    ref = normal_noise(
        (n,), seed=seed, offset=offset, dtype=torch.float64, device="cpu"
    ).numpy()
    # the documented bound: 4 ulp of the reference's value
    assert np.all(np.abs(z - ref) <= 4 * np.spacing(np.abs(ref)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_fused_against_reference(monkeypatch, dtype):
    x = torch.randn(40, 257, generator=torch.Generator().manual_seed(0)).to(dtype)
    op = lambda t: gaussian_dropout(t, 0.3, seed=11, offset=5)  # noqa: E731
    y, g = forward_and_grad(op, x)
    y_ref, g_ref = reference(monkeypatch, lambda: forward_and_grad(op, x))
    if dtype == torch.float64:
        # noise within float64 rounding: a few ulp of 1 + sigma z, times x
        tol = 8 * 2.0**-52 * (1 + 7 * math.sqrt(0.3 / 0.7))
        grad = torch.linspace(-1.0, 1.0, x.numel()).reshape(x.shape).to(dtype)
        assert torch.all((y - y_ref).abs() <= tol * x.abs())
        assert torch.all((g - g_ref).abs() <= tol * grad.abs())
    else:
        # rounded to 32 or 16 bits, the noise is the same but for the rare
        # value a float64 ulp away from a rounding boundary
        for a, b in ((y, y_ref), (g, g_ref)):
            assert (a != b).float().mean() <= 1e-3
            assert torch.allclose(a, b, rtol=2 * torch.finfo(dtype).eps, atol=0)


def test_gaussian_range_kernel_on_ranges_and_slices():
    n, seed, offset = 9001, 2**40 + 3, 4 * 2**32 - 3
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    whole = np.empty_like(x)
    nv.gaussian_scale(x, whole, 0, n, *stream(seed, offset), 0.7)
    part = np.full_like(x, np.nan)
    nv.gaussian_scale(x, part, 3, 8999, *stream(seed, offset), 0.7)
    np.testing.assert_array_equal(part[3:8999], whole[3:8999])
    assert np.isnan(part[:3]).all() and np.isnan(part[8999:]).all()
    start = 1237  # a slice is run with its own stream start: 2 per element
    tail = np.empty(n - start, np.float32)
    nv.gaussian_scale(
        x[start:], tail, 0, n - start, *stream(seed, offset + 2 * start), 0.7
    )
    np.testing.assert_array_equal(tail, whole[start:])


def test_gaussian_same_result_on_any_thread_count():
    x = torch.randn(3 * cpu.PER_THREAD // 4 + 5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gaussian_dropout(x, 0.5, seed=3)
        torch.set_num_threads(2)
        two = gaussian_dropout(x, 0.5, seed=3)
    finally:
        torch.set_num_threads(before)
    assert same_bits(one, two)


# --- alpha, feature alpha, channel, DropPath: the same bits -------------------

shapes = st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple)


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    p=st.sampled_from((0.1, 0.5, 0.9, 1.0)),
    seed=st.sampled_from(SEEDS),
    offset=st.sampled_from(OFFSETS),
    feature=st.booleans(),
)
def test_alpha_and_feature_alpha_same_bits(shape, dtype, p, seed, offset, feature):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    fn = feature_alpha_dropout if feature else alpha_dropout
    op = lambda t: fn(t, p, True, seed=seed, offset=offset)  # noqa: E731
    with pytest.MonkeyPatch.context() as monkeypatch:
        y, g = forward_and_grad(op, x)
        y_ref, g_ref = reference(monkeypatch, lambda: forward_and_grad(op, x))
    assert same_bits(y, y_ref)
    assert same_bits(g, g_ref)


@pytest.mark.parametrize("fn", [alpha_dropout, feature_alpha_dropout])
def test_alpha_gradcheck_and_gradgradcheck_on_the_fused_path(fn):
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    f = lambda t: fn(t, 0.3, True, seed=2, offset=1)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_alpha_range_kernel_on_ranges_and_slices():
    n, seed, offset, group = 4099, 5, 2**62 + 3, 1
    x = np.random.default_rng(0).standard_normal(3 * n).astype(np.float64)
    args = (np.uint64(2**31), 0.9, 0.1, -1.5)
    for group in (1, 3):
        size = n * group
        whole = np.empty(size)
        nv.alpha_scale(x[:size], whole, 0, n, group, *stream(seed, offset), *args)
        part = np.full(size, np.nan)
        nv.alpha_scale(x[:size], part, 5, 4097, group, *stream(seed, offset), *args)
        np.testing.assert_array_equal(
            part[5 * group : 4097 * group], whole[5 * group : 4097 * group]
        )
        start = 1001  # mask elements: a slice starts its stream at offset + start
        tail = np.empty(size - start * group)
        nv.alpha_scale(
            x[start * group : size],
            tail,
            0,
            n - start,
            group,
            *stream(seed, offset + start),
            *args,
        )
        np.testing.assert_array_equal(tail, whole[start * group :])


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    shape=st.lists(st.integers(1, 5), min_size=3, max_size=4).map(tuple),
    dtype=st.sampled_from(DTYPES),
    p=st.sampled_from((0.0, 0.2, 0.5, 1.0)),
    seed=st.sampled_from(SEEDS),
    offset=st.sampled_from(OFFSETS),
    which=st.sampled_from(("dropout1d", "dropout2d", "drop_path")),
)
def test_shared_masks_same_bits(shape, dtype, p, seed, offset, which):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    if which == "dropout1d":
        x = x.reshape(shape[0], shape[1], -1)
        op = lambda t: dropout1d(t, p, seed=seed, offset=offset)  # noqa: E731
    elif which == "dropout2d":
        x = x.reshape(*shape[:3], -1)  # 4-d (3-d input warns)
        op = lambda t: dropout2d(t, p, seed=seed, offset=offset)  # noqa: E731
    else:
        op = lambda t: drop_path(t, p, seed=seed, offset=offset)  # noqa: E731
    with pytest.MonkeyPatch.context() as monkeypatch:
        y, g = forward_and_grad(op, x)
        y_ref, g_ref = reference(monkeypatch, lambda: forward_and_grad(op, x))
    assert same_bits(y, y_ref)
    assert same_bits(g, g_ref)


@pytest.mark.parametrize("shared", [(1,), (2,), (1, 2), (0, 1, 2), (2, 3)])
def test_masked_scale_shared_trailing_dims(shared):
    x = torch.randn(3, 4, 5, 6)
    args = {"p": 0.4, "seed": 9, "offset": 3, "scale": "inverted"}
    args.update(sampler="bernoulli", shared_dims=shared)
    assert same_bits(cpu.masked_scale(x, **args), reference_masked_scale(x, **args))


def test_group_scale_range_kernel_on_ranges_and_slices():
    group, n, seed, offset = 7, 1030, 3, 4 * 2**32 - 1
    x = np.random.default_rng(1).standard_normal(group * n).astype(np.float32)
    thr, factor = np.uint64(2**31), np.float32(2.0)
    whole = np.empty_like(x)
    nv.group_scale(x, whole, 0, n, group, *stream(seed, offset), thr, factor)
    start = 13
    tail = np.empty(group * (n - start), np.float32)
    nv.group_scale(
        x[group * start :],
        tail,
        0,
        n - start,
        group,
        *stream(seed, offset + start),
        thr,
        factor,
    )
    np.testing.assert_array_equal(tail, whole[group * start :])


# --- DropBlock ------------------------------------------------------------------


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    block=st.integers(1, 6),
    p=st.sampled_from((0.05, 0.3, 0.9, 1.0)),
    shared=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    offset=st.sampled_from(OFFSETS),
)
def test_drop_block_same_bits(n, c, h, w, block, p, shared, dtype, offset):
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(3)).to(dtype)
    op = lambda t: drop_block2d(  # noqa: E731
        t, p, block, seed=21, offset=offset, shared_channels=shared
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        y, g = forward_and_grad(op, x)
        y_ref, g_ref = reference(monkeypatch, lambda: forward_and_grad(op, x))
    assert same_bits(y, y_ref)
    assert same_bits(g, g_ref)


def test_block_keep_range_kernel_on_planes_and_slices():
    planes, h, w, seed, offset = 11, 7, 9, 4, 4 * 2**32 - 3
    thr = np.uint64(2**30)
    whole = np.empty(planes * h * w, np.uint8)
    counts = np.zeros(planes, np.int64)
    nv.block_keep(whole, counts, 0, planes, h, w, 3, 2, *stream(seed, offset), thr)
    assert counts.sum() == whole.sum()
    part = np.full_like(whole, 7)
    nv.block_keep(
        part, np.zeros(planes, np.int64), 2, 9, h, w, 3, 2, *stream(seed, offset), thr
    )
    np.testing.assert_array_equal(
        part[2 * h * w : 9 * h * w], whole[2 * h * w : 9 * h * w]
    )
    start = 4  # planes from 4 on, with their own stream start
    tail = np.empty((planes - start) * h * w, np.uint8)
    nv.block_keep(
        tail,
        np.zeros(planes - start, np.int64),
        0,
        planes - start,
        h,
        w,
        3,
        2,
        *stream(seed, offset + start * h * w),
        thr,
    )
    np.testing.assert_array_equal(tail, whole[start * h * w :])


def test_drop_block_gradcheck_on_the_fused_path():
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    f = lambda t: drop_block2d(t, 0.3, 3, seed=2)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))


# --- Concrete -------------------------------------------------------------------


@pytest.mark.parametrize("offset", OFFSETS)
def test_logistic_noise_is_the_reference_one_to_float64_rounding(offset):
    n = 9001
    logits = cpu_variants.uniform_logits(
        (n,), seed=77, offset=offset, dtype=torch.float64
    ).numpy()
    u = uniform_noise((n,), seed=77, offset=offset, dtype=torch.float64, device="cpu")
    ref = (torch.log(u) - torch.log1p(-u)).numpy()
    # each logarithm within 2 ulp of its value (log u up to 22.2 in size)
    bound = 2 * (np.spacing(np.log(u.numpy())) + np.spacing(np.log1p(-u.numpy())))
    assert np.all(np.abs(logits - ref) <= np.abs(bound) + np.spacing(np.abs(ref)))


def test_uniform_logits_range_kernel_on_slices():
    n, seed, offset = 9001, 3, 2**62 + 1
    whole = np.empty(n)
    nv.uniform_logits(whole, 0, n, *stream(seed, offset))
    tail = np.empty(n - 999)
    nv.uniform_logits(tail, 0, n - 999, *stream(seed, offset + 999))
    np.testing.assert_array_equal(tail, whole[999:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_concrete_fused_against_reference(monkeypatch, dtype):
    x = torch.randn(30, 101, generator=torch.Generator().manual_seed(4)).to(dtype)

    def run() -> tuple[torch.Tensor, ...]:
        leaf = x.clone().requires_grad_()
        p = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        y = concrete_dropout(leaf, p, 0.1, seed=5, offset=2)
        y.backward(torch.ones_like(y))
        assert leaf.grad is not None and p.grad is not None
        return y.detach(), leaf.grad, p.grad

    ours = run()
    theirs = reference(monkeypatch, run)
    eps = torch.finfo(dtype).eps
    for a, b in zip(ours, theirs, strict=True):
        # the noise within float64 rounding; the sums over x agree as sums do
        assert torch.allclose(a, b, rtol=64 * eps, atol=64 * eps)


def concrete_numpy(
    x: np.ndarray, grad: np.ndarray, p: float, t: float, seed: int, offset: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Concrete dropout's output and gradients written out in float64 NumPy."""
    u = (random_words(seed, offset, x.size).astype(np.float64) + 0.5) / 2**32
    drop = 1 / (1 + np.exp(-(np.log(p) - np.log1p(-p) + np.log(u) - np.log1p(-u)) / t))
    keep = 1 - drop
    r = keep / (1 - p)
    d_drop = drop * keep / t * (1 / p + 1 / (1 - p))
    dr_dp = -d_drop / (1 - p) + keep / (1 - p) ** 2
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    return (
        (flat_x * r).reshape(x.shape),
        (flat_g * r).reshape(x.shape),
        float(np.sum(flat_g * flat_x * dr_dp)),
    )


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("p, t", [(0.3, 0.1), (0.05, 0.5), (0.9, 0.02)])
def test_concrete_kernels_against_numpy_float64(offset, p, t):
    gen = torch.Generator().manual_seed(offset % 1000)
    x = torch.randn(5000, dtype=torch.float64, generator=gen)
    grad = torch.randn(5000, dtype=torch.float64, generator=gen)
    y = cpu_variants.concrete_scale(x, p=p, temperature=t, seed=9, offset=offset)
    grad_x, grad_p = cpu_variants.concrete_grad(
        x, grad, p=p, temperature=t, seed=9, offset=offset
    )
    y_ref, gx_ref, gp_ref = concrete_numpy(x.numpy(), grad.numpy(), p, t, 9, offset)
    # a few roundings of float64 (the sigmoid's argument is scaled by 1/t),
    # relative to x / (1 - p): 1 - drop loses its relative precision when the
    # kept fraction is small, in both
    tol = 2.0**-52 * 64 / t
    assert np.all(np.abs(y.numpy() - y_ref) <= tol * np.abs(x.numpy()) / (1 - p))
    assert np.all(
        np.abs(grad_x.numpy() - gx_ref) <= tol * np.abs(grad.numpy()) / (1 - p)
    )
    scale = np.sum(np.abs(grad.numpy() * x.numpy())) / (1 - p) ** 2 / t
    assert abs(grad_p - gp_ref) <= tol * scale


@pytest.mark.parametrize("dtype", DTYPES)
def test_concrete_fused_backward_takes_any_grad_layout(monkeypatch, dtype):
    x = torch.randn(7, 33, generator=torch.Generator().manual_seed(1)).to(dtype)

    def run() -> tuple[torch.Tensor, ...]:
        leaf = x.clone().requires_grad_()
        p = torch.tensor(0.2, requires_grad=True)
        y = concrete_dropout(leaf, p, 0.3, seed=3, offset=1)
        y.sum().backward()  # an expanded (stride 0) gradient
        assert leaf.grad is not None and p.grad is not None
        return y.detach(), leaf.grad, p.grad

    ours = run()
    theirs = reference(monkeypatch, run)
    eps = torch.finfo(dtype).eps
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.allclose(a, b, rtol=64 * eps, atol=64 * eps)


def test_concrete_fused_on_any_layout_same_bits():
    x = torch.randn(4, 6, 5, 7).to(memory_format=torch.channels_last)
    for inp in (x, x[:, 1:, ::2], x.transpose(0, 3)):
        results = []
        for t in (inp, inp.contiguous()):
            leaf = t.clone().requires_grad_()
            p = torch.tensor(0.2, requires_grad=True)
            y = concrete_dropout(leaf, p, 0.3, seed=6)
            y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
            assert leaf.grad is not None and p.grad is not None
            results.append((y.detach(), leaf.grad, p.grad))
        assert results[0][0].stride() == torch.empty_like(inp).stride()
        for a, b in zip(*results, strict=True):
            assert same_bits(a, b)


def test_concrete_range_kernels_on_chunk_ranges():
    chunk = nv.CONCRETE_CHUNK
    n, seed, offset = 5 * chunk + 77, 2**33 + 1, 4 * 2**32 - 1
    rng = np.random.default_rng(2)
    x = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    consts = cpu_variants._concrete_consts(0.4, 0.1, torch.float32)
    chunks = -(-n // chunk)
    whole, parts = np.empty_like(x), np.empty_like(x)
    nv.concrete_scale(x, whole, 0, chunks, *stream(seed, offset), consts[:4])
    nv.concrete_scale(x, parts, 0, 2, *stream(seed, offset), consts[:4])
    nv.concrete_scale(x, parts, 2, chunks, *stream(seed, offset), consts[:4])
    np.testing.assert_array_equal(parts, whole)
    gx_whole, gx_parts = np.empty_like(x), np.empty_like(x)
    sums_whole, sums_parts = np.zeros(chunks), np.zeros(chunks)
    nv.concrete_grad(
        x, g, gx_whole, sums_whole, 0, chunks, *stream(seed, offset), consts
    )
    for lo, hi in ((0, 1), (1, 4), (4, chunks)):
        nv.concrete_grad(
            x, g, gx_parts, sums_parts, lo, hi, *stream(seed, offset), consts
        )
    np.testing.assert_array_equal(gx_parts, gx_whole)
    np.testing.assert_array_equal(sums_parts, sums_whole)


def test_concrete_same_result_on_any_thread_count():
    x = torch.randn(cpu.PER_THREAD // 2 + 3, requires_grad=True)
    p = torch.tensor(0.3, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            x.grad = p.grad = None
            y = concrete_dropout(x, p, 0.1, seed=4)
            y.backward(torch.ones_like(y))
            assert x.grad is not None and p.grad is not None
            results.append((y.detach(), x.grad.clone(), p.grad.clone()))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        assert same_bits(a, b)


def test_standard_dropout_is_untouched():
    x = torch.randn(1000)
    y = functional.dropout(x, 0.5, seed=1)
    ref = reference_masked_scale(
        x,
        p=0.5,
        seed=1,
        offset=0,
        scale="inverted",
        sampler="bernoulli",
        shared_dims=(),
    )
    assert same_bits(y, ref)
