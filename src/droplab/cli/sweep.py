"""``droplab sweep``: the Optuna study of :mod:`droplab.lab.sweep` from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from droplab._validation import check_int
from droplab.execution.progress import Progress
from droplab.lab.sweep import (
    DEFAULT_OUT,
    DEFAULT_STUDY,
    SweepConfig,
    figure,
    finished_trials,
    format_summary,
    load_optuna,
    run_sweep,
    summarize,
    write_summary,
)

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser, name: str = "sweep") -> None:
    """The options of ``droplab sweep``."""
    defaults = SweepConfig()
    parser.add_argument(
        "--data", default=defaults.data, metavar="NAME",
        help="digits, mnist1d, toy or mnist:DIR (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--n-trials", type=int, default=20, metavar="N",
                        help="total finished trials the study should reach (a rerun "
                        "continues; 0: only report; default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, metavar="N",
        help="epochs per trial; pruning may stop a trial earlier (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--depth", type=int, default=defaults.depth, metavar="N",
        help="hidden layers (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-rate", type=float, default=defaults.max_rate, metavar="P",
        help="largest dropout rate tried in the hidden layers (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--startup-trials", type=int, default=defaults.startup_trials, metavar="N",
        help="trials sampled at random, unpruned, before TPE takes over "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=defaults.seed,
        help="seed of the data split, the sampler and every trial (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), metavar="DIR",
                        help=f"folder for sweep.json (and the SQLite study by default; default {DEFAULT_OUT})")  # fmt: skip
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage URL, e.g. sqlite:///PATH or postgresql://USER@HOST/DB (default sqlite:///OUT/study.db)")  # fmt: skip
    parser.add_argument(
        "--study-name", default=DEFAULT_STUDY, metavar="NAME",
        help="the study's name in the storage; a rerun with it continues "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--top",
        type=int,
        default=3,
        metavar="N",
        help="curves of this many best trials (default: %(default)s)",
    )


def run_cli(args: argparse.Namespace) -> int:
    """``droplab sweep``: run or continue the study, print and save its summary."""
    try:
        config = SweepConfig(
            data=args.data, depth=args.depth, epochs=args.epochs,
            max_rate=args.max_rate, startup_trials=args.startup_trials, seed=args.seed,
        )  # fmt: skip
        n_trials = check_int(args.n_trials, "n_trials", low=0, owner="droplab sweep")
        top = check_int(args.top, "top", low=1, owner="droplab sweep")
    except (ValueError, TypeError) as error:
        print(f"droplab sweep: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{args.out / 'study.db'}"
    optuna = load_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print our own lines

    def say(study: Any, trial: Any) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4g}"
        shown.write(f"trial {trial.number}: {trial.state.name.lower()}, loss {value}, "
                    f"{trial.params}")  # fmt: skip
        finished = len(finished_trials(study))
        shown.goto(finished, item=f"trial {trial.number} {trial.state.name.lower()}")

    try:
        with Progress("droplab sweep") as shown:  # a bar, or a heartbeat (not a TTY)
            shown.stage("trials", n_trials, "trial")
            study = run_sweep(config, n_trials=n_trials, storage=storage,
                              study_name=args.study_name, callbacks=[say])  # fmt: skip
    except ValueError as error:
        print(f"droplab sweep: {error}", file=sys.stderr)
        return 2
    summary = summarize(study, top=top)
    path = write_summary(summary, args.out / "sweep.json")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure(summary)).print_png(args.out / "sweep.png")
    print(format_summary(summary))
    print(f"wrote {path} and {args.out / 'sweep.png'}")
    return 0
