"""Executors: local pool and Ray tasks, per-task checkpoints, resume after a fault.

The Ray test starts a real two-node cluster on loopback (a head with no CPU
and one worker node with one CPU, both bound to 127.0.0.1), runs a quick
experiment grid on it from a separate driver process, kills the worker node
mid-run, stops the driver, adds a fresh worker and shows that the rerun
restores the saved tasks, completes, and equals a local run. It is skipped
when Ray is not installed (``pip install 'droplab[distributed]'``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from droplab.cli import main
from droplab.execution import (
    LocalExecutor,
    RayExecutor,
    TaskCheckpoint,
    checkpointed_map,
    executors,
    make_executor,
    parallel_map,
    use_executor,
)


def without_timings(value):
    """A result with its wall-clock fields (``*seconds*``) left out."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


# --------------------------------------------------------------- specs


def test_make_executor_specs():
    assert isinstance(make_executor(), LocalExecutor)
    assert make_executor("local", jobs=3).jobs == 3
    assert make_executor("ray").address is None
    assert make_executor("ray:auto").address == "auto"
    assert make_executor("ray:127.0.0.1:6379").address == "127.0.0.1:6379"
    for bad in ("ray:", "Ray", "local:2", ""):
        with pytest.raises(
            ValueError,
            match=r"'executor' argument must be local, ray or ray:ADDRESS; got",
        ):
            make_executor(bad)
    with pytest.raises(TypeError, match=r"'executor' argument must be a string; got 2"):
        make_executor(2)
    with pytest.raises(ValueError, match=r"'jobs' argument of LocalExecutor .* got 0"):
        LocalExecutor(0)


def test_local_pool_yields_every_result_with_one_thread():
    # math.factorial is pickled by name, as a lab task is
    items = [5, 0, 7, 3]
    got = dict(LocalExecutor(2).imap_unordered(math.factorial, items))
    assert got == {i: math.factorial(n) for i, n in enumerate(items)}
    assert checkpointed_map(LocalExecutor(2), math.factorial, items) == [
        120,
        1,
        5040,
        6,
    ]


# --------------------------------------------------------------- checkpoints


def test_an_interrupted_map_resumes_from_its_checkpoint(tmp_path):
    calls = []

    def square(x):
        calls.append(x)
        return {"x": x, "square": np.float64(x) ** 2}

    items = list(range(6))
    checkpoint = TaskCheckpoint(tmp_path / "tasks", log=(messages := []).append)
    done = []

    def stop_after_two():
        done.append(1)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpointed_map(
            LocalExecutor(1),
            square,
            items,
            checkpoint=checkpoint,
            progress=stop_after_two,
        )
    assert len(checkpoint) == 2 and calls == [0, 1]
    assert not list((tmp_path / "tasks").glob(".task.*"))  # no half-written file
    results = checkpointed_map(LocalExecutor(1), square, items, checkpoint=checkpoint)
    assert calls == [0, 1, 2, 3, 4, 5]  # each task ran once
    assert results == [{"x": x, "square": float(x) ** 2} for x in items]
    assert messages == [f"2 of 6 tasks restored from {tmp_path / 'tasks'}"]


def test_a_checkpoint_file_of_another_task_is_not_used(tmp_path):
    checkpoint = TaskCheckpoint(tmp_path)
    key = TaskCheckpoint.key(abs, -3)
    assert key != TaskCheckpoint.key(abs, -4) != TaskCheckpoint.key(math.fabs, -3)
    checkpoint.save(key, 3)
    assert checkpoint.load(key) == (True, 3)
    other = TaskCheckpoint.key(abs, -4)
    checkpoint.path(key).replace(checkpoint.path(other))  # a file under a wrong name
    assert checkpoint.load(other) == (False, None)


def test_parallel_map_runs_on_the_active_executor(tmp_path):
    calls = []

    def double(x):
        calls.append(x)
        return 2 * x

    assert executors.active() is None
    with use_executor(LocalExecutor(1), checkpoint=tmp_path) as executor:
        assert executors.active() == (executor, executors.active()[1])
        assert parallel_map(double, [1, 2, 3], jobs=5) == [2, 4, 6]
        assert parallel_map(double, [1, 2, 3]) == [2, 4, 6]
    assert executors.active() is None
    assert calls == [1, 2, 3]  # the second map was read from the checkpoint
    assert len(TaskCheckpoint(tmp_path)) == 3


def test_report_cli_resumes_per_task_with_the_local_executor(
    tmp_path, monkeypatch, capsys
):
    from droplab.lab.experiments import exact_count

    real = exact_count._task
    calls = []

    @functools.wraps(real)  # the same name, so the same checkpoint keys
    def interrupted(task):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(task)

    args = ["run", "exact-count", "--preset", "quick", "--executor", "local"]
    monkeypatch.setattr(exact_count, "_task", interrupted)
    assert main([*args, "--out", str(tmp_path / "a")]) == 130
    tasks = tmp_path / "a" / "results" / ".tasks"
    assert len(TaskCheckpoint(tasks)) == 3
    monkeypatch.setattr(exact_count, "_task", real)
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "3 of 9 tasks restored" in capsys.readouterr().err
    assert not tasks.exists()  # cleared once the experiment's result is saved
    assert main([*args[:-2], "--out", str(tmp_path / "b")]) == 0
    resumed, whole = (
        json.loads((tmp_path / d / "results" / "exact-count.json").read_text())
        for d in ("a", "b")
    )
    assert without_timings(resumed["result"]) == without_timings(whole["result"])
    capsys.readouterr()
    # one line and exit code 2, before any work
    assert main([*args[:-1], "dask", "--out", str(tmp_path / "c")]) == 2
    assert "'executor' argument must be local, ray" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


# --------------------------------------------------------------- Ray


def write_uci_folder(root: Path, name: str = "toy", rows: int = 40) -> Path:
    """A tiny folder in the Gal & Ghahramani layout: y = x0 - 2 x1 + noise."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 2))
    table = np.column_stack([x, x[:, 0] - 2 * x[:, 1] + 0.1 * rng.normal(size=rows)])
    np.savetxt(folder / "data.txt", table, fmt="%.6f")
    for file, text in {
        "index_features.txt": "0\n1\n", "index_target.txt": "2\n",
        "n_splits.txt": "3\n", "n_hidden.txt": "8\n", "n_epochs.txt": "3\n",
        "dropout_rates.txt": "0.01\n0.1\n", "tau_values.txt": "1.0\n",
    }.items():  # fmt: skip
        (folder / file).write_text(text)
    for k in range(3):
        order = rng.permutation(rows)
        np.savetxt(folder / f"index_train_{k}.txt", order[:32], fmt="%d")
        np.savetxt(folder / f"index_test_{k}.txt", order[32:], fmt="%d")
    return folder


def driver(args, env, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "droplab.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A test run started in the background (nohup, `&` in a script) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


@pytest.mark.slow
def test_ray_cluster_loses_a_worker_and_the_rerun_completes(tmp_path):
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, **loopback},
    )
    # Drivers keep 127.0.0.1 as it is (Ray otherwise swaps in the machine's
    # outward address, where this cluster does not listen).
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    try:
        worker = cluster.add_node(num_cpus=1, **loopback)
        address = cluster.address
        assert address.startswith("127.0.0.1:")
        out = tmp_path / "ray"
        args = [
            "run",
            "exact-count",
            "--preset",
            "quick",
            "--executor",
            f"ray:{address}",
            "--out",
            str(out),
        ]
        tasks = out / "results" / ".tasks"

        first = driver(args, env)
        deadline = time.monotonic() + 180
        while len(TaskCheckpoint(tasks)) < 2:
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "no task finished on the cluster"
            time.sleep(0.1)
        cluster.remove_node(worker, allow_graceful=False)  # the worker dies
        time.sleep(1.0)
        first.send_signal(signal.SIGINT)  # and the driver is stopped
        log = first.communicate(timeout=60)[0]
        assert first.returncode == 130, log
        saved = len(TaskCheckpoint(tasks))
        assert 2 <= saved < 9, log
        assert not (out / "results" / "exact-count.json").exists()

        cluster.add_node(num_cpus=1, **loopback)  # a fresh worker joins
        second = driver(args, env)
        log = second.communicate(timeout=300)[0]
        assert second.returncode == 0, log
        assert f"{saved} of 9 tasks restored" in log
        assert not tasks.exists()

        local = tmp_path / "local"
        assert (
            main(["run", "exact-count", "--preset", "quick", "--out", str(local)]) == 0
        )
        on_ray, here = (
            json.loads((d / "results" / "exact-count.json").read_text())
            for d in (out, local)
        )
        assert without_timings(on_ray["result"]) == without_timings(here["result"])

        # droplab uci on the same cluster: the splits equal a local run's.
        data = write_uci_folder(tmp_path / "uci")
        fast = ["--dataset", "toy", "--data", str(data.parent), "--epochs-multiplier", "1",
                "--samples", "20", "--validation-samples", "10"]  # fmt: skip
        remote = driver(
            [
                "uci",
                *fast,
                "--executor",
                f"ray:{address}",
                "--out",
                str(tmp_path / "u-ray"),
            ],
            env,
        )
        log = remote.communicate(timeout=300)[0]
        assert remote.returncode == 0, log
        assert main(["uci", *fast, "--out", str(tmp_path / "u-local")]) == 0
        for split in range(3):
            a, b = (
                json.loads((tmp_path / d / "toy" / f"split_{split}.json").read_text())
                for d in ("u-ray", "u-local")
            )
            assert without_timings(a) == without_timings(b)
    finally:
        cluster.shutdown()


def test_ray_executor_needs_ray_or_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'droplab\[distributed\]'"):
        list(RayExecutor("127.0.0.1:1").imap_unordered(abs, [1]))
