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
        assert "recomputed: saved result malformed" in messages[0]
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


# ------------------------------------------------- issue 31: what a rerun may reuse


def _saved(out: Path, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(results.result_path(out, name).read_text())
    return record


def _resave(out: Path, name: str, record: dict[str, Any]) -> None:
    results.result_path(out, name).write_text(json.dumps(record))


def test_a_result_from_another_version_is_recomputed_and_the_page_says_so(
    fakes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fakes / "out"
    assert cli.main(["report", "--only", "fake_first", "--out", str(out)]) == 0
    assert _runs(fakes, "fake_first") == 1
    # Another version's file: same config hash, other code, and a result
    # without the key this version reads ("size").
    record = _saved(out / "results", "fake_first")
    record["code"] = "0123456789abcdef"
    record["result"] = {"old_key": 7, "jobs": 1}
    _resave(out / "results", "fake_first", record)
    assert cli.main(["list", "--out", str(out)]) == 0
    assert "saved by another version (will be recomputed)" in capsys.readouterr().out
    assert cli.main(["report", "--only", "fake_first", "--out", str(out)]) == 0
    assert _runs(fakes, "fake_first") == 2
    err = capsys.readouterr().err
    assert "fake_first: recomputed: saved result from another version" in err
    page = (out / "index.html").read_text()
    assert "Recomputed: saved result from another version" in page
    assert "size is 2" in page
    assert _saved(out / "results", "fake_first")["result"]["size"] == 2


def test_a_result_this_code_cannot_read_is_recomputed_not_shown(fakes: Path) -> None:
    module = registry.get_experiment("fake_first")
    out = fakes / "results"
    runner.run_experiment(module, module.Config(), results_dir=out)
    record = _saved(out, "fake_first")
    record["result"] = {"jobs": 1}  # same code and config, a key missing
    _resave(out, "fake_first", record)
    messages: list[str] = []
    again = runner.run_experiment(
        module, module.Config(), results_dir=out, log=messages.append
    )
    assert again.status == "ran" and _runs(fakes, "fake_first") == 2
    assert messages == [
        f"fake_first: recomputed: saved result malformed "
        f"({results.result_path(out, 'fake_first')}: KeyError: 'size')"
    ]
    # And the page, rendered from such a file without a run, names it
    # instead of crashing.
    from droplab.lab.report import write_report

    record["result"] = {"jobs": 1}
    _resave(out, "fake_first", record)
    page, missing = write_report(fakes, ["fake_first"])
    assert "KeyError" in missing["fake_first"] and page.exists()


@pytest.mark.parametrize("started", ["yesterday", 12, ["2026"]])
def test_a_record_with_a_malformed_started_is_refused_and_recomputed(
    fakes: Path, started: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fakes / "out"
    assert cli.main(["report", "--only", "fake_first", "--out", str(out)]) == 0
    record = _saved(out / "results", "fake_first")
    record["started"] = started
    _resave(out / "results", "fake_first", record)
    with pytest.raises(results.ResultError, match="'started' must be an ISO 8601"):
        results.load_result(results.result_path(out / "results", "fake_first"))
    assert cli.main(["report", "--only", "fake_first", "--out", str(out)]) == 0
    assert "recomputed: saved result malformed" in capsys.readouterr().err
    assert "size is 2" in (out / "index.html").read_text()


def test_a_cut_task_checkpoint_is_set_aside_and_heals_on_the_next_run(
    tmp_path: Path,
) -> None:
    from droplab.execution import LocalExecutor, TaskCheckpoint, checkpointed_map

    folder = tmp_path / ".tasks"
    messages: list[str] = []
    saved = TaskCheckpoint(folder, log=messages.append)
    assert checkpointed_map(LocalExecutor(1), abs, [-1, -2], checkpoint=saved) == [1, 2]
    cut = saved.path(TaskCheckpoint.key(abs, -2))
    cut.write_bytes(cut.read_bytes()[:7])  # a kill during the write
    stale = folder / f".{cut.name}.k1ll3d.tmp"
    stale.write_text('{"key": ')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    again = TaskCheckpoint(folder, log=messages.append)
    assert not stale.exists()
    assert checkpointed_map(LocalExecutor(1), abs, [-1, -2], checkpoint=again) == [1, 2]
    assert any(
        f"task checkpoint {cut} is damaged (JSONDecodeError" in m
        and f"set aside as {cut}.damaged" in m
        for m in messages
    ), messages
    assert (folder / f"{cut.name}.damaged").exists()  # kept for a look, not used
    assert again.load(TaskCheckpoint.key(abs, -2)) == (True, 2)  # healed


def test_stale_temporary_result_files_are_removed_on_the_next_run(
    fakes: Path,
) -> None:
    out = fakes / "results"
    out.mkdir()
    stale = out / ".fake_first.json.a1b2c3.tmp"
    stale.write_text('{"format": "droplab-res')
    fresh = out / ".fake_second.json.d4e5f6.tmp"  # a write in progress elsewhere
    fresh.write_text("{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    runner.run_experiments(["fake_first"], results_dir=out, progress=False)
    assert not stale.exists() and fresh.exists()


def _one_line_exit_2(argv: list[str], fakes: Path, seconds: float = 2.0) -> str:
    """Run ``droplab`` in a fresh process; it must refuse in one line, exit 2, < 2 s
    (well before any experiment: the fakes count their runs)."""
    path = [str(fakes / "code"), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    probe = textwrap.dedent(
        """
        import sys
        from droplab import cli
        from droplab.lab import registry
        registry.EXPERIMENTS = ("fake_first", "fake_second")
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    clock = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    took = time.perf_counter() - clock
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert took < seconds
    assert _runs(fakes, "fake_first") == 0
    return done.stderr.strip()


def test_a_read_only_out_is_refused_before_any_work(fakes: Path) -> None:
    out = fakes / "read-only"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):  # root writes anyway: use sysfs, where
            if not Path("/sys").is_dir():  # no one can make a folder
                pytest.skip("no read-only folder to test with")
            out = Path("/sys/droplab-report")
        line = _one_line_exit_2(["report", "--out", str(out)], fakes)
    finally:
        (fakes / "read-only").chmod(0o755)
    assert line.startswith("droplab report: error: argument --out: cannot write in ")


def test_an_out_that_is_a_file_is_refused_before_any_work(fakes: Path) -> None:
    page = fakes / "page.html"
    page.write_text("mine")
    line = _one_line_exit_2(["report", "--out", str(page)], fakes)
    assert line == (
        f"droplab report: error: argument --out: {page} is a file, not a folder "
        "(see droplab report --help)"
    )
    assert page.read_text() == "mine"


def test_a_folder_where_a_result_goes_is_refused_before_any_work(
    fakes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fakes / "out"
    blocker = out / "results" / "fake_second.json"
    blocker.mkdir(parents=True)
    assert cli.main(["list", "--out", str(out)]) == 0
    assert "blocked: not a file (move it away)" in capsys.readouterr().out
    # (checked once the names are known, after PyTorch's import: no 2 s bound)
    line = _one_line_exit_2(["report", "--out", str(out)], fakes, seconds=60.0)
    assert line == (
        f"droplab report: error: argument --out: {blocker} is not a file "
        "(the result of fake_second is saved there): move it away"
    )


def test_a_disk_without_room_is_refused_before_any_work(
    fakes: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    usage = shutil.disk_usage(fakes)
    monkeypatch.setattr(
        results.shutil, "disk_usage", lambda _: usage._replace(free=5 * 2**20)
    )
    with pytest.raises(SystemExit) as stop:
        cli.main(["report", "--out", str(fakes / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"droplab report: error: argument --out: {fakes / 'out'} has 5.0 MiB free; "
        "a report needs at least 64 MiB (see droplab report --help)"
    )
    assert _runs(fakes, "fake_first") == 0


def test_a_failed_save_names_the_path_and_leaves_no_empty_traceback(
    fakes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from droplab.execution import storage

    def full_disk(path: Any, write: Any) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage, "write_atomically", full_disk)
    out = fakes / "results"
    messages: list[str] = []
    outcomes = runner.run_experiments(
        ["fake_first", "fake_second"],
        results_dir=out,
        log=messages.append,
        progress=False,
    )
    path = results.result_path(out, "fake_first")
    reason = f"could not save {path}: No space left on device"
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert outcomes[0].message == reason
    assert outcomes[1].message == f"not run: {reason}"
    assert _runs(fakes, "fake_second") == 0  # not computed for nothing
    assert messages[-1] == (
        f"fake_first failed: {reason}; the experiments after it are not run"
    )
    assert not list(out.glob("*.traceback.txt")) if out.exists() else True


def test_a_stale_result_stays_until_its_replacement_is_saved(
    fakes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = registry.get_experiment("fake_first")
    out = fakes / "results"
    runner.run_experiment(module, module.Config(), results_dir=out)
    record = _saved(out, "fake_first")
    record["code"] = "another version"
    _resave(out, "fake_first", record)
    before = results.result_path(out, "fake_first").read_bytes()
    monkeypatch.setenv("FAKE_MODE_fake_first", "raise")
    (failed,) = runner.run_experiments(["fake_first"], results_dir=out, progress=False)
    assert failed.status == "failed"
    assert results.result_path(out, "fake_first").read_bytes() == before  # kept
    monkeypatch.setenv("FAKE_MODE_fake_first", "ok")
    (ran,) = runner.run_experiments(["fake_first"], results_dir=out, progress=False)
    assert ran.status == "ran" and ran.message.startswith(
        "recomputed: saved result from"
    )
    assert _saved(out, "fake_first")["code"] == registry.code_fingerprint(module)
