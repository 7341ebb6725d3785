"""The ``droplab`` command: a thin shell over plain functions.

Each subcommand lives in its own module of this package, which provides
``add_arguments(parser, name)`` and ``run_cli(args) -> int``; this file only
wires them together, so each command's logic stays testable without a shell.
``droplab --help`` imports no command module, and a command imports only its
own (whose top level imports neither PyTorch nor matplotlib): the help and
``droplab list`` start in well under a second (``benchmarks/bench_cli_start.py``).
Bad arguments are refused by argparse before any work, with exit status 2. This package is the only place in droplab with
argparse and printing: the modules it calls return values and raise errors.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import typing
from collections.abc import Sequence

from droplab import __version__

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


# Commands that start no worker processes: they skip the SIGTERM set-up, whose
# package imports PyTorch, and so answer in well under a second.
LIGHT_COMMANDS = frozenset({"list"})


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``droplab report: error: argument --data:
    must be ...; got 'imagenet' (see droplab report --help)``, exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` given, only that command's module is imported
    (the others appear in the help, without their options)."""
    parser = Parser(
        prog="droplab",
        description="Reproducible dropout, and a lab that answers questions about it.",
    )
    parser.add_argument("--version", action="version", version=f"droplab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if command not in (None, name):
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser, name)
        subparser.set_defaults(_module=module)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The command named in ``argv`` (its first word that is not an option), or
    "" when there is none or it is unknown (argparse then says so)."""
    known = {name for name, _, _ in COMMANDS}
    for word in argv:
        if not word.startswith("-"):
            return word if word in known else ""
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command in LIGHT_COMMANDS:
        return int(args._module.run_cli(args))
    from droplab.execution.workers import Terminated, stop_children_on_sigterm

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
