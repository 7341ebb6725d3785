"""Run experiments, skipping those already saved for the same config, resuming after faults.

Each finished experiment is saved (atomically) before the next one starts, so
Ctrl-C or a crash loses at most the experiment in progress, and a rerun skips
every experiment whose saved result has the same config hash, was made by the
same code (:func:`droplab.lab.registry.code_fingerprint`) and passes the
experiment's schema check (:func:`droplab.lab.registry.result_problem`). A
results file that is corrupt, malformed, from another version, from another
experiment or not a droplab result is reported ("recomputed: ...") and
recomputed, never used; it is replaced when the new result is saved, not
removed before. An experiment that raises is reported and the others still run;
a result that cannot be saved is named with the reason in one line.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from droplab.lab.registry import (
    code_fingerprint,
    config_for,
    get_experiment,
    result_problem,
)
from droplab.lab.results import (
    ResultError,
    config_dict,
    config_hash,
    load_result,
    machine_info,
    result_path,
    save_result,
    versions,
)

__all__ = [
    "Outcome",
    "SaveError",
    "progress_enabled",
    "run_experiment",
    "run_experiments",
]

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default ``log``: say nothing (``droplab report`` passes its printer)."""


def progress_enabled() -> bool:
    """Progress bars only on a terminal, and never when ``CI`` is set."""
    return sys.stderr.isatty() and not os.environ.get("CI")


class SaveError(OSError):
    """A result computed but not saved: the message names the path and the reason."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one experiment.

    Attributes:
        name: the experiment.
        status: ``"ran"``, ``"skipped"`` (saved result reused) or ``"failed"``.
        record: the saved record (None when failed).
        message: why it was recomputed ("recomputed: ...") or how it failed
            ("" otherwise).
    """

    name: str
    status: str
    record: dict[str, Any] | None
    message: str = ""


def run_experiment(
    module: ModuleType,
    config: Any,
    *,
    results_dir: str | Path,
    preset: str = "custom",
    force: bool = False,
    jobs: int = 1,
    log: Log = _quiet,
) -> Outcome:
    """Run one experiment module with ``config`` unless its result is already saved.

    Returns:
        An :class:`Outcome` with status ``ran`` or ``skipped``. Exceptions from
        the experiment propagate (nothing is saved for it).
    """
    name = module.NAME
    path = result_path(results_dir, name)
    digest = config_hash(config)
    code = code_fingerprint(module)
    message = ""
    if path.exists() and not force:
        try:
            saved = load_result(path, name)
        except ResultError as error:
            message = f"recomputed: saved result malformed ({error})"
        else:
            not_run = isinstance(saved["result"], dict) and "skipped" in saved["result"]
            problem = "" if not_run else result_problem(module, saved["result"])
            if saved.get("code") != code:
                message = (
                    "recomputed: saved result from another version "
                    f"({path} was made by other code of {name})"
                )
            elif not_run:
                # A result that says the experiment could not run (e.g. its data
                # folder was missing) is tried again rather than reused.
                message = f"{path} records that {name} did not run; trying again"
            elif saved["config_hash"] != digest:
                message = f"{path} was computed with another config; recomputing {name}"
            elif problem:
                message = f"recomputed: saved result malformed ({path}: {problem})"
            else:
                return Outcome(name, "skipped", saved)
        log(f"{name}: {message}")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    result = module.run(config, jobs=jobs)
    wall = time.perf_counter() - clock
    json.dumps(
        result, allow_nan=False
    )  # a result must be plain JSON; fail before saving
    record = {
        "name": name,
        "preset": preset,
        "config": config_dict(config),
        "config_hash": digest,
        "code": code,
        "seed": getattr(config, "seed", None),
        "versions": versions(),
        "machine": machine_info(),
        "started": started,
        "wall_time_s": wall,
        "result": result,
    }
    try:
        save_result(path, record)
    except OSError as error:  # a full disk, a folder in the way, no permission
        raise SaveError(f"could not save {path}: {error.strerror or error}") from error
    return Outcome(name, "ran", record, message)


def run_experiments(
    names: Sequence[str],
    *,
    results_dir: str | Path,
    preset: str = "default",
    data: str | None = None,
    force: bool = False,
    jobs: int = 1,
    log: Log = _quiet,
    progress: bool | None = None,
) -> list[Outcome]:
    """Run the named experiments in order, saving each as soon as it finishes.

    An experiment that raises is reported (one line to ``log``, the traceback
    to ``NAME.traceback.txt`` beside the results) as ``failed`` and the next one
    runs; a result that cannot be saved (:class:`SaveError`) is reported in one
    line, without a traceback file, and the experiments after it are not run
    (``failed``, "not run: ..."). KeyboardInterrupt stops the loop (finished
    results are already on disk). Stale temporary files of a killed write are
    removed first (:func:`droplab.execution.storage.remove_stale_temporaries`).
    """
    from droplab.execution.progress import Progress
    from droplab.execution.storage import remove_stale_temporaries, write_text

    show = progress_enabled() if progress is None else progress
    remove_stale_temporaries(results_dir, log=log)
    outcomes = []
    # A bar on a terminal, else a heartbeat line at most every 30 s; the training
    # loops inside (parallel_map, droplab uci) report their steps to it.
    with Progress(f"droplab {preset}", bar=bool(show)) as bar:
        bar.stage("experiments", len(names), "experiment")
        if log is not _quiet:
            command_log = log

            def log(text: str) -> None:  # lines of their own, not over the bar
                bar.write(text, command_log)

        unsaved = ""  # why the results folder took no result, once it did not
        for name in names:
            bar.advance(0, item=name)
            if unsaved:  # no point computing what cannot be saved
                outcomes.append(Outcome(name, "failed", None, f"not run: {unsaved}"))
                bar.advance(item=f"{name} not run")
                continue
            module = get_experiment(name)
            config = config_for(module, preset, data=data)
            try:
                outcome = run_experiment(
                    module, config, results_dir=results_dir, preset=preset,
                    force=force, jobs=jobs, log=log,
                )  # fmt: skip
            except SaveError as error:  # the folder is the problem: no trace file
                log(f"{name} failed: {error}; the experiments after it are not run")
                outcome = Outcome(name, "failed", None, str(error))
                unsaved = str(error)
            except Exception as error:  # report it, run the others
                # One line on the terminal; the traceback goes to a file beside
                # the results, for whoever wants to debug it (written whole or
                # not at all: a full disk leaves no empty file).
                trace = Path(results_dir) / f"{name}.traceback.txt"
                try:
                    write_text(trace, traceback.format_exc())
                    where = f" (traceback in {trace})"
                except OSError:
                    where = ""
                log(f"{name} failed: {type(error).__name__}: {error}{where}")
                outcome = Outcome(
                    name, "failed", None, f"{type(error).__name__}: {error}"
                )
            else:
                seconds = outcome.record["wall_time_s"] if outcome.record else 0.0
                verb = "reused saved result" if outcome.status == "skipped" else "ran"
                log(f"{name}: {verb} ({seconds:.1f} s)")
            outcomes.append(outcome)
            bar.advance(item=f"{name} finished")
    return outcomes
