"""droplab: dropout that is reproducible on every backend, and a lab that explains it.

The same ``(seed, offset)`` gives the same mask in NumPy, in the PyTorch CPU path
and in the GPU kernel. See docs/DESIGN.md for the contracts and the layers.

The names below are imported on first use (PEP 562), so ``import droplab``
and ``droplab --help`` do not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Dropout": "droplab._core.dropout",
    "dropout": "droplab._core.dropout",
    "mc_dropout": "droplab._core.modes",
    "weight_scaled": "droplab.interop.weight_scaling",
    "StochasticModule": "droplab._core.module",
    "InputDtypeError": "droplab._validation",
    "InputRankError": "droplab._validation",
    "conversion_plan": "droplab.interop",
    "convert": "droplab.interop",
    "intercept": "droplab.interop",
    "revert": "droplab.interop",
    "bernoulli_mask": "droplab.masks",
    "fixed_count_mask": "droplab.masks",
    "keep_threshold": "droplab.masks",
    "philox4x32": "droplab.rng",
    "random_words": "droplab.rng",
    "mc_predict": "droplab.uncertainty.mc",
}

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from droplab._core.dropout import Dropout as Dropout
    from droplab._core.dropout import dropout as dropout
    from droplab._core.modes import mc_dropout as mc_dropout
    from droplab._core.module import StochasticModule as StochasticModule
    from droplab._validation import InputDtypeError as InputDtypeError
    from droplab._validation import InputRankError as InputRankError
    from droplab.interop import conversion_plan as conversion_plan
    from droplab.interop import convert as convert  # type: ignore[no-redef]
    from droplab.interop import intercept as intercept  # type: ignore[no-redef]
    from droplab.interop import revert as revert
    from droplab.interop.weight_scaling import weight_scaled as weight_scaled
    from droplab.masks import bernoulli_mask as bernoulli_mask
    from droplab.masks import fixed_count_mask as fixed_count_mask
    from droplab.masks import keep_threshold as keep_threshold
    from droplab.rng import philox4x32 as philox4x32
    from droplab.rng import random_words as random_words
    from droplab.uncertainty.mc import mc_predict as mc_predict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'droplab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Dropout",
    "InputDtypeError",
    "InputRankError",
    "StochasticModule",
    "__version__",
    "bernoulli_mask",
    "conversion_plan",
    "convert",
    "dropout",
    "fixed_count_mask",
    "intercept",
    "keep_threshold",
    "mc_dropout",
    "mc_predict",
    "philox4x32",
    "random_words",
    "revert",
    "weight_scaled",
]
