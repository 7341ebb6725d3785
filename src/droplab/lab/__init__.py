"""The lab: experiments as typed configs plus plain functions, run and saved.

Data flows one way: ``Config`` -> ``run`` -> ``results/NAME.json`` (atomic) ->
``figure`` / ``numbers`` / ``answer`` -> the HTML report. See
:mod:`droplab.lab.registry` for what an experiment module provides. The names
below are imported on first use, so the command line's light paths (``droplab
list``) do not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ResultError": "droplab.lab.results",
    "load_result": "droplab.lab.results",
    "save_result": "droplab.lab.results",
    "experiment_names": "droplab.lab.registry",
    "get_experiment": "droplab.lab.registry",
    "run_experiment": "droplab.lab.runner",
    "run_experiments": "droplab.lab.runner",
}

if TYPE_CHECKING:
    from droplab.lab.registry import experiment_names as experiment_names
    from droplab.lab.registry import get_experiment as get_experiment
    from droplab.lab.results import ResultError as ResultError
    from droplab.lab.results import load_result as load_result
    from droplab.lab.results import save_result as save_result
    from droplab.lab.runner import run_experiment as run_experiment
    from droplab.lab.runner import run_experiments as run_experiments


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'droplab.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ResultError",
    "experiment_names",
    "get_experiment",
    "load_result",
    "run_experiment",
    "run_experiments",
    "save_result",
]
