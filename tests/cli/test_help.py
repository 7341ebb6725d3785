"""Each command's --help, read as a user reads it: every option says what it does
and its default, and an option said to be required is not shown as optional."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from droplab import cli
from droplab.cli import COMMANDS, build_parser

NAMES = [name for name, _, _ in COMMANDS]
SILENT_DEFAULTS = (None, False, [], argparse.SUPPRESS)


def _options(command: str) -> list[argparse.Action]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [
        a for a in sub.choices[command]._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]  # fmt: skip


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        cli.main([command, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", NAMES)
def test_every_option_says_what_it_does_and_its_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = " ".join(_help(command, capsys).split())  # argparse wraps lines
    for action in _options(command):
        name = action.option_strings[-1]
        assert action.help, f"{command} {name}: no help"
        if action.default in SILENT_DEFAULTS or isinstance(action.default, bool):
            continue
        shown = action.default
        if isinstance(shown, float) and shown.is_integer():
            shown = int(shown)  # "%(default)g" prints 100.0 as 100
        said = [f"default: {shown}", f"default {shown}", f"({shown})"]
        named = re.search(rf"{re.escape(str(shown))} \([^)]*\bthe default\)", text)
        assert any(s in text for s in said) or named, (
            f"{command} {name}: {shown} unsaid"
        )


@pytest.mark.parametrize("command", NAMES)
def test_an_option_said_to_be_required_is_not_shown_as_optional(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = _help(command, capsys).split("\n\n")[0]
    for action in _options(command):
        if "required" in (action.help or ""):
            for name in action.option_strings:
                assert f"[{name}" not in usage, (command, name, usage)


def test_uci_shows_that_it_needs_a_dataset_or_list(
    capsys: pytest.CaptureFixture[str],
) -> None:
    usage = " ".join(_help("uci", capsys).split("\n\n")[0].split())
    assert "(--dataset NAME | --list)" in usage


def test_the_report_help_gives_the_times_the_presets_take(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The presets' times in the help are the timing module's (which the run's
    expected time scales by this machine's measured speed)."""
    from droplab.lab import timing
    from droplab.lab.registry import experiment_names

    text = " ".join(_help("report", capsys).split())
    found = re.search(r"quick \(about (\d+) s\), default \(about (\d+) min\)", text)
    assert found, text
    quick = timing.reference_seconds(experiment_names(), "quick")
    default = timing.reference_seconds(experiment_names(), "default")
    assert abs(int(found[1]) - quick) <= 5 and abs(60 * int(found[2]) - default) <= 30


def test_list_aligns_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["list", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 14
    starts = {line.index("not run") for line in lines}
    assert len(starts) == 1, lines  # the state column starts at one place
