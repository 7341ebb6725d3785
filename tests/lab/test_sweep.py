"""``droplab sweep``: interrupted studies resume to the same count; the best is reported.

Tiny sweeps: the digits data, 3 epochs, 5 trials, pruning allowed from the
third trial on, the study in SQLite under tmp_path.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest

optuna = pytest.importorskip("optuna")

from droplab.cli import main  # noqa: E402
from droplab.lab import sweep  # noqa: E402
from droplab.lab.data import load  # noqa: E402
from droplab.lab.sweep import SweepConfig, finished_trials, run_sweep, summarize  # noqa: E402

CONFIG = SweepConfig(epochs=3, startup_trials=2, warmup_epochs=1, seed=3)
N_TRIALS = 5


def url(tmp_path, name="study.db"):
    return f"sqlite:///{tmp_path / name}"


def stop_after(k):
    def callback(study, trial):
        if len(finished_trials(study)) >= k:
            raise KeyboardInterrupt

    return callback


def test_interrupted_and_resumed_sweeps_finish_as_many_trials(tmp_path, monkeypatch):
    whole = run_sweep(CONFIG, n_trials=N_TRIALS, storage=url(tmp_path, "whole.db"))
    assert len(finished_trials(whole)) == N_TRIALS

    # Stopped between trials (Ctrl-C after the second trial was saved).
    between = url(tmp_path, "between.db")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(CONFIG, n_trials=N_TRIALS, storage=between, callbacks=[stop_after(2)])
    assert (
        len(
            finished_trials(
                optuna.load_study(study_name="droplab-sweep", storage=between)
            )
        )
        == 2
    )
    resumed = run_sweep(CONFIG, n_trials=N_TRIALS, storage=between)
    assert len(finished_trials(resumed)) == len(finished_trials(whole))
    assert len(resumed.trials) == N_TRIALS
    # The first two trials were kept, not redone.
    for kept, first in zip(resumed.trials[:2], whole.trials[:2], strict=True):
        assert kept.params == first.params and kept.value == first.value

    # Stopped in the middle of the third trial: that trial fails, the rest resume.
    during = url(tmp_path, "during.db")
    real = sweep.train_trial
    calls = []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "train_trial", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(CONFIG, n_trials=N_TRIALS, storage=during)
    monkeypatch.setattr(sweep, "train_trial", real)
    resumed = run_sweep(CONFIG, n_trials=N_TRIALS, storage=during)
    assert len(finished_trials(resumed)) == N_TRIALS
    assert [t.state.name for t in resumed.trials].count("FAIL") == 1

    # Asking again for the same total runs nothing more.
    again = run_sweep(CONFIG, n_trials=N_TRIALS, storage=during)
    assert len(again.trials) == N_TRIALS + 1


def test_the_best_rate_is_reported_with_its_curves(tmp_path):
    study = run_sweep(CONFIG, n_trials=N_TRIALS, storage=url(tmp_path))
    summary = summarize(study, top=2)
    json.dumps(summary, allow_nan=False)  # plain JSON, as the report needs
    best = summary["best"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert best["value"] == min(t.value for t in complete)
    assert 0.0 <= best["params"]["p"] <= CONFIG.max_rate
    assert 0.0 <= best["params"]["p_input"] <= CONFIG.max_input_rate
    curves = best["curves"]
    assert set(curves) == {"train_loss", "val_loss", "val_accuracy"}
    assert all(len(c) == CONFIG.epochs for c in curves.values())
    assert curves["val_loss"][-1] == best["value"]
    assert 0.0 <= best["test"]["test_accuracy"] <= 1.0
    values = [entry["value"] for entry in summary["best_curves"]]
    assert values == sorted(values) and len(values) == min(2, len(complete))
    assert [row["number"] for row in summary["trials"]] == list(range(N_TRIALS))
    assert summary["config"]["epochs"] == CONFIG.epochs


def test_a_seeded_sweep_is_reproducible_and_prunes_by_the_median_rule():
    first = run_sweep(CONFIG, n_trials=8, storage=None)
    second = run_sweep(CONFIG, n_trials=8, storage=None)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.value for t in first.trials] == [t.value for t in second.trials]
    pruned = [t for t in first.trials if t.state.name == "PRUNED"]
    assert pruned  # with this seed, some trials fall behind the median
    for trial in pruned:
        # Stopped at the first epoch (past the warm-up) where its best loss so
        # far was above the median of the trials completed before it.
        step = max(trial.intermediate_values)
        assert step >= CONFIG.warmup_epochs
        earlier = [
            t.intermediate_values[step]
            for t in first.trials[: trial.number]
            if t.state.name == "COMPLETE"
        ]
        assert len(earlier) >= CONFIG.startup_trials
        best = min(trial.intermediate_values.values())
        assert best > statistics.median(earlier)


def test_train_trial_curves_for_regression():
    data = load("toy", seed=0, n_samples=60)
    params = {"p_input": 0.0, "p": 0.2, "width": 16, "lr": 1e-2}
    seen = []
    curves, test = sweep.train_trial(
        params, data, depth=1, epochs=2, batch_size=16, seed=0,
        report=lambda epoch, c: seen.append((epoch, len(c["val_loss"]))),
    )  # fmt: skip
    assert seen == [(0, 1), (1, 2)]
    assert set(curves) == {"train_loss", "val_loss"} and set(test) == {"test_loss"}
    assert all(math.isfinite(v) for c in curves.values() for v in c)


def test_a_study_refuses_other_settings(tmp_path):
    run_sweep(CONFIG, n_trials=1, storage=url(tmp_path))
    other = SweepConfig(epochs=4, startup_trials=2, warmup_epochs=1, seed=3)
    with pytest.raises(ValueError, match=r"started with other settings \(epochs=3\)"):
        run_sweep(other, n_trials=1, storage=url(tmp_path))


def test_config_and_count_validation():
    with pytest.raises(
        ValueError,
        match=r"'max_rate' argument of SweepConfig must be a rate in \[0, 1\); got 1.0",
    ):
        SweepConfig(max_rate=1.0)
    with pytest.raises(ValueError, match=r"'epochs' argument of SweepConfig .* got 0"):
        SweepConfig(epochs=0)
    with pytest.raises(ValueError, match=r"'n_trials' argument of run_sweep .* got -1"):
        run_sweep(CONFIG, n_trials=-1, storage=None)


def test_cli_runs_continues_and_reports(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--epochs", "2", "--startup-trials", "1", "--out", str(out)]
    assert main([*args, "--n-trials", "2"]) == 0
    assert main([*args, "--n-trials", "3"]) == 0  # one more trial
    text = capsys.readouterr().out
    assert "best: trial" in text and f"wrote {out / 'sweep.json'} and" in text
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["n_finished"] == 3 and len(summary["trials"]) == 3
    assert (out / "study.db").is_file()
    assert main([*args, "--n-trials", "0"]) == 0  # only reports
    assert len(json.loads((out / "sweep.json").read_text())["trials"]) == 3
    assert main([*args, "--n-trials", "0", "--max-rate", "1.5"]) == 2
    assert "'max_rate' argument of SweepConfig" in capsys.readouterr().err


def test_cli_beats_when_not_on_a_terminal(tmp_path, capsys, monkeypatch):
    """Trials and each trial's epochs, as heartbeat lines (stderr is not a TTY)."""
    monkeypatch.setenv("DROPLAB_HEARTBEAT_SECONDS", "0")
    out = tmp_path / "out"
    args = ["sweep", "--epochs", "2", "--startup-trials", "1", "--out", str(out)]
    assert main([*args, "--n-trials", "2"]) == 0
    beats = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("droplab sweep |")
    ]
    assert any("trials: 0/2 trials done | trial 0: 1/2 epochs" in b for b in beats)
    assert any("trials: 2/2 trials done, now trial 1 " in b for b in beats)
    assert all("elapsed" in b for b in beats)
