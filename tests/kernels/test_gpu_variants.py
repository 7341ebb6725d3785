"""The variants' Triton kernels, in Triton's interpreter, against the CPU kernels
and the reference code; and compiled for a GPU without one.

The interpreter is slow: tensors stay small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

pytest.importorskip("triton")
pytest.importorskip("numba")

from droplab.kernels import fused, gpu_variants
from droplab.variants.alpha import alpha_dropout, feature_alpha_dropout
from droplab.variants.gaussian import gaussian_dropout

BITS = {
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
STREAMS = ((0, 0), (7, 3), (2**64 - 1, 4 * 2**32 - 3), (2**32 + 5, 2**62 + 1))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = BITS[a.dtype]
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


@pytest.fixture
def triton_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """CPU tensors through the Triton kernels, in the interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("DROPLAB_BACKEND", "triton")
    yield monkeypatch


def run(
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    op: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of ``op`` on ``x`` with ``DROPLAB_BACKEND=backend``."""
    with monkeypatch.context() as m:
        if backend:
            m.setenv("DROPLAB_BACKEND", backend)
        else:
            m.delenv("DROPLAB_BACKEND", raising=False)
        leaf = x.clone().requires_grad_()
        y = op(leaf)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y.dtype))
        assert leaf.grad is not None
        return y.detach(), leaf.grad


def test_the_triton_kernels_are_chosen(triton_backend: Any) -> None:
    assert fused.backend(torch.zeros(3)) == "triton"


@pytest.mark.parametrize(("seed", "offset"), STREAMS)
@pytest.mark.parametrize("dtype", list(BITS))
def test_gaussian_in_the_interpreter(
    triton_backend: pytest.MonkeyPatch, seed: int, offset: int, dtype: torch.dtype
) -> None:
    x = torch.randn(5, 37, generator=torch.Generator().manual_seed(0)).to(dtype)
    op = lambda t: gaussian_dropout(t, 0.4, seed=seed, offset=offset)  # noqa: E731
    ours = run(triton_backend, "triton", op, x)
    # the interpreter takes log and cos from NumPy, as the reference does
    reference = run(triton_backend, "reference", op, x)
    numba = run(triton_backend, "", op, x)
    grad = torch.linspace(-1, 1, x.numel()).reshape(x.shape).to(dtype)
    # the CPU kernel's noise is within float64 rounding of it: a difference of
    # at most an ulp of the noise (at most 1 + 7 sigma) times the input
    bound = 2 * torch.finfo(dtype).eps * (1 + 7 * (0.4 / 0.6) ** 0.5)
    for a, b, c, t in zip(ours, reference, numba, (x, grad), strict=True):
        assert same_bits(a, b)
        assert torch.all((a.double() - c.double()).abs() <= bound * t.double().abs())


@pytest.mark.parametrize(("seed", "offset"), STREAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("feature", [False, True])
def test_alpha_in_the_interpreter_equals_the_cpu_kernel(
    triton_backend: pytest.MonkeyPatch,
    seed: int,
    offset: int,
    dtype: torch.dtype,
    feature: bool,
) -> None:
    x = torch.randn(3, 4, 5, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    fn = feature_alpha_dropout if feature else alpha_dropout
    op = lambda t: fn(t, 0.3, True, seed=seed, offset=offset)  # noqa: E731
    ours = run(triton_backend, "triton", op, x)
    for other in ("", "reference"):
        for a, b in zip(ours, run(triton_backend, other, op, x), strict=True):
            assert same_bits(a, b)


def test_bfloat16_and_16_bit_alpha_are_left_to_the_reference_code(
    triton_backend: Any,
) -> None:
    x = torch.ones(4, dtype=torch.bfloat16)
    assert gpu_variants.gaussian_noise(x, sigma=1.0, seed=0, offset=0) is None
    half = torch.ones(4, dtype=torch.float16)
    kw = {"p": 0.5, "seed": 0, "offset": 0, "shared_dims": ()}
    assert gpu_variants.alpha_dropout(half, a=1.0, b=0.0, dropped=0.0, **kw) is None
    kw["shared_dims"] = (0,)  # a mask shared along a leading dim
    y = gpu_variants.alpha_dropout(torch.ones(2, 3), a=1.0, b=0.0, dropped=0.0, **kw)
    assert y is None


def _compile_for_hopper(
    kernel: object, signature: dict[str, str], constexprs: dict[str, object]
) -> dict[str, object]:
    """Compile for an H100/H200 (sm_90) without a GPU, FP fusion off as launched."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False}
    ).asm


@pytest.mark.parametrize("scalar", ["i32", "i64"])
@pytest.mark.parametrize("dtype", ["fp16", "fp32", "fp64"])
def test_kernels_compile_for_a_gpu_without_one(dtype: str, scalar: str) -> None:
    gaussian, alpha = gpu_variants._kernels(False)
    stream = dict.fromkeys(("head", "first_lo", "first_hi", "key_lo", "key_hi"), scalar)
    asm = _compile_for_hopper(
        gaussian,
        {
            "x_ptr": f"*{dtype}",
            "out_ptr": f"*{dtype}",
            "sigma_ptr": "*fp64",
            "n": scalar,
            **stream,
            "BLOCK": "constexpr",
            "F64": "constexpr",
        },
        {"BLOCK": gpu_variants.BLOCK, "F64": dtype == "fp64"},
    )
    assert "cubin" in asm and ".target sm_90" in str(asm["ptx"])
    if dtype == "fp16":
        return
    asm = _compile_for_hopper(
        alpha,
        {
            "x_ptr": f"*{dtype}",
            "out_ptr": f"*{dtype}",
            "consts_ptr": f"*{dtype}",
            "n": scalar,
            "group": scalar,
            **stream,
            "threshold": "i64",
            "BLOCK": "constexpr",
        },
        {"BLOCK": gpu_variants.BLOCK},
    )
    assert "cubin" in asm
    # x * a + b rounds twice: no fused multiply-add in the alpha kernel
    assert "fma.rn" not in str(asm["ptx"])
