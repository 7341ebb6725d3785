"""Progress of long runs: a tqdm bar on a terminal, heartbeat lines elsewhere."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from droplab.execution import parallel_map, progress
from droplab.execution.progress import (
    Progress,
    current,
    format_seconds,
    heartbeat_interval,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_heartbeat_lines_come_at_most_every_interval_and_say_how_far() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("droplab uci yacht", stream=out, interval=30, clock=clock) as shown:
        shown.stage("splits", 2, "split")
        for epoch in range(1, 401):  # one epoch every 0.5 s: 200 s in all
            clock.now += 0.5
            shown.step(epoch, 400, "epoch", label="grid search (stage 1 of 2)")
    lines = out.getvalue().splitlines()
    assert len(lines) == 6  # 200 s / 30 s
    assert lines[0] == (
        "droplab uci yacht | splits: 0/2 splits done | grid search (stage 1 of 2): "
        "60/400 epochs | 30s elapsed, about 2m50s left in grid search (stage 1 of 2)"
    )
    assert "epochs | 3m00s elapsed, about 20s left" in lines[-1]


def test_no_line_before_the_interval_and_main_count_estimates() -> None:
    out, clock = io.StringIO(), Clock()
    shown = Progress("droplab full", stream=out, interval=30, clock=clock)
    shown.stage("experiments", 4, "experiment")
    clock.now += 29
    shown.advance(item="masks finished")
    assert out.getvalue() == ""
    clock.now += 1
    shown.advance(0, item="expectation")
    assert out.getvalue().strip() == (
        "droplab full | experiments: 1/4 experiments done, now expectation | "
        "30s elapsed, about 1m30s left"
    )
    shown.close()


def test_on_a_terminal_a_bar_and_no_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    out, clock = FakeTerminal(), Clock()
    with Progress("droplab sweep", stream=out, interval=0, clock=clock) as shown:
        shown.stage("trials", 3, "trial")
        shown.advance(item="trial 0 complete")
        shown.step(5, 10, "epoch", label="trial 1")
    text = out.getvalue()
    assert "droplab sweep: trials" in text and "\r" in text  # tqdm redraws in place
    assert "| 1/3" in text and "trial 1: 5/10 epochs" in text
    assert "elapsed," not in text  # no heartbeat line


def test_bars_switch_off_when_not_a_terminal_or_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert progress.interactive(FakeTerminal())
    assert not progress.interactive(io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not progress.interactive(FakeTerminal())


def test_heartbeat_interval_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(progress.HEARTBEAT_ENV, raising=False)
    assert heartbeat_interval() == 30.0
    monkeypatch.setenv(progress.HEARTBEAT_ENV, "2.5")
    assert heartbeat_interval() == 2.5
    monkeypatch.setenv(progress.HEARTBEAT_ENV, "soon")
    with pytest.raises(
        ValueError, match=r"DROPLAB_HEARTBEAT_SECONDS must be .* Got 'soon'"
    ):
        heartbeat_interval()


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0, 59.4, 60, 3599, 7200)] == [
        "0s", "59s", "1m00s", "59m59s", "2h00m",
    ]  # fmt: skip


def test_parallel_map_counts_its_tasks_on_the_current_progress() -> None:
    out, clock = io.StringIO(), Clock()
    assert current() is None
    with Progress("droplab quick", stream=out, interval=0, clock=clock) as shown:
        assert current() is shown
        assert parallel_map(abs, [-1, -2, -3]) == [1, 2, 3]
    assert current() is None
    assert (
        out.getvalue()
        .splitlines()[-1]
        .startswith("droplab quick | training runs: 3/3 tasks")
    )


def _fake_run(config: Any, *, jobs: int = 1) -> dict[str, Any]:
    return {"value": 1.0}


def test_the_lab_runner_beats_when_not_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from droplab.lab.experiments import masks
    from droplab.lab.runner import run_experiments

    monkeypatch.setenv(progress.HEARTBEAT_ENV, "0")
    monkeypatch.setattr(masks, "run", _fake_run)
    run_experiments(
        ["masks"], results_dir=tmp_path, preset="quick", progress=False, log=print
    )
    err = capsys.readouterr().err
    assert "droplab quick | experiments: 0/1 experiments done, now masks" in err
    assert "experiments: 1/1 experiments done, now masks finished" in err


@pytest.mark.slow
def test_droplab_uci_with_output_to_a_file_writes_heartbeat_lines(
    tmp_path: Path,
) -> None:
    """A short `droplab uci` (packaged yacht) with stdout and stderr to a file."""
    env = {k: v for k, v in os.environ.items() if k != "DROPLAB_UCI_DATA"}
    env[progress.HEARTBEAT_ENV] = "0"  # every update: a short run still beats
    log = tmp_path / "log.txt"
    with log.open("w") as stream:
        run = subprocess.run(
            [sys.executable, "-m", "droplab.cli", "uci", "--dataset", "yacht",
             "--splits", "0", "--epochs-multiplier", "0.05", "--samples", "20",
             "--out", str(tmp_path / "out")],
            cwd=tmp_path, env=env, stdout=stream, stderr=subprocess.STDOUT,
            timeout=300, check=False,
        )  # fmt: skip
    text = log.read_text()
    assert run.returncode == 0, text
    beats = [
        line for line in text.splitlines() if line.startswith("droplab uci yacht |")
    ]
    assert any(
        "grid search (stage 1 of 2) of 12 networks: 1/2 epochs" in b for b in beats
    )
    assert any("retrain on all training rows" in b for b in beats)
    assert all("elapsed" in b for b in beats)
    assert "\r" not in text  # no bar drawn into a file


def test_write_puts_a_line_of_its_own_in_both_modes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    terminal, log = FakeTerminal(), io.StringIO()
    with Progress("demo", stream=terminal, interval=30) as shown:
        shown.stage("splits", 2, "split")
        shown.write("split 0: done")
    assert "\nsplit 0: done\n" in terminal.getvalue().replace("\r", "\n")
    with Progress("demo", stream=log, interval=30) as shown:
        shown.write("split 0: done")
    assert log.getvalue() == "split 0: done\n"


@pytest.mark.slow
def test_droplab_uci_workers_beat_too(tmp_path: Path) -> None:
    """--jobs 2: each pool process writes its own heartbeat, named by its splits."""
    env = {k: v for k, v in os.environ.items() if k != "DROPLAB_UCI_DATA"}
    env[progress.HEARTBEAT_ENV] = "0"
    run = subprocess.run(
        [sys.executable, "-m", "droplab.cli", "uci", "--dataset", "yacht",
         "--splits", "0,1", "--jobs", "2", "--epochs-multiplier", "0.05",
         "--samples", "20", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for split in (0, 1):
        assert f"droplab uci yacht, splits {split} | grid search" in run.stderr
    assert "droplab uci yacht | splits: 2/2 splits done" in run.stderr


def test_the_heartbeat_beats_between_updates_on_the_real_clock() -> None:
    """A step that takes long still gets lines: elapsed time goes on."""
    out = io.StringIO()
    with Progress("droplab quick", stream=out, interval=0.2) as shown:
        shown.stage("experiments", 2, "experiment")
        time.sleep(1.3)  # no update at all: the daemon thread beats
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("droplab quick | experiments: 0/2") for line in lines)
    assert lines[-1].endswith("s elapsed")  # no estimate before anything is done
