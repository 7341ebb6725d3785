"""droplab: dropout that is reproducible on every backend, and a lab that explains it.

The same ``(seed, offset)`` gives the same mask in NumPy, in the PyTorch CPU path
and in the GPU kernel. See docs/DESIGN.md for the contracts and the layers.

The names below are imported on first use (PEP 562), so ``import droplab``
and ``droplab --help`` do not pay for importing PyTorch. droplab's operators
(``torch.ops.droplab.*``, what ``torch.export.load`` of a saved droplab program
and a graph need) are registered as soon as PyTorch is imported: at once if
it already is, else right after its import completes (a one-shot import hook),
so ``import droplab`` is enough in a fresh process, in either order.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
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


def _register_operators() -> None:
    """Register ``torch.ops.droplab.*`` (importing the modules that define them)."""
    importlib.import_module("droplab.nn")


def _initializing(name: str, but: types.ModuleType | None = None) -> bool:
    """Whether a module under ``name`` (other than ``but``) is being imported now."""
    return any(
        getattr(module.__spec__, "_initializing", False)
        for key, module in list(sys.modules.items())
        if (key == name or key.startswith(name + "."))
        and module is not but
        and getattr(module, "__spec__", None) is not None
    )


class _Loader(importlib.abc.Loader):
    """A module's own loader, then droplab's operators if torch is imported."""

    def __init__(self, loader: Any, hook: _AfterTorch) -> None:
        self.loader, self.hook = loader, hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.loader  # the module sees its own loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.hook.register(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _AfterTorch(importlib.abc.MetaPathFinder):
    """Registers droplab's operators once torch is imported (removed then).

    The import of ``torch``, and of each droplab module, completes with
    :meth:`register`: it registers when torch is in and no droplab module is
    half-imported (importing ``droplab.nn`` from inside a droplab module that
    imports torch would find that module's names not yet defined); the droplab
    module whose import completes last then does it.
    """

    def __init__(self) -> None:
        self.busy = False

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if self.busy or not (fullname == "torch" or fullname.startswith("droplab.")):
            return None
        self.busy = True  # the search below asks this finder again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader, self)
        return spec

    def register(self, done: types.ModuleType) -> None:
        if self not in sys.meta_path or "torch" not in sys.modules:
            return
        if _initializing("torch", done) or _initializing("droplab", done):
            return
        sys.meta_path.remove(self)
        _register_operators()


if "torch" in sys.modules:
    _register_operators()
elif not any(type(f).__name__ == "_AfterTorch" for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterTorch())
