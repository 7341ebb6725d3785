"""``droplab report``, ``droplab run NAME`` and ``droplab list``: thin shells over the lab.

``report`` runs every registered experiment (or ``--only`` some), reusing saved
results whose config and code are unchanged, then renders ``OUT/index.html``
from the saved results in ``OUT/results/``. ``--out`` is checked before any
experiment starts (a folder this process can write in, with room for the
page): an unusable one is refused in one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from droplab.cli._args import EXECUTOR_HELP, data_spec, int_at_least
from droplab.lab.registry import PRESETS, catalog, code_fingerprint, experiment_names
from droplab.lab.results import ResultError, load_result, output_problem, result_path

# (The lab's runner, report and experiments import PyTorch and matplotlib:
# they are imported in run_cli, after the arguments have been checked.)

__all__ = ["add_arguments", "run_cli"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


DEFAULT_OUT = "droplab-report"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Add the arguments of command ``name`` (report, run or list) to ``parser``."""
    if name == "run":
        parser.add_argument(
            "experiment",
            metavar="NAME",
            type=_experiment_name,
            help="the experiment to run (see `droplab list`)",
        )
    if name in ("report", "run"):
        parser.add_argument(
            "--preset", choices=PRESETS, default="default",
            help=f"quick (about {_preset_time('quick')}), default (about "
            f"{_preset_time('default')}), both on 2 quiet cores, or full (the "
            "publication runs: hours); default: %(default)s",
        )  # fmt: skip
        parser.add_argument(
            "--data", default=None, metavar="NAME", type=data_spec,
            help="data set for the experiments that train: digits, mnist1d, toy or mnist:DIR",
        )  # fmt: skip
        parser.add_argument(
            "--force",
            action="store_true",
            help="recompute even if a saved result matches",
        )
        parser.add_argument(
            "--jobs",
            type=int_at_least(1),
            default=1,
            metavar="N",
            help="processes for independent training runs (default: %(default)s)",
        )
        parser.add_argument(
            "--executor", default="local", metavar="SPEC", help=EXECUTOR_HELP
        )
    if name == "report":
        parser.add_argument(
            "--only",
            default=None,
            type=_experiment_list,
            metavar="NAMES",
            help="comma-separated experiments to run (default: all, see `droplab list`)",
        )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR",
        type=str if name == "list" else _usable_out,
        help=f"report folder; results are saved in DIR/results (default {DEFAULT_OUT})",
    )  # fmt: skip


def _preset_time(preset: str) -> str:
    """A whole run of ``preset`` on the reference machine, to 10 s or the minute."""
    from droplab.lab.timing import reference_seconds

    seconds = reference_seconds(experiment_names(), preset)
    if seconds < 90:
        return f"{10 * round(seconds / 10)} s"
    return f"{round(seconds / 60)} min"


def _usable_out(text: str) -> str:
    """``--out`` of report and run: a folder to write in, with room, checked
    while the arguments are read (before PyTorch is even imported)."""
    problem = output_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _experiment_name(text: str) -> str:
    names = experiment_names()
    if text not in names:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(names)}; got {text!r}"
        )
    return text


def _experiment_list(text: str) -> list[str]:
    """``--only``: comma-separated experiment names, returned in report order."""
    names = experiment_names()
    wanted = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated names from {', '.join(names)}; got {text!r}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return [n for n in names if n in wanted]


# (How long a run should take: droplab.lab.timing, measured on this machine.)


def _reusable(names: list[str], out: Path, preset: str, data: str | None) -> set[str]:
    from droplab.lab.registry import config_for, get_experiment
    from droplab.lab.results import config_hash

    reused = set()
    for name in names:
        try:
            record = load_result(result_path(out / "results", name), name)
        except (FileNotFoundError, ResultError):
            continue
        module = get_experiment(name)
        config = config_for(module, preset, data=data)
        if record["config_hash"] == config_hash(config) and record.get(
            "code"
        ) == code_fingerprint(module):
            reused.add(name)
    return reused


def run_cli(args: argparse.Namespace) -> int:
    """Run the command in ``args.command``; returns the exit status.

    0 when every experiment ran (or was reused), 1 when one failed (the others
    still run and the page shows it as failed) or the page could not be
    written; 2 when ``--out`` is unusable (checked before any work; bad
    arguments never get here: argparse exits with 2).
    """
    if args.command == "list":
        return _list(Path(args.out))
    names = [args.experiment] if args.command == "run" else _selected(args.only)
    problem = output_problem(args.out, names)  # (the folder itself: in _usable_out)
    if problem:
        _stderr(f"droplab {args.command}: error: argument --out: {problem}")
        return 2
    # Tasks run on --executor; each finished task is kept in results/.tasks
    # until its experiment's result is saved.
    from droplab.execution import make_executor, use_executor
    from droplab.lab.registry import get_experiment
    from droplab.lab.report import write_report
    from droplab.lab.runner import run_experiments

    try:
        executor = make_executor(args.executor, jobs=args.jobs)
    except ValueError as error:
        print(
            f"droplab {args.command}: error: argument --executor: {error}",
            file=sys.stderr,
        )
        return 2
    reused = (
        set()
        if args.force
        else _reusable(names, Path(args.out), args.preset, args.data)
    )
    from droplab.lab import timing

    speed = timing.measure_speed() if args.preset in timing.PRESET_FACTOR else None
    _stderr(
        f"droplab {args.command}: {args.preset} preset, {len(names)} experiment"
        f"{'' if len(names) == 1 else 's'}; "
        f"{timing.expected_time(names, args.preset, reused, speed)}"
    )
    expected = (
        timing.expected_range(names, args.preset, reused, speed) if speed else None
    )
    clock = time.perf_counter()
    tasks = Path(args.out) / "results" / ".tasks"
    if args.force:
        shutil.rmtree(tasks, ignore_errors=True)
    with use_executor(executor, checkpoint=tasks, log=_stderr):
        outcomes = run_experiments(
            names, results_dir=Path(args.out) / "results", preset=args.preset,
            data=args.data, force=args.force, jobs=args.jobs, log=_stderr,
        )  # fmt: skip
    if all(o.status != "failed" for o in outcomes):
        shutil.rmtree(tasks, ignore_errors=True)
    failed = [o for o in outcomes if o.status == "failed"]
    if args.command == "run":
        for outcome in outcomes:
            if outcome.record is not None:
                module = get_experiment(outcome.name)
                print(f"{outcome.name}: {module.answer(outcome.record['result'])}")
                print(f"saved {result_path(Path(args.out) / 'results', outcome.name)}")
    else:
        failures = {o.name: o.message for o in failed}
        notes = {o.name: o.message for o in outcomes if o.status == "ran" and o.message}
        try:
            page, _ = write_report(
                args.out, _selected(args.only), failed=failures, notes=notes
            )
        except OSError as error:
            _stderr(
                f"droplab report: error: could not write the page in {args.out}: "
                f"{error.strerror or error}"
            )
            return 1
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        _stderr(
            timing.took(
                time.perf_counter() - clock, expected, load, os.cpu_count() or 1
            )
        )
        print(f"wrote {page}")
        print(page.resolve().as_uri())  # the last line: a link a terminal can open
    for outcome in failed:
        print(f"{outcome.name} failed: {outcome.message}", file=sys.stderr)
    return 1 if failed else 0


def _selected(only: list[str] | None) -> list[str]:
    return list(only) if only else experiment_names()


def _list(out: Path) -> int:
    """Names, questions and saved results, read without importing the experiments
    (fast); whether a saved config is still current is checked when it runs."""
    from droplab.lab import registry

    entries = catalog()
    width = max([14, *(len(name) for name, _ in entries)])  # "smaller-network": 15
    for (name, question), module_name in zip(
        entries, registry.EXPERIMENTS, strict=True
    ):
        path = result_path(out / "results", name)
        try:
            if path.exists() and not path.is_file():
                raise IsADirectoryError(path)
            record = load_result(path, name)
        except FileNotFoundError:
            state = "not run"
        except IsADirectoryError:
            state = "blocked: not a file (move it away)"
        except ResultError:
            state = "unreadable result (will be recomputed)"
        else:
            if record.get("code") != code_fingerprint(module_name):
                state = "saved by another version (will be recomputed)"
            else:
                state = f"saved ({record.get('preset') or 'custom'} config, {record['wall_time_s']:.1f} s)"
        print(f"{name:{width}s} {state:40s} {question}")
    return 0
