"""An optional C++ autograd op for dropout on small CPU tensors: no Python per call.

Why. On a tensor of a training step's size (a batch of 64 x 512 units) the
Numba kernel takes about 16 us, but the Python around it (the autograd
Function, its backward node, the argument handling, the tensor-to-NumPy
views) costs more than the kernel, forward and backward. This module compiles
a small C++ extension whose autograd Function calls the *same* Numba kernels
(``droplab.kernels._numba_philox.bernoulli_scale``, compiled as C callbacks
with ``numba.cfunc``) on the tensors' memory: its forward and backward run
without entering Python, the backward keeps only the four numbers that name
the mask, and the result is bit for bit the one of the other paths (tests).

What it covers: the training default and its neighbours, i.e. a contiguous
float32 or float64 CPU tensor of fewer than ``2 * cpu.PER_THREAD`` elements,
the Bernoulli sampler, no shared dimensions, scale ``inverted``, ``classic``
or ``none``, not in place. Everything else (and larger tensors, where the
parallel Python path is as fast) keeps the usual path.

It is opt-in at build time. Compiling needs a C++ compiler, ``ninja`` and
PyTorch's headers and takes about a minute, so droplab never compiles on its
own: run ``droplab build-cpp`` (:mod:`droplab.cli.build_cpp`, or :func:`build`)
once. From then on every
process that finds the built library in the cache folder
(``$DROPLAB_CPP_DIR``, default ``~/.cache/droplab/cpp``) uses it. Setting
``DROPLAB_CPP=0`` turns it off; ``DROPLAB_BACKEND`` (any value) bypasses it too.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = ["available", "build", "cache_dir", "dropout", "library_path", "load"]

_SOURCE = r"""
#include <torch/extension.h>

// The Numba kernels, as C callbacks: out = where(word < threshold, x * factor, +0)
// on n elements, words from Philox4x32-10 at block `base`, lane `head`, key (k0, k1).
using Kernel32 = void (*)(const float*, float*, int64_t, uint64_t, int64_t,
                          uint64_t, uint64_t, uint64_t, float);
using Kernel64 = void (*)(const double*, double*, int64_t, uint64_t, int64_t,
                          uint64_t, uint64_t, uint64_t, double);
static Kernel32 kernel32 = nullptr;
static Kernel64 kernel64 = nullptr;

void set_kernels(int64_t address32, int64_t address64) {
  kernel32 = reinterpret_cast<Kernel32>(address32);
  kernel64 = reinterpret_cast<Kernel64>(address64);
}

static torch::Tensor masked_scale(const torch::Tensor& t, int64_t seed, int64_t offset,
                                  int64_t threshold, double factor) {
  TORCH_CHECK(kernel32 != nullptr && kernel64 != nullptr, "droplab: kernels not set");
  auto x = t.contiguous();
  auto out = torch::empty_like(x);
  const uint64_t s = static_cast<uint64_t>(seed), o = static_cast<uint64_t>(offset);
  const int64_t n = x.numel();
  if (n == 0) return out;
  if (x.scalar_type() == torch::kFloat) {
    kernel32(x.data_ptr<float>(), out.data_ptr<float>(), n, o >> 2,
             static_cast<int64_t>(o & 3), s & 0xffffffffULL, s >> 32,
             static_cast<uint64_t>(threshold), static_cast<float>(factor));
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kDouble, "droplab: float32 or float64 only");
    kernel64(x.data_ptr<double>(), out.data_ptr<double>(), n, o >> 2,
             static_cast<int64_t>(o & 3), s & 0xffffffffULL, s >> 32,
             static_cast<uint64_t>(threshold), factor);
  }
  return out;
}

struct Dropout : public torch::autograd::Function<Dropout> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               int64_t seed, int64_t offset, int64_t threshold,
                               double factor) {
    ctx->saved_data["seed"] = seed;  // four numbers: no tensor is saved
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["threshold"] = threshold;
    ctx->saved_data["factor"] = factor;
    return masked_scale(x, seed, offset, threshold, factor);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const int64_t seed = ctx->saved_data["seed"].toInt();
    const int64_t offset = ctx->saved_data["offset"].toInt();
    const int64_t threshold = ctx->saved_data["threshold"].toInt();
    const double factor = ctx->saved_data["factor"].toDouble();
    // dy/dx = mask * factor: the same op on the gradient. Recorded again when
    // the backward itself is differentiated (create_graph=True).
    torch::Tensor grad = torch::GradMode::is_enabled()
        ? Dropout::apply(grads[0], seed, offset, threshold, factor)
        : masked_scale(grads[0], seed, offset, threshold, factor);
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor dropout(torch::Tensor x, int64_t seed, int64_t offset, int64_t threshold,
                      double factor) {
  return Dropout::apply(x, seed, offset, threshold, factor);
}
"""

_FUNCTIONS = ["set_kernels", "dropout"]


def _name() -> str:
    """The extension's name: changes with its source and the torch build."""
    digest = hashlib.sha256(
        (_SOURCE + torch.__version__ + sys.version).encode()
    ).hexdigest()[:12]
    return f"droplab_cpp_{digest}"


def cache_dir() -> Path:
    """``$DROPLAB_CPP_DIR``, else ``~/.cache/droplab/cpp``."""
    chosen = os.environ.get("DROPLAB_CPP_DIR")
    return Path(chosen) if chosen else Path.home() / ".cache" / "droplab" / "cpp"


def library_path() -> Path:
    """Where the built library of this droplab and torch lives (it may not exist)."""
    return cache_dir() / _name() / f"{_name()}.so"  # torch's builder names it so


@functools.cache
def _callbacks() -> tuple[Any, Any]:
    """The Numba kernels as C callbacks (kept alive here: their addresses are used)."""
    from numba import carray, cfunc, types

    from droplab.kernels import _numba_philox as nk

    def callback(real: Any) -> Any:
        signature = types.void(
            types.CPointer(real), types.CPointer(real), types.int64, types.uint64,
            types.int64, types.uint64, types.uint64, types.uint64, real,
        )  # fmt: skip

        @cfunc(signature, cache=True)
        def run(x, out, n, base, head, k0, k1, threshold, factor):
            nk.bernoulli_scale(
                carray(x, (n,)), carray(out, (n,)), 0, n, base, head, k0, k1,
                threshold, factor,
            )  # fmt: skip

        return run

    return callback(types.float32), callback(types.float64)


def _connect(module: ModuleType) -> ModuleType:
    single, double = _callbacks()
    module.set_kernels(single.address, double.address)
    return module


def build(verbose: bool = False) -> ModuleType:
    """Compile the extension into :func:`cache_dir` (about a minute) and load it.

    Raises whatever ``torch.utils.cpp_extension`` raises when no compiler or
    ``ninja`` is found.
    """
    from torch.utils.cpp_extension import load_inline

    directory = library_path().parent
    directory.mkdir(parents=True, exist_ok=True)
    module = load_inline(
        _name(),
        cpp_sources=[_SOURCE],
        functions=_FUNCTIONS,
        extra_cflags=["-O2"],
        build_directory=str(directory),
        verbose=verbose,
    )
    _LOADED.clear()
    _LOADED.append(_connect(module))
    load.cache_clear()
    return _LOADED[0]


# The extension once imported in this process (by build or load): an extension
# module cannot be imported twice.
_LOADED: list[ModuleType] = []


@functools.cache
def load() -> ModuleType | None:
    """The built extension, or None (not built, or turned off by ``DROPLAB_CPP=0``).

    Never compiles. Memoised: a process decides once (``load.cache_clear()``
    makes it decide again).
    """
    if os.environ.get("DROPLAB_CPP", "1").strip() == "0":
        return None
    if _LOADED:
        return _LOADED[0]
    path = library_path()
    if not path.is_file() or importlib.util.find_spec("numba") is None:
        return None
    spec = importlib.util.spec_from_file_location(_name(), path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .so path
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _LOADED.append(_connect(module))
    return _LOADED[0]


def available() -> bool:
    """Whether the extension is built and loads (see :func:`load`)."""
    return load() is not None


def dropout(
    x: torch.Tensor, seed: int, offset: int, threshold: int, factor: float
) -> torch.Tensor:
    """The C++ op; the caller checked that :func:`load` is not None and that
    ``x`` is one of the covered cases (module docstring)."""
    module = load()
    if module is None:  # pragma: no cover - callers check first
        raise RuntimeError("droplab's C++ op is not built: run droplab build-cpp")
    # int64 arguments: seeds and offsets of 2**63 and more travel as their bits.
    signed_seed = seed - (1 << 64) if seed >= 1 << 63 else seed
    signed_offset = offset - (1 << 64) if offset >= 1 << 63 else offset
    result: torch.Tensor = module.dropout(
        x, signed_seed, signed_offset, threshold, factor
    )
    return result
