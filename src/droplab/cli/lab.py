"""``droplab report``, ``droplab run NAME`` and ``droplab list``: thin shells over the lab.

``report`` runs every registered experiment (or ``--only`` some), reusing saved
results whose config is unchanged, then renders ``OUT/index.html`` from the
saved results in ``OUT/results/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from droplab.execution import EXECUTOR_HELP, make_executor, use_executor
from droplab.lab.registry import PRESETS, config_for, experiment_names, get_experiment
from droplab.lab.report import write_report
from droplab.lab.results import ResultError, config_hash, load_result, result_path
from droplab.lab.runner import run_experiments

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
            help="the experiment to run (see `droplab list`)",
        )
    if name in ("report", "run"):
        parser.add_argument(
            "--preset", choices=PRESETS, default="default",
            help="quick (about a minute), default (a few minutes) or full (the publication runs)",
        )  # fmt: skip
        parser.add_argument(
            "--data", default=None, metavar="NAME",
            help="data set for the experiments that train: digits, mnist1d, toy or mnist:DIR",
        )  # fmt: skip
        parser.add_argument(
            "--force",
            action="store_true",
            help="recompute even if a saved result matches",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=1,
            metavar="N",
            help="processes for independent training runs",
        )
        parser.add_argument(
            "--executor", default="local", metavar="SPEC", help=EXECUTOR_HELP
        )
    if name == "report":
        parser.add_argument(
            "--only",
            default=None,
            metavar="NAMES",
            help="comma-separated experiments to run",
        )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR",
        help=f"report folder; results are saved in DIR/results (default {DEFAULT_OUT})",
    )  # fmt: skip


def _selected(only: str | None) -> list[str]:
    names = experiment_names()
    if not only:
        return names
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(
            f"droplab: unknown experiment(s) {', '.join(unknown)}; known: {', '.join(names)}"
        )
    return [n for n in names if n in wanted]


def run_cli(args: argparse.Namespace) -> int:
    """Run the command in ``args.command``; returns the exit status."""
    if args.command == "list":
        return _list(Path(args.out))
    if args.jobs < 1:
        raise SystemExit(f"droplab: --jobs must be at least 1; got {args.jobs}")
    names = [args.experiment] if args.command == "run" else _selected(args.only)
    if args.command == "run" and args.experiment not in experiment_names():
        raise SystemExit(
            f"droplab: unknown experiment {args.experiment!r}; known: {', '.join(experiment_names())}"
        )
    # Tasks run on --executor; each finished task is kept in results/.tasks
    # until its experiment's result is saved.
    try:
        executor = make_executor(args.executor, jobs=args.jobs)
    except ValueError as error:
        raise SystemExit(f"droplab: {error}") from None
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
        page, _ = write_report(args.out, _selected(args.only))
        print(f"wrote {page}")
        print(page.resolve().as_uri())  # the last line: a link a terminal can open
    for outcome in failed:
        print(f"{outcome.name} failed: {outcome.message}", file=sys.stderr)
    return 1 if failed else 0


def _list(out: Path) -> int:
    for name in experiment_names():
        module = get_experiment(name)
        path = result_path(out / "results", name)
        try:
            record = load_result(path, name)
        except FileNotFoundError:
            state = "not run"
        except ResultError:
            state = "unreadable result (will be recomputed)"
        else:
            presets = [
                p
                for p in PRESETS
                if config_hash(config_for(module, p)) == record["config_hash"]
            ]
            state = f"saved ({'/'.join(presets) or 'custom'} config, {record['wall_time_s']:.1f} s)"
        print(f"{name:14s} {state:40s} {module.QUESTION}")
    return 0
