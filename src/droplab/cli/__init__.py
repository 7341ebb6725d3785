"""The ``droplab`` command: a thin shell over plain functions.

Each subcommand lives in its own module of this package, which provides
``add_arguments(parser, name)`` and ``run_cli(args) -> int``; this file only
wires them together, so ``droplab --help`` stays cheap and each command's logic
stays testable without a shell. This package is the only place in droplab with
argparse and printing: the modules it calls return values and raise errors.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from droplab import __version__
from droplab.execution.workers import Terminated, stop_children_on_sigterm

# (command, module, one-line help). A command whose module is not part of this
# installation is left out of the parser rather than failing at start-up.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    (
        "report",
        "droplab.cli.lab",
        "run the lab's experiments and write the HTML report",
    ),
    ("run", "droplab.cli.lab", "run one experiment and save its result"),
    ("list", "droplab.cli.lab", "list the experiments and whether results are saved"),
    (
        "uci",
        "droplab.cli.uci",
        "MC-dropout on a UCI regression folder (Gal & Ghahramani)",
    ),
    ("bench", "droplab.cli.bench", "time droplab's dropout against PyTorch's"),
    ("sweep", "droplab.cli.sweep", "tune dropout rates with Optuna"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="droplab",
        description="Reproducible dropout, and a lab that answers questions about it.",
    )
    parser.add_argument("--version", action="version", version=f"droplab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command, name)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with stop_children_on_sigterm():
            return int(args._module.run_cli(args))
    except KeyboardInterrupt as stop:
        print(
            "interrupted; finished results are saved, rerun to resume", file=sys.stderr
        )
        return 143 if isinstance(stop, Terminated) else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
