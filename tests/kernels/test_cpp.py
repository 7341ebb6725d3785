"""The optional C++ op (droplab.kernels.cpp): built here, then checked bit for bit.

Building takes about a minute (once per test session). Without a C++ compiler
or ninja the module is skipped: the op is optional and droplab falls back.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator

import pytest
import torch

from droplab import functional, nn
from droplab.cli import main
from droplab.kernels import cpp
from droplab.kernels import reference as _backend

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None or importlib.util.find_spec("ninja") is None,
    reason="needs a C++ compiler and ninja to build the optional op",
)

CPP_NODE = "CppNode"  # torch's name for the grad_fn of a C++ autograd Function


@pytest.fixture(scope="module", autouse=True)
def built() -> Iterator[None]:
    """Build into the session's DROPLAB_CPP_DIR (tests/conftest.py); afterwards
    the rest of the suite runs without the op again."""
    os.environ.pop("DROPLAB_CPP", None)
    cpp.build()
    yield
    os.environ["DROPLAB_CPP"] = "0"
    cpp.load.cache_clear()


def uses_cpp(y: torch.Tensor) -> bool:
    return y.grad_fn is not None and CPP_NODE in y.grad_fn.name()


def reference(
    x: torch.Tensor, p: float, seed: int, offset: int, scale: str
) -> torch.Tensor:
    return _backend.reference_masked_scale(
        x.detach(), p=p, seed=seed, offset=offset, scale=scale,
        sampler="bernoulli", shared_dims=(),
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", ["inverted", "classic", "none"])
@pytest.mark.parametrize(
    ("seed", "offset"), [(0, 0), (12345, 7), (2**64 - 1, 2**63 + 5), (2**63, 3)]
)
def test_forward_and_backward_equal_the_reference_bit_for_bit(
    dtype: torch.dtype, scale: str, seed: int, offset: int
) -> None:
    gen = torch.Generator().manual_seed(seed % 1000)
    for shape in [(1,), (5,), (64, 37), (3, 4, 33)]:
        for p in (0.0, 0.3, 0.5, 1.0):
            x = torch.randn(shape, generator=gen, dtype=dtype, requires_grad=True)
            y = functional.dropout(x, p, seed=seed, offset=offset, scale=scale)
            assert uses_cpp(y) or (p == 0.0 and y is x)  # p = 0 returns x, as torch
            assert torch.equal(y, reference(x, p, seed, offset, scale))
            g = torch.randn(shape, generator=gen, dtype=dtype)
            (grad,) = torch.autograd.grad(y, x, g)
            assert torch.equal(grad, reference(g, p, seed, offset, scale))


def test_gradcheck_gradgradcheck_and_nothing_saved() -> None:
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)

    def op(t: torch.Tensor) -> torch.Tensor:
        return functional.dropout(t, 0.4, seed=3, offset=1)

    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradgradcheck(op, (x,))
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t) or t, lambda t: t
    ):
        y = op(x)
    assert uses_cpp(y) and saved == []


@pytest.mark.parametrize(
    ("case", "call"),
    [
        (
            "in place",
            lambda x: functional.dropout(x.clone(), 0.5, seed=1, inplace=True),
        ),
        ("shared dims", lambda x: functional.dropout(x, 0.5, seed=1, shared_dims=(1,))),
        ("realized", lambda x: functional.dropout(x, 0.5, seed=1, scale="realized")),
        ("fixed", lambda x: functional.dropout(x, 0.5, seed=1, sampler="fixed")),
        ("float16", lambda x: functional.dropout(x.half(), 0.5, seed=1)),
        ("not contiguous", lambda x: functional.dropout(x.t(), 0.5, seed=1)),
        ("large", lambda x: functional.dropout(x.repeat(2000, 1), 0.5, seed=1)),
    ],
)
def test_other_cases_keep_the_usual_path(case: str, call: object) -> None:
    x = torch.randn(300, 8, requires_grad=True)
    y = call(x)  # type: ignore[operator]
    assert not uses_cpp(y), case


def test_the_switches_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(10, requires_grad=True)
    assert uses_cpp(functional.dropout(x, 0.5, seed=1))
    monkeypatch.setenv("DROPLAB_BACKEND", "numba")  # a forced path is honoured
    assert not uses_cpp(functional.dropout(x, 0.5, seed=1))
    monkeypatch.delenv("DROPLAB_BACKEND")
    monkeypatch.setenv("DROPLAB_CPP", "0")
    cpp.load.cache_clear()
    try:
        assert cpp.load() is None and not cpp.available()
        assert not uses_cpp(functional.dropout(x, 0.5, seed=1))
    finally:
        monkeypatch.delenv("DROPLAB_CPP")
        cpp.load.cache_clear()
    assert cpp.available()


def test_modules_give_the_same_numbers_with_and_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(64, 512)

    def three_calls() -> list[torch.Tensor]:
        torch.manual_seed(0)
        seeded, fresh = nn.Dropout(0.3, seed=5), nn.Dropout(0.3)
        return [seeded(x), seeded(x), fresh(x)]

    fast = three_calls()
    monkeypatch.setenv("DROPLAB_CPP", "0")
    cpp.load.cache_clear()
    try:
        slow = three_calls()
    finally:
        monkeypatch.delenv("DROPLAB_CPP")
        cpp.load.cache_clear()
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))


def test_build_command_checks_the_build(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build-cpp"]) == 0  # already built: ninja has nothing to do
    assert "droplab uses it from now on" in capsys.readouterr().out
    assert cpp.library_path().is_file()


def test_without_a_build_nothing_is_compiled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("DROPLAB_CPP_DIR", str(tmp_path))
    saved = list(cpp._LOADED)
    cpp._LOADED.clear()
    cpp.load.cache_clear()
    try:
        assert cpp.load() is None
        assert list(cpp.cache_dir().iterdir()) == []  # load never builds
    finally:
        cpp._LOADED[:] = saved
        monkeypatch.undo()
        cpp.load.cache_clear()
