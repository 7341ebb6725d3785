"""The lab: experiments as typed configs plus plain functions, run and saved.

Data flows one way: ``Config`` -> ``run`` -> ``results/NAME.json`` (atomic) ->
``figure`` / ``numbers`` / ``answer`` -> the HTML report. See
:mod:`droplab.lab.registry` for what an experiment module provides.
"""

from droplab.lab.registry import experiment_names as experiment_names
from droplab.lab.registry import get_experiment as get_experiment
from droplab.lab.results import ResultError as ResultError
from droplab.lab.results import load_result as load_result
from droplab.lab.results import save_result as save_result
from droplab.lab.runner import run_experiment as run_experiment
from droplab.lab.runner import run_experiments as run_experiments

__all__ = [
    "ResultError",
    "experiment_names",
    "get_experiment",
    "load_result",
    "run_experiment",
    "run_experiments",
    "save_result",
]
