"""Implementations of ``masked_scale``, and the one place that chooses between them.

- :mod:`droplab.kernels.reference`: NumPy mask, torch multiply; the fallback and
  the oracle of the tests.
- :mod:`droplab.kernels.cpu`: Numba, parallel over CPU threads.
- :mod:`droplab.kernels.gpu`: Triton, for CUDA tensors (and, under
  ``TRITON_INTERPRET=1``, for CPU tensors through Triton's interpreter, which is
  how the tests check it on machines without a GPU).

All follow the random-number contract of docs/DESIGN.md bit for bit (see
:mod:`droplab.kernels.reference`). The choice is made here and only here:
:func:`select` picks the ``masked_scale`` implementation for a tensor (eager
calls run it through :data:`droplab._core.op.MASKED_SCALE`, compiled code
through the registered operator ``droplab::masked_scale``: one kernel either
way). Setting ``DROPLAB_BACKEND`` to ``reference``, ``numba`` or ``triton``
forces a path. Importing this package imports neither Numba
nor Triton; :func:`numba_available` and :func:`triton_available` tell whether
the kernels can be loaded.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from droplab.kernels.reference import reference_masked_scale
from droplab.rng import random_words

__all__ = [
    "BACKENDS",
    "MaskedScale",
    "numba_available",
    "select",
    "stream_words",
    "triton_available",
    "words_on_device",
]

BACKENDS = ("reference", "numba", "triton")

MaskedScale = Callable[..., torch.Tensor]


def _loads(package: str, module: str) -> bool:
    """Whether ``package`` is installed and droplab's ``module`` imports with it."""
    if importlib.util.find_spec(package) is None:
        return False
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@functools.cache
def numba_available() -> bool:
    """Whether Numba is installed and the CPU kernel module imports.

    >>> isinstance(numba_available(), bool)
    True
    """
    return _loads("numba", "droplab.kernels.cpu")


@functools.cache
def triton_available() -> bool:
    """Whether Triton is installed and the GPU kernel module imports.

    >>> isinstance(triton_available(), bool)
    True
    """
    return _loads("triton", "droplab.kernels.gpu")


@functools.cache
def _cpu_kernel() -> MaskedScale:
    """``droplab.kernels.cpu.masked_scale`` (imports Numba on first use)."""
    from droplab.kernels import cpu

    return cpu.masked_scale


# os.environ's own mapping: reading the variable there costs a dict lookup,
# where os.environ.get encodes the key and decodes the value on every call
# (about 1 µs, paid on every eager call). Both see every change made through
# os.environ (monkeypatch.setenv included).
_ENVIRON_DATA: Any = getattr(os.environ, "_data", None)
_BACKEND_KEY: Any = (
    os.environ.encodekey("DROPLAB_BACKEND")
    if _ENVIRON_DATA is not None and hasattr(os.environ, "encodekey")
    else None
)


def _backend_variable() -> str:
    """``DROPLAB_BACKEND``, or "" when it is unset."""
    if _BACKEND_KEY is not None and _BACKEND_KEY not in _ENVIRON_DATA:
        return ""  # unset: one dict lookup
    return os.environ.get("DROPLAB_BACKEND", "")


def select(t: torch.Tensor) -> MaskedScale:
    """The implementation of ``masked_scale`` used for tensor ``t``.

    ``DROPLAB_BACKEND`` (``reference``, ``numba`` or ``triton``) forces a path;
    a forced kernel that cannot run here is an error rather than a silent fallback.
    """
    forced = _backend_variable()
    # The common case first, with nothing more than these lookups: no forced
    # path, a CPU tensor, Numba installed (numba_available is memoised; it is
    # a global of this module, looked up each time, so tests can replace it).
    if not forced and t.is_cpu and numba_available():
        return _cpu_kernel()
    forced = forced.strip()
    if forced not in ("", *BACKENDS):
        allowed = ", ".join(repr(name) for name in BACKENDS)
        raise ValueError(
            f"The DROPLAB_BACKEND environment variable must be unset or one of "
            f"{allowed}; got {forced!r}."
        )
    if forced == "reference":
        return reference_masked_scale
    # kernel dispatch: faster implementations of the same contract are chosen
    # here by device (cpu -> droplab.kernels.cpu when Numba imports; cuda ->
    # droplab.kernels.gpu when Triton imports), falling back to the reference.
    if forced in ("", "numba") and t.device.type == "cpu" and numba_available():
        return _cpu_kernel()
    if (forced == "triton" or t.device.type == "cuda") and triton_available():
        from droplab.kernels import gpu

        if gpu.runs_on(t):  # CUDA, or any device under TRITON_INTERPRET=1
            return gpu.masked_scale
    if forced:
        raise RuntimeError(
            f"DROPLAB_BACKEND={forced!r} was requested, but that kernel is not "
            f"available for a tensor on {t.device.type!r}; unset it or use 'reference'."
        )
    return reference_masked_scale


def words_on_device(device: torch.device) -> bool:
    """Whether :func:`stream_words` draws on ``device`` itself: a CUDA device with
    Triton (unless ``DROPLAB_BACKEND=reference``). The CPU draws in NumPy."""
    return (
        device.type == "cuda"
        and triton_available()
        and _backend_variable().strip() != "reference"
    )


def stream_words(n: int, *, seed: int, offset: int, device: Any) -> torch.Tensor:
    """The ``n`` words of the stream from ``offset``, as int64 on ``device``.

    The word source by device: drawn on a CUDA device by the Triton kernel
    (:func:`droplab.kernels.gpu.stream_words`), else by
    :func:`droplab.rng.random_words` in NumPy and moved; the same words either way.
    """
    device = torch.device(device)
    if words_on_device(device):
        from droplab.kernels import gpu

        return gpu.stream_words(n, seed=seed, offset=offset, device=device)
    words = random_words(seed, offset, n).astype(np.int64)
    return torch.from_numpy(words).to(device)
