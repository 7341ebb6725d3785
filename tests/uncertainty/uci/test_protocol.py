"""Tests of the UCI folder loader, the protocol (resume, end to end) and summaries."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from droplab.cli import main
from droplab.uncertainty.uci import protocol as uci
from droplab.uncertainty.uci.folder import UCIFormatError, load_uci_folder
from droplab.uncertainty.uci.summary import format_summary, read_published, summarize


def write_folder(
    root: Path, name: str = "toy", rows: int = 40, splits: int = 3
) -> Path:
    """A small, valid folder: y = x0 - 2 x1 + noise, ``splits`` random splits."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 2))
    y = x[:, 0] - 2 * x[:, 1] + 0.1 * rng.normal(size=rows)
    table = np.column_stack([x, np.zeros(rows), y])  # a constant column: std 0
    (folder / "data.txt").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in table) + "\n\n"
    )
    (folder / "index_features.txt").write_text("0\n1\n2\n")
    (folder / "index_target.txt").write_text("3\n")
    (folder / "n_splits.txt").write_text(f"{splits}\n")
    (folder / "n_hidden.txt").write_text("8\n")
    (folder / "n_epochs.txt").write_text("3\n")
    (folder / "dropout_rates.txt").write_text("0.01\n0.1\n")
    (folder / "tau_values.txt").write_text("1.0\n")
    for k in range(splits):
        order = rng.permutation(rows)
        (folder / f"index_train_{k}.txt").write_text("\n".join(map(str, order[:32])))
        (folder / f"index_test_{k}.txt").write_text("\n".join(map(str, order[32:])))
    return folder


FAST = uci.ProtocolSettings(epochs_multiplier=1.0, samples=20, validation_samples=10)


# --- loader -----------------------------------------------------------------------


def test_loads_a_valid_folder(tmp_path: Path) -> None:
    folder = load_uci_folder(write_folder(tmp_path))
    assert folder.name == "toy" and folder.data.shape == (40, 4)
    assert folder.features.tolist() == [0, 1, 2] and folder.target == 3
    assert folder.n_splits == 3 and folder.n_hidden == 8 and folder.n_epochs == 3
    assert folder.dropout_rates == (0.01, 0.1) and folder.tau_values == (1.0,)
    x_train, y_train, x_test, y_test = folder.arrays(0)
    assert y_train.shape == (32,) and x_test.shape == (8, 3)
    assert x_train.shape == (32, 3) and y_test.shape == (8,)


@pytest.mark.parametrize(
    ("file", "content", "match"),
    [
        ("data.txt", "1 2 3 4\n5 x 7 8\n", r"data.txt, line 2: 'x' is not a number"),
        (
            "data.txt",
            "1 2 3 4\n\n5 6 7\n",
            r"data.txt, line 3: 3 values, but the first row has 4",
        ),
        ("data.txt", "1 2 3 nan\n", r"data.txt, line 1: 'nan' is not a finite number"),
        ("data.txt", "\n\n", r"data.txt: file is empty"),
        (
            "index_features.txt",
            "0\n1\n7\n",
            r"index_features.txt, line 3: column index 7 is out of range \[0, 4\)",
        ),
        (
            "index_features.txt",
            "0\n1.5\n",
            r"index_features.txt, line 2: '1.5' is not an integer",
        ),
        (
            "index_features.txt",
            "0\n0\n",
            r"index_features.txt: column index 0 appears twice",
        ),
        (
            "index_target.txt",
            "1\n",
            r"index_target.txt: target column 1 is also a feature",
        ),
        (
            "index_target.txt",
            "3 2\n",
            r"index_target.txt: expected one column index, found 2",
        ),
        (
            "index_train_1.txt",
            "0\n1\n40\n",
            r"index_train_1.txt, line 3: row index 40 is out of range \[0, 40\)",
        ),
        (
            "index_test_2.txt",
            "-1\n",
            r"index_test_2.txt, line 1: row index -1 is out of range",
        ),
        ("n_splits.txt", "three\n", r"n_splits.txt, line 1: 'three' is not a number"),
        ("n_splits.txt", "4\n", r"index_train_3.txt: file is missing"),
        ("n_hidden.txt", "0\n", r"n_hidden.txt, line 1: value 0 is out of range"),
        (
            "dropout_rates.txt",
            "0.1\n1.0\n",
            r"dropout_rates.txt, line 2: dropout rate 1.0 is not in \[0, 1\)",
        ),
        (
            "tau_values.txt",
            "0.5\n-1\n",
            r"tau_values.txt, line 2: tau -1.0 is not in \(0, inf\)",
        ),
    ],
)
def test_malformed_folders_name_the_file_and_line(
    tmp_path: Path, file: str, content: str, match: str
) -> None:
    folder = write_folder(tmp_path)
    (folder / file).write_text(content)
    with pytest.raises(UCIFormatError, match=match):
        load_uci_folder(folder)


@pytest.mark.parametrize(
    "missing", ["data.txt", "index_target.txt", "n_epochs.txt", "index_test_0.txt"]
)
def test_missing_files_are_named(tmp_path: Path, missing: str) -> None:
    folder = write_folder(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(UCIFormatError, match=rf"{missing}: file is missing"):
        load_uci_folder(folder)


def test_overlapping_split_and_missing_folder(tmp_path: Path) -> None:
    folder = write_folder(tmp_path)
    train = (folder / "index_train_0.txt").read_text().split()
    (folder / "index_test_0.txt").write_text(train[5])
    with pytest.raises(
        UCIFormatError,
        match=rf"index_test_0.txt: row {train[5]} is also in index_train_0.txt",
    ):
        load_uci_folder(folder)
    with pytest.raises(UCIFormatError, match="not a folder"):
        load_uci_folder(tmp_path / "nowhere")


def test_malformed_published_file(tmp_path: Path) -> None:
    (tmp_path / "published_per_split.csv").write_text(
        "dataset,split,rmse_weight_scaling,rmse_mc,test_ll,tau\ntoy,0,1,2,-3,0.5\ntoy,1,1,two,-3,0.5\n"
    )
    with pytest.raises(
        UCIFormatError,
        match=r"published_per_split.csv, line 3: a field is not a number",
    ):
        read_published(tmp_path, "toy")
    (tmp_path / "published_per_split.csv").write_text("name,split\n")
    with pytest.raises(UCIFormatError, match=r"line 1: expected the header"):
        read_published(tmp_path, "toy")


def test_parse_splits() -> None:
    assert uci.parse_splits("3,0-1,1", 5) == [3, 0, 1]
    for bad in ["0-5", "2-1", "a", ""]:
        with pytest.raises(ValueError, match="'splits' argument of droplab uci"):
            uci.parse_splits(bad, 5)


# --- protocol ---------------------------------------------------------------------


def test_network_follows_the_paper(tmp_path: Path) -> None:
    net = uci.build_network(3, 8, 0.1, seed=0)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert net[0].seed != net[3].seed
    assert float(net[1].bias.detach().abs().sum()) == 0.0
    limit = math.sqrt(6 / (3 + 8))  # Glorot uniform
    assert float(net[1].weight.detach().abs().max()) <= limit


def test_one_split_end_to_end_is_reproducible(tmp_path: Path) -> None:
    folder = load_uci_folder(write_folder(tmp_path))
    a = uci.run_split(folder, 0, FAST)
    b = uci.run_split(folder, 0, FAST)
    assert len(a["grid"]) == 2 and a["epochs"] == 3
    best = max(a["grid"], key=lambda row: row["validation_ll"])
    assert (a["dropout_rate"], a["tau"]) == (best["dropout_rate"], best["tau"])
    for key in ("rmse_mc", "rmse_weight_scaling", "test_ll"):
        assert math.isfinite(a[key]) and a[key] == b[key]


def without_seconds(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "seconds"}


def test_splits_trained_together_match_splits_trained_alone(tmp_path: Path) -> None:
    folder = load_uci_folder(write_folder(tmp_path))
    together = uci.run_splits(folder, [0, 2], FAST)
    for result in together:
        alone = uci.run_split(folder, result["split"], FAST)
        assert (alone["dropout_rate"], alone["tau"]) == (
            result["dropout_rate"],
            result["tau"],
        )
        for key in ("rmse_mc", "rmse_weight_scaling", "test_ll"):
            assert alone[key] == pytest.approx(result[key], rel=1e-4)


def test_resume_after_an_interrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = load_uci_folder(write_folder(tmp_path / "data"))
    real = uci.train_stacked
    calls: list[int] = []

    def interrupted(jobs: Any, **options: Any) -> Any:
        calls.append(len(jobs))
        if len(calls) == 2:  # the retrain stage, after the grid stage
            raise KeyboardInterrupt
        return real(jobs, **options)

    monkeypatch.setattr(uci, "train_stacked", interrupted)
    with pytest.raises(KeyboardInterrupt):
        uci.run_protocol(folder, [0, 1, 2], FAST, tmp_path / "out")
    assert calls == [6, 3]  # 3 splits x 2 grid cells, then 3 retrains
    saved = sorted(p.name for p in (tmp_path / "out" / "toy").iterdir())
    assert saved == [
        "grid_0.json",
        "grid_1.json",
        "grid_2.json",
    ]  # atomic: no temporary

    def counting(jobs: Any, **options: Any) -> Any:
        calls.append(len(jobs))
        return real(jobs, **options)

    calls.clear()
    monkeypatch.setattr(uci, "train_stacked", counting)
    results = uci.run_protocol(folder, [0, 1, 2], FAST, tmp_path / "out")
    assert calls == [3]  # the grids were reused; only the retrain ran
    assert [r["split"] for r in results] == [0, 1, 2]
    fresh = uci.run_protocol(folder, [0, 1, 2], FAST, tmp_path / "fresh")
    assert [without_seconds(r) for r in results] == [without_seconds(r) for r in fresh]
    calls.clear()
    again = uci.run_protocol(folder, [0, 1, 2], FAST, tmp_path / "out")
    assert calls == [] and again == results  # everything saved: nothing trains

    other = uci.ProtocolSettings(
        epochs_multiplier=2.0, samples=20, validation_samples=10
    )
    with pytest.raises(uci.ResumeError, match="saved with other settings"):
        uci.run_protocol(folder, [0], other, tmp_path / "out")


def test_parallel_chunks_give_the_results_of_one_process(tmp_path: Path) -> None:
    folder = load_uci_folder(write_folder(tmp_path / "data"))
    assert uci.chunk_splits([0, 1, 2], 2) == [[0, 1], [2]]
    assert uci.chunk_splits([4], 3) == [[4]]
    one = uci.run_protocol(folder, [0, 1, 2], FAST, tmp_path / "one")
    two = uci.run_protocol(folder, [0, 1, 2], FAST, tmp_path / "two", jobs=2)
    for a, b in zip(one, two, strict=True):
        assert a["split"] == b["split"]
        for key in ("rmse_mc", "rmse_weight_scaling", "test_ll"):
            assert a[key] == pytest.approx(b[key], rel=1e-4)


def test_cli_end_to_end_with_published_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_folder(tmp_path / "data", splits=2)
    (tmp_path / "data" / "published_per_split.csv").write_text(
        "dataset,split,rmse_weight_scaling,rmse_mc,test_ll,tau\n"
        "other,0,9,9,-9,1\ntoy,0,1.0,0.9,-1.5,1\ntoy,1,1.2,1.0,-1.7,1\n"
    )
    argv = [
        "uci",
        "--data",
        str(tmp_path / "data"),
        "--dataset",
        "toy",
        "--epochs-multiplier",
        "1",
        "--samples",
        "20",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| RMSE, MC dropout |" in table and "published (same splits)" in table
    summary = json.loads((tmp_path / "out" / "toy" / "summary.json").read_text())
    assert summary["splits"] == [0, 1] and summary["published_splits"] == [0, 1]
    assert summary["published"]["rmse_mc"]["mean"] == pytest.approx(0.95)


def test_cli_reports_bad_folders_and_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_folder(tmp_path / "data")
    (folder / "index_target.txt").write_text("9\n")
    argv = [
        "uci",
        "--data",
        str(tmp_path / "data"),
        "--dataset",
        "toy",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert (
        "index_target.txt, line 1: column index 9 is out of range"
        in capsys.readouterr().err
    )
    (folder / "index_target.txt").write_text("3\n")
    assert main([*argv, "--samples", "0"]) == 2
    assert "'samples' argument of droplab uci" in capsys.readouterr().err


# --- summary ----------------------------------------------------------------------


def fake_results(values: list[tuple[float, float, float]]) -> list[dict[str, Any]]:
    return [
        {
            "dataset": "toy",
            "split": k,
            "settings": {"epochs_multiplier": 1, "samples": 5},
            "epochs": 40,
            "seconds": 1.0,
            "rmse_mc": a,
            "test_ll": b,
            "rmse_weight_scaling": c,
        }
        for k, (a, b, c) in enumerate(values)
    ]


def test_summary_mean_se_and_paired_comparison() -> None:
    results = fake_results([(1.0, -1.0, 2.0), (2.0, -2.0, 2.0), (3.0, -1.5, 2.0)])
    published = {
        k: {"rmse_mc": 1.5, "test_ll": -1.0, "rmse_weight_scaling": 2.5, "tau": 1.0}
        for k in range(2)
    }
    published[2] = {
        "rmse_mc": 2.0,
        "test_ll": -1.2,
        "rmse_weight_scaling": 2.5,
        "tau": 1.0,
    }
    summary = summarize(results, published)
    assert summary["ours"]["rmse_mc"]["mean"] == 2.0
    assert summary["ours"]["rmse_mc"]["se"] == pytest.approx(1 / math.sqrt(3))
    paired = summary["paired"]["rmse_mc"]
    differences = np.array([-0.5, 0.5, 1.0])
    assert paired["mean_difference"] == pytest.approx(differences.mean())
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    assert paired["ci95"] == pytest.approx(
        [differences.mean() - half, differences.mean() + half]
    )
    assert paired["p_value"] == pytest.approx(stats.ttest_1samp(differences, 0).pvalue)
    # RMSE: 2.0 vs 1.667 +- 0.167 is worse by 0.333 = 2 SE exactly -> within.
    assert paired["verdict"] == "within 2 SE"
    assert summary["paired"]["rmse_weight_scaling"]["verdict"] == "better"
    assert summary["paired"]["test_ll"]["verdict"] == "worse"
    assert "within 2 SE" in format_summary(summary)


def test_summary_without_published_numbers() -> None:
    summary = summarize(fake_results([(1.0, -1.0, 2.0)]), None)
    assert "published" not in summary and math.isnan(summary["ours"]["rmse_mc"]["se"])
    assert "| RMSE, MC dropout | 1.000 ± n/a |" in format_summary(summary)


# --- report experiment ------------------------------------------------------------


def test_experiment_runs_on_a_folder_and_renders(tmp_path: Path) -> None:
    from droplab.lab.experiments import uci as experiment
    from droplab.lab.registry import experiment_names

    assert "uci" in experiment_names()
    write_folder(tmp_path, splits=2)
    (tmp_path / "published_per_split.csv").write_text(
        "dataset,split,rmse_weight_scaling,rmse_mc,test_ll,tau\n"
        "toy,0,1.0,0.9,-1.5,1\ntoy,1,1.2,1.0,-1.7,1\n"
    )
    config = experiment.Config(
        dataset="toy", splits=(0, 1), epochs_multiplier=1.0, samples=10,
        data_dir=str(tmp_path),
    )  # fmt: skip
    result = experiment.run(config)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert [row["split"] for row in result["per_split"]] == [0, 1]
    # per metric: ours, published on the same splits, paired, published on all
    assert len(experiment.numbers(result)) == 12
    assert experiment.tables(result)[0]["rows"][1][0] == 1
    text = experiment.answer(result)
    assert "published numbers on the same splits" in text
    assert text.startswith("A pipeline check, not the published protocol")
    assert experiment.figure(result).axes


def test_experiment_says_why_it_did_not_run(tmp_path: Path) -> None:
    from droplab.lab.experiments import uci as experiment

    result = experiment.run(experiment.Config(data_dir=str(tmp_path)))
    assert "yacht is missing" in result["skipped"]
    assert experiment.answer(result).startswith("Not run: ")
    assert experiment.numbers(result) == [] and experiment.tables(result) == []
    assert experiment.figure(result).axes


def test_the_default_preset_is_the_published_protocol_on_one_split(
    tmp_path: Path,
) -> None:
    """The default preset runs the paper's settings on one split, says so, names the
    split and the published numbers (that split's and the mean of all splits), and
    gives bootstrap intervals over the split's test rows."""
    from droplab.lab.experiments import uci as experiment
    from droplab.lab.report.summary import MAX_WORDS, short_answer

    default = experiment.Config()
    assert (default.dataset, default.splits) == ("yacht", (0,))
    assert (default.epochs_multiplier, default.samples) == (100.0, 10_000)
    assert experiment.Config.quick().epochs_multiplier < 100  # stays cheap
    write_folder(tmp_path, splits=3)
    (tmp_path / "published_per_split.csv").write_text(
        "dataset,split,rmse_weight_scaling,rmse_mc,test_ll,tau\n"
        "toy,0,1.0,0.9,-1.5,1\ntoy,1,1.2,0.7,-1.7,1\ntoy,2,1.1,0.8,-1.6,1\n"
    )
    config = dataclasses.replace(default, dataset="toy", splits=(1,),
                                 data_dir=str(tmp_path))  # fmt: skip
    result = experiment.run(config)
    assert experiment.is_published_protocol(result)
    assert result["epochs"] == 300 and result["n_splits"] == 3  # 3 x 100
    text = experiment.answer(result)
    assert text.startswith("The published protocol (Gal & Ghahramani 2016")
    assert "on split 1 of toy only, one of its 3 train/test splits" in text
    assert "Published for this split: RMSE 0.700 and log-likelihood -1.700" in text
    # the paper's table: mean ± SE over all 3 splits of the published file
    assert "averages all 3 splits: RMSE 0.80 ± 0.06 and log-likelihood -1.60" in text
    row = result["per_split"][0]
    low, high = row["rmse_mc_rows_ci95"]
    assert 0 <= low <= row["rmse_mc"] <= high
    assert f"RMSE {row['rmse_mc']:.3f} [{low:.3f}, {high:.3f}]" in text
    assert f"bootstrap over its {row['test_rows']} test rows" in text
    headline = next(
        r for r in experiment.numbers(result)
        if r["quantity"].startswith("RMSE, MC dropout (droplab), split 1")
    )  # fmt: skip
    assert (headline["low"], headline["high"]) == (low, high)
    short = short_answer("uci", result, experiment.numbers(result))
    assert short.startswith("Published protocol, split 1 of 3 only")
    assert "0.7 published there (0.80 ± 0.06 over all splits)" in short
    assert len(short.split()) <= MAX_WORDS
