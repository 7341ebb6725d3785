"""Fast implementations of :func:`droplab._backend.masked_scale`.

- :mod:`droplab.kernels.cpu`: Numba, parallel over CPU threads.
- :mod:`droplab.kernels.gpu`: Triton, for CUDA tensors (and, under
  ``TRITON_INTERPRET=1``, for CPU tensors through Triton's interpreter, which is
  how the tests check it on machines without a GPU).

Both follow the random-number contract of docs/DESIGN.md bit for bit; the
reference path in :mod:`droplab._backend` stays the fallback when a kernel's
compiler is not installed. Importing this package imports neither Numba nor
Triton; :func:`numba_available` and :func:`triton_available` tell whether the
kernels can be loaded.
"""

from __future__ import annotations

import functools
import importlib.util

__all__ = ["numba_available", "triton_available"]


@functools.cache
def numba_available() -> bool:
    """Whether Numba is installed and the CPU kernel module imports.

    >>> isinstance(numba_available(), bool)
    True
    """
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import droplab.kernels.cpu  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def triton_available() -> bool:
    """Whether Triton is installed and the GPU kernel module imports.

    >>> isinstance(triton_available(), bool)
    True
    """
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import droplab.kernels.gpu  # noqa: F401
    except ImportError:
        return False
    return True
