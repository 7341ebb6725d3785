"""``droplab uci``: the UCI protocol of :mod:`droplab.uncertainty.uci` from a shell."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from droplab._data import shipped_uci_datasets
from droplab._validation import check_int, check_seed, fail
from droplab.execution import EXECUTOR_HELP, make_executor
from droplab.uncertainty.uci.folder import UCIFormatError, load_uci_folder
from droplab.uncertainty.uci.protocol import (
    DATA_ENV,
    ProtocolSettings,
    ResumeError,
    default_data_dir,
    parse_splits,
    run_protocol,
    write_split_json,
)
from droplab.uncertainty.uci.summary import format_summary, read_published, summarize

__all__ = ["add_arguments", "run_cli"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser, name: str = "uci") -> None:
    """The options of ``droplab uci``."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"folder holding the data set folders (default: ${DATA_ENV}, "
        "or the five data sets shipped with droplab)",
    )
    which = parser.add_mutually_exclusive_group(required=True)  # one of the two
    which.add_argument(
        "--dataset", default=None, metavar="NAME",
        help="data set folder name, e.g. yacht (this or --list is required)",
    )  # fmt: skip
    which.add_argument(
        "--list", action="store_true", help="name the data sets shipped with droplab"
    )
    parser.add_argument(
        "--splits",
        default=None,
        metavar="LIST",
        help="e.g. 0-19 or 0,3,5-7 (default: all)",
    )
    parser.add_argument(
        "--epochs-multiplier",
        type=float,
        default=100.0,
        help="epochs = n_epochs.txt x this (default: %(default)g, as published)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=10_000,
        metavar="T",
        help="MC passes T for the test (default: %(default)d, as published)",
    )
    parser.add_argument(
        "--validation-samples",
        type=int,
        default=None,
        metavar="T",
        help="MC passes for the grid's validation scores (default: --samples)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of everything random (default: 0)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="splits run in parallel (default: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--executor", default="local", metavar="SPEC", help=EXECUTOR_HELP
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("uci-results"),
        metavar="DIR",
        help="results folder (default: uci-results)",
    )


def run_cli(args: argparse.Namespace) -> int:
    """``droplab uci``: run or resume, then print the summary table."""
    if args.list:
        print("\n".join(shipped_uci_datasets()))
        return 0
    if not args.dataset:
        print("droplab uci: --dataset NAME is required (see --list)", file=sys.stderr)
        return 2
    data = args.data or default_data_dir()
    if data is None:
        print(
            f"droplab uci: no data folder: pass --data DIR or set ${DATA_ENV}",
            file=sys.stderr,
        )
        return 2
    if not (Path(data) / args.dataset).is_dir():
        found = sorted(p.name for p in Path(data).glob("*") if p.is_dir())
        print(
            f"droplab uci: no data set {args.dataset!r} in {data}; it has "
            f"{', '.join(found) or 'none'} (pass --data DIR for another folder)",
            file=sys.stderr,
        )
        return 2
    try:
        folder = load_uci_folder(Path(data) / args.dataset)
        splits = (
            parse_splits(args.splits, folder.n_splits)
            if args.splits
            else list(range(folder.n_splits))
        )
        multiplier = float(args.epochs_multiplier)
        if not (multiplier > 0 and math.isfinite(multiplier)):
            raise fail(
                "epochs_multiplier",
                multiplier,
                "a positive number",
                owner="droplab uci",
            )
        samples = check_int(args.samples, "samples", low=1, owner="droplab uci")
        settings = ProtocolSettings(
            epochs_multiplier=multiplier,
            samples=samples,
            validation_samples=check_int(
                args.validation_samples or samples,
                "validation_samples",
                low=1,
                owner="droplab uci",
            ),
            seed=check_seed(args.seed, owner="droplab uci"),
        )
        jobs = check_int(args.jobs, "jobs", low=1, owner="droplab uci")
        executor = None  # local: run_protocol uses its process pool
        if args.executor != "local":
            executor = make_executor(args.executor)
        published = read_published(Path(data), folder.name)
    except (UCIFormatError, ValueError, TypeError) as error:
        print(f"droplab uci: {error}", file=sys.stderr)
        return 2
    try:
        results = run_protocol(
            folder, splits, settings, args.out, jobs=jobs, log=_stderr,
            executor=executor,
        )  # fmt: skip
    except (UCIFormatError, ResumeError) as error:
        print(f"droplab uci: {error}", file=sys.stderr)
        return 2
    finally:
        if executor is not None:
            executor.close()
    summary = summarize(results, published)
    write_split_json(Path(args.out) / folder.name / "summary.json", summary)
    print(format_summary(summary))
    return 0
