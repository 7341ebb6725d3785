"""The same experiment, seed and thread count, run twice: identical result files.

Only the fields that say when and how long (``started``, ``wall_time_s``) and
the measured times inside a result may differ; every other number, to the
last bit, must not. Each training task runs on one thread (``one_thread``), so
the answer is also the same for any ``--jobs``. On another kind of CPU the last
digits can differ (torch's and MKL's kernels round by instruction set; docs/results.md,
"Reproducibility"); the record names the CPU and torch's capability.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from droplab.lab.experiments import data_size, when_it_helps
from droplab.lab.results import load_result, result_path
from droplab.lab.runner import run_experiment

TIME_FIELDS = ("started", "wall_time_s")
TIME_KEYS = ("seconds", "run_seconds", "epoch_seconds")


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_times(v)
            for k, v in value.items()
            if k not in TIME_KEYS and k not in TIME_FIELDS
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _run(module: Any, config: Any, folder: Path, jobs: int) -> dict[str, Any]:
    outcome = run_experiment(module, config, results_dir=folder, jobs=jobs, force=True)
    assert outcome.status == "ran"
    record = load_result(result_path(folder, module.NAME), module.NAME)
    return json.loads(json.dumps(_without_times(record)))


@pytest.mark.parametrize(
    ("module", "config"),
    [
        (data_size, data_size.Config(data="digits", sizes=(40, 120), hidden=(16,),
                                     seeds=2, steps=30)),
        (when_it_helps, when_it_helps.Config.quick()),
    ],
    ids=["data-size", "when-it-helps"],
)  # fmt: skip
def test_a_rerun_gives_the_same_result_file(
    module: Any, config: Any, tmp_path: Path
) -> None:
    first = _run(module, config, tmp_path / "first", jobs=1)
    again = _run(module, config, tmp_path / "again", jobs=1)
    assert first == again
    parallel = _run(module, config, tmp_path / "parallel", jobs=2)
    assert parallel["result"] == first["result"]
