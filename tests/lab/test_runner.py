"""The experiment framework: registry, atomic results, skipping, resuming, parallel runs, CLI."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from droplab import cli
from droplab.execution import parallel_map
from droplab.lab import registry, results, runner
from droplab.lab.stats import chisquare_pooled, mean_ci, proportion_ci

# A fake experiment, written as a module file so that it can also run in a subprocess.
# MODE (an environment variable read at run time) picks its behaviour.
FAKE = """
from dataclasses import dataclass
import os, pathlib, time

NAME = "{name}"
QUESTION = "Does the framework resume?"
METHOD = "It counts its runs in a file."


@dataclass(frozen=True)
class Config:
    size: int = 2  # a number
    seed: int = 0  # root seed

    @classmethod
    def quick(cls):
        return cls(size=1)

    @classmethod
    def full(cls):
        return cls(size=3)


def run(config, *, jobs=1):
    counter = pathlib.Path(os.environ["FAKE_DIR"]) / (NAME + ".runs")
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    mode = os.environ.get("FAKE_MODE_" + NAME, "ok")
    if mode == "raise":
        raise RuntimeError("boom in " + NAME)
    if mode == "interrupt":
        raise KeyboardInterrupt
    if mode == "hang":
        (pathlib.Path(os.environ["FAKE_DIR"]) / (NAME + ".started")).write_text("1")
        time.sleep(120)
    return {{"size": config.size, "jobs": jobs}}


def figure(result):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, result["size"]])
    return fig


def numbers(result):
    return [{{"quantity": "size", "value": result["size"], "low": None, "high": None, "unit": ""}}]


def answer(result):
    return "size is " + str(result["size"])
"""


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Register two fake experiments, ``fake_first`` then ``fake_second``."""
    code = tmp_path / "code"
    code.mkdir()
    for name in ("fake_first", "fake_second"):
        (code / f"{name}.py").write_text(FAKE.format(name=name))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setattr(registry, "EXPERIMENTS", ("fake_first", "fake_second"))
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    for name in ("fake_first", "fake_second"):
        sys.modules.pop(name, None)
    return tmp_path


def _runs(folder: Path, name: str) -> int:
    counter = folder / f"{name}.runs"
    return int(counter.read_text()) if counter.exists() else 0


def _quiet(message: str) -> None:
    del message


# ----------------------------------------------------------------------------- registry


def test_registry_modules_follow_the_protocol() -> None:
    names = registry.experiment_names()
    assert names[:4] == ["masks", "expectation", "averaging", "gradients"]
    for name in names:
        module = registry.get_experiment(name)
        config = module.Config()
        assert dataclasses.is_dataclass(config)
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.seed = 1  # type: ignore[misc]
        assert isinstance(module.Config.quick(), module.Config)
        assert isinstance(module.Config.full(), module.Config)
        assert module.QUESTION.endswith("?") and len(module.METHOD) > 40
        lines = inspect.getsource(module.Config).splitlines()
        for field in dataclasses.fields(config):
            # The declaration runs from "name:" to the next line at its indentation
            # (a formatter may wrap a long default, moving the comment down).
            start = next(
                i
                for i, line in enumerate(lines)
                if line.strip().startswith(f"{field.name}:")
            )
            indent = len(lines[start]) - len(lines[start].lstrip())
            end = start + 1
            while end < len(lines) and (
                not lines[end].strip()
                or len(lines[end]) - len(lines[end].lstrip()) > indent
            ):
                end += 1
            declaration = "\n".join(lines[start:end])
            assert "#" in declaration, f"{name}.Config.{field.name} has no comment"


def test_config_for_presets_and_data_override() -> None:
    module = registry.get_experiment("averaging")
    assert registry.config_for(module, "quick") == module.Config.quick()
    assert registry.config_for(module, "default", data="mnist1d").data == "mnist1d"
    masks = registry.get_experiment("masks")
    assert registry.config_for(masks, "default", data="mnist1d") == masks.Config()
    with pytest.raises(
        ValueError,
        match="The 'preset' argument of config_for must be one of 'quick', 'default', 'full'; got 'fast'",
    ):
        registry.config_for(module, "fast")
    with pytest.raises(
        ValueError, match="The 'name' argument of get_experiment must be one of masks"
    ):
        registry.get_experiment("nope")


# ----------------------------------------------------------------------------- results files


@dataclasses.dataclass(frozen=True)
class _C:
    widths: tuple[int, ...] = (4, 100)
    p: float = 0.5


def test_config_hash_is_canonical() -> None:
    assert results.config_hash(_C()) == results.config_hash(_C((4, 100), 0.5))
    assert results.config_hash(_C()) != results.config_hash(_C(p=0.25))
    assert results.config_dict(_C()) == {"widths": [4, 100], "p": 0.5}


def _record(name: str = "x") -> dict[str, Any]:
    return {
        "name": name,
        "preset": "quick",
        "config": {},
        "config_hash": "h",
        "versions": {},
        "wall_time_s": 1.0,
        "result": {"a": 1},
    }


def test_save_and_load_round_trip_atomically(tmp_path: Path) -> None:
    path = results.save_result(tmp_path / "r" / "x.json", _record())
    loaded = results.load_result(path, "x")
    assert loaded["result"] == {"a": 1} and loaded["format"] == results.FORMAT
    assert [p.name for p in path.parent.iterdir()] == [
        "x.json"
    ]  # no temporary file left


def test_load_refuses_corrupt_foreign_and_mismatched_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"format": "droplab-result", "format_version": 1, "na')
    with pytest.raises(results.ResultError, match="is not readable JSON"):
        results.load_result(path)
    path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(results.ResultError, match="is not a droplab result file"):
        results.load_result(path)
    results.save_result(path, _record("y"))
    with pytest.raises(results.ResultError, match="holds a result for 'y', not 'x'"):
        results.load_result(path, "x")
    path.write_text(json.dumps({"format": results.FORMAT, "format_version": 99}))
    with pytest.raises(results.ResultError, match="format version 99"):
        results.load_result(path)
    path.write_text(
        json.dumps({"format": results.FORMAT, "format_version": 1, "name": "x"})
    )
    with pytest.raises(results.ResultError, match="lacks preset, config"):
        results.load_result(path)


# ----------------------------------------------------------------------------- runner


def test_run_skips_same_config_and_reruns_on_force_or_change(fakes: Path) -> None:
    module = registry.get_experiment("fake_first")
    out = fakes / "results"
    first = runner.run_experiment(module, module.Config(), results_dir=out, log=_quiet)
    assert first.status == "ran" and _runs(fakes, "fake_first") == 1
    record = first.record
    assert record is not None
    assert record["config"] == {"size": 2, "seed": 0} and record["seed"] == 0
    assert set(record["versions"]) == {"droplab", "torch", "numpy", "python"}
    assert record["wall_time_s"] >= 0 and record["result"] == {"size": 2, "jobs": 1}
    again = runner.run_experiment(module, module.Config(), results_dir=out, log=_quiet)
    assert again.status == "skipped" and _runs(fakes, "fake_first") == 1
    forced = runner.run_experiment(
        module, module.Config(), results_dir=out, force=True, log=_quiet
    )
    assert forced.status == "ran" and _runs(fakes, "fake_first") == 2
    messages: list[str] = []
    changed = runner.run_experiment(
        module, module.Config(size=5), results_dir=out, log=messages.append
    )
    assert changed.status == "ran" and "another config" in messages[0]


def test_a_result_that_says_not_run_is_tried_again(fakes: Path) -> None:
    module = registry.get_experiment("fake_first")
    out = fakes / "results"
    first = runner.run_experiment(module, module.Config(), results_dir=out, log=_quiet)
    assert first.status == "ran"
    path = results.result_path(out, "fake_first")
    record = json.loads(path.read_text())
    record["result"] = {"skipped": "no data folder found"}
    path.write_text(json.dumps(record))
    messages: list[str] = []
    again = runner.run_experiment(
        module, module.Config(), results_dir=out, log=messages.append
    )
    assert again.status == "ran" and _runs(fakes, "fake_first") == 2
    assert "did not run; trying again" in messages[0]


def test_corrupt_or_foreign_result_is_reported_and_recomputed(fakes: Path) -> None:
    module = registry.get_experiment("fake_first")
    out = fakes / "results"
    path = results.result_path(out, "fake_first")
    out.mkdir()
    for content in (
        "{not json",
        json.dumps({"name": "fake_first", "result": {"size": 2}}),
    ):
        path.write_text(content)
        messages: list[str] = []
        outcome = runner.run_experiment(
            module, module.Config(), results_dir=out, log=messages.append
        )
        assert outcome.status == "ran"
        assert "Recomputing fake_first" in messages[0]
        assert results.load_result(path, "fake_first")["result"]["size"] == 2


def test_a_crash_loses_no_finished_experiment(
    fakes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = fakes / "results"
    monkeypatch.setenv("FAKE_MODE_fake_first", "raise")
    messages: list[str] = []
    outcomes = runner.run_experiments(
        ["fake_first", "fake_second"],
        results_dir=out,
        log=messages.append,
        progress=False,
    )
    assert [o.status for o in outcomes] == ["failed", "ran"]
    assert "boom in fake_first" in outcomes[0].message
    assert messages[0].startswith("fake_first failed: RuntimeError: boom in fake_first")
    assert (
        "Traceback" in (out / "fake_first.traceback.txt").read_text()
    )  # kept, not shown
    monkeypatch.setenv("FAKE_MODE_fake_first", "ok")
    outcomes = runner.run_experiments(
        ["fake_first", "fake_second"], results_dir=out, log=_quiet, progress=False
    )
    assert [o.status for o in outcomes] == ["ran", "skipped"]
    assert _runs(fakes, "fake_second") == 1


def test_interrupt_keeps_finished_results_and_rerun_resumes(
    fakes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = fakes / "results"
    monkeypatch.setenv("FAKE_MODE_fake_second", "interrupt")
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiments(
            ["fake_first", "fake_second"], results_dir=out, log=_quiet, progress=False
        )
    assert sorted(p.name for p in out.iterdir()) == ["fake_first.json"]
    monkeypatch.setenv("FAKE_MODE_fake_second", "ok")
    outcomes = runner.run_experiments(
        ["fake_first", "fake_second"], results_dir=out, log=_quiet, progress=False
    )
    assert [o.status for o in outcomes] == ["skipped", "ran"]
    assert (_runs(fakes, "fake_first"), _runs(fakes, "fake_second")) == (1, 2)


def test_ctrl_c_in_a_subprocess_then_rerun_repeats_nothing(fakes: Path) -> None:
    """A real `droplab report` process gets SIGINT in its second experiment."""
    out = fakes / "report"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(fakes / "code")!r})
        from droplab.lab import registry
        registry.EXPERIMENTS = ("fake_first", "fake_second")
        from droplab import cli
        sys.exit(cli.main(["report", "--preset", "quick", "--out", {str(out)!r}]))
        """
    )
    env = {**os.environ, "FAKE_MODE_fake_second": "hang", "CI": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background (nohup, `&` in a script) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    started = fakes / "fake_second.started"
    deadline = time.monotonic() + 60
    while (
        not started.exists() and time.monotonic() < deadline and process.poll() is None
    ):
        time.sleep(0.05)
    assert started.exists(), process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "finished results are saved, rerun to resume" in stderr
    assert sorted(p.name for p in (out / "results").iterdir()) == ["fake_first.json"]

    env["FAKE_MODE_fake_second"] = "ok"
    rerun = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert (
        "fake_first: reused saved result" in rerun.stderr
        and "fake_second: ran" in rerun.stderr
    )
    assert (_runs(fakes, "fake_first"), _runs(fakes, "fake_second")) == (1, 2)
    assert (out / "index.html").exists()


def test_progress_bar_is_off_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert runner.progress_enabled() is False


# ----------------------------------------------------------------------------- parallel


def test_parallel_map_keeps_order_and_rejects_bad_jobs() -> None:
    assert parallel_map(abs, [-3, 1, -2]) == [3, 1, 2]
    with pytest.raises(
        ValueError, match="The 'jobs' argument of parallel_map must be an integer in"
    ):
        parallel_map(abs, [1], jobs=0)


def test_parallel_training_is_the_same_for_any_number_of_jobs() -> None:
    from droplab.lab.experiments import averaging

    config = averaging.Config(
        large_hidden=(16,), large_epochs=1, large_ks=(1, 3), seeds=2
    )
    tasks = [(config, i) for i in range(2)]
    serial = parallel_map(averaging._large_task, tasks, jobs=1)
    parallel = parallel_map(averaging._large_task, tasks, jobs=2)
    assert serial == parallel
    assert serial[0] != serial[1]  # different seeds, different networks


# ----------------------------------------------------------------------------- statistics


def test_statistics_helpers() -> None:
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    rate, low, high = proportion_ci(50, 100)
    assert rate == 0.5 and 0.39 < low < 0.40 and 0.60 < high < 0.61
    sparse = chisquare_pooled([1, 2, 40, 50, 7], [0.01, 0.02, 0.4, 0.5, 0.07])
    assert sparse["bins"] == 3 and sparse["df"] == 2  # 1+2+40 | 50 | 7
    assert chisquare_pooled([3], [1.0])["p_value"] == 1.0
    assert chisquare_pooled([100, 0], [0.5, 0.5])["p_value"] < 1e-10


# ----------------------------------------------------------------------------- CLI


def test_cli_run_list_and_report(
    fakes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fakes / "out"
    assert cli.main(["list", "--out", str(out)]) == 0
    assert "fake_first     not run" in capsys.readouterr().out
    assert (
        cli.main(
            ["run", "fake_first", "--preset", "quick", "--out", str(out), "--jobs", "2"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "fake_first: size is 1" in printed
    assert results.load_result(results.result_path(out / "results", "fake_first"))[
        "result"
    ] == {"size": 1, "jobs": 2}
    assert cli.main(["list", "--out", str(out)]) == 0
    assert "saved (quick config" in capsys.readouterr().out
    assert cli.main(["report", "--only", "fake_second", "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "size is 2" in page and "size is 1" not in page
    last = capsys.readouterr().out.splitlines()[-1]  # the page, as a link to open
    assert last == (out / "index.html").resolve().as_uri()
    assert last.startswith("file:///")
    # Bad arguments: argparse's one line and exit status 2 (tests/cli has more).
    for argv, message in (
        (["report", "--only", "nope"], "argument --only: must be comma-separated "
         "names from fake_first, fake_second; got 'nope' (unknown: nope)"),
        (["run", "nope"], "argument NAME: must be one of fake_first, fake_second; "
         "got 'nope'"),
        (["report", "--jobs", "0"], "argument --jobs: must be an integer >= 1; got '0'"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            cli.main([*argv, "--out", str(out)])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


def test_cli_report_exits_nonzero_when_an_experiment_fails(
    fakes: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_MODE_fake_second", "raise")
    out = fakes / "out"
    assert cli.main(["report", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "fake_second failed: RuntimeError: boom in fake_second" in err
    page = (out / "index.html").read_text()
    assert "size is 2" in page and "not run yet" not in page
    assert "Failed in this run: RuntimeError: boom in fake_second" in page


def test_the_machine_record_names_the_cpu_and_torchs_instruction_set() -> None:
    """Results can differ in their last digits between instruction sets, so the
    record says which one ran (README, "Reproducibility")."""
    import torch

    from droplab.lab.results import machine_info

    info = machine_info()
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["cpus"] == os.cpu_count()
