"""Does MC dropout reproduce the UCI regression table of Gal & Ghahramani (2016)?

The paper's protocol (:mod:`droplab.uncertainty.uci`) on one data set of the shared UCI
folder, on a few of its published splits, next to the published per-split
numbers: RMSE of the MC mean, RMSE of the deterministic pass (weight scaling)
and test log-likelihood. The data are ``Config.data_dir``, else
``$DROPLAB_UCI_DATA``, else the five data sets shipped inside droplab
(:mod:`droplab._data`); a folder without the data set is reported as not run,
and why.

- Paper: Gal and Ghahramani, "Dropout as a Bayesian approximation", ICML 2016,
  https://arxiv.org/abs/1506.02142.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from droplab.execution import parallel_map
from droplab.uncertainty.uci.folder import UCIFormatError, load_uci_folder
from droplab.uncertainty.uci.protocol import (
    ProtocolSettings,
    chunk_splits,
    default_data_dir,
    run_splits,
)
from droplab.uncertainty.uci.summary import METRICS, read_published, summarize

NAME = "uci"
QUESTION = (
    "Does Monte-Carlo dropout reproduce the published UCI regression results of "
    "Gal & Ghahramani (2016), and does averaging passes beat weight scaling?"
)
METHOD = (
    "The paper's protocol (droplab uci): per split, a grid of dropout rate x tau "
    "trained on the first 80 % of the training rows and scored by validation "
    "log-likelihood, the best pair retrained on all training rows; one hidden layer "
    "of 50 ReLU units with dropout on the input and before the output, Adam, batch "
    "128, weight decay l^2 (1-p) / (2 N tau). Test scores from T MC passes; per-split "
    "differences to the published numbers with a paired t-interval. The quick and "
    "default presets train a tenth of the published 4000 epochs (quick: 2 splits), "
    "so they check the pipeline, not the table; the full preset is the published "
    "protocol on all 20 splits."
)


@dataclass(frozen=True)
class Config:
    """Settings of the UCI experiment (``Config()`` is the default preset)."""

    dataset: str = "yacht"  # folder name inside the UCI data folder
    splits: tuple[int, ...] = tuple(range(20))  # published splits to run
    epochs_multiplier: float = 10.0  # epochs = n_epochs.txt (40) x this; paper: 100
    samples: int = 1000  # T, MC passes for test and validation scores; paper: 10000
    data_dir: str = ""  # UCI data folder; "" = $DROPLAB_UCI_DATA or the packaged one
    seed: int = 0  # root seed of the protocol

    @classmethod
    def quick(cls) -> Config:
        """Two splits of yacht, 400 epochs, T = 500: a check of the pipeline."""
        return cls(splits=(0, 1), epochs_multiplier=10.0, samples=500)

    @classmethod
    def full(cls) -> Config:
        """The published protocol on all 20 splits (about 5 minutes for yacht here)."""
        return cls(splits=tuple(range(20)), epochs_multiplier=100.0, samples=10_000)


def _data_dir(config: Config) -> Path | None:
    return Path(config.data_dir) if config.data_dir else default_data_dir()


def _some_splits(task: tuple[str, list[int], ProtocolSettings]) -> list[dict[str, Any]]:
    """Several splits trained together (droplab.uncertainty.uci.run_splits)."""
    path, splits, settings = task
    return run_splits(load_uci_folder(path), splits, settings)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def run(config: Config, *, jobs: int = 1) -> dict[str, Any]:
    """Run the protocol on ``config.splits``; a missing data folder is reported."""
    data = _data_dir(config)
    folder_path = None if data is None else data / config.dataset
    if folder_path is None or not folder_path.is_dir():
        where = (
            "no UCI data folder found" if data is None else f"{folder_path} is missing"
        )
        return {"skipped": f"{where}: set DROPLAB_UCI_DATA or Config.data_dir to the "
                "folder of the UCI data sets (layout: droplab.uncertainty.uci.folder)"}  # fmt: skip
    try:
        folder = load_uci_folder(folder_path)
        bad = [s for s in config.splits if not 0 <= s < folder.n_splits]
        if bad:
            raise UCIFormatError(
                f"{folder_path}: no split {bad[0]} (it has {folder.n_splits})"
            )
        published = read_published(data, config.dataset)  # type: ignore[arg-type]
    except UCIFormatError as error:
        return {"skipped": str(error)}
    settings = ProtocolSettings(
        epochs_multiplier=config.epochs_multiplier, samples=config.samples,
        validation_samples=config.samples, seed=config.seed,
    )  # fmt: skip
    tasks = [
        (str(folder_path), chunk, settings)
        for chunk in chunk_splits(list(config.splits), jobs)
    ]
    results = [r for part in parallel_map(_some_splits, tasks, jobs=jobs) for r in part]
    summary = summarize(results, published)
    summary["settings"] = asdict(settings)
    summary["per_split"] = [
        {key: r[key] for key in ("split", "dropout_rate", "tau", "rmse_mc",
                                  "rmse_weight_scaling", "test_ll", "seconds")}
        for r in results
    ]  # fmt: skip
    if published:
        for row in summary["per_split"]:
            row["published"] = published.get(row["split"])
    return _json_safe(summary)


def figure(result: dict[str, Any]) -> Figure:
    """MC RMSE against weight-scaling RMSE per split (ours and published)."""
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    if "skipped" in result:
        ax.text(0.5, 0.5, "not run:\n" + result["skipped"], ha="center", va="center",
                wrap=True, fontsize=9, transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return fig
    rows = result["per_split"]
    ours_x = [r["rmse_weight_scaling"] for r in rows]
    ours_y = [r["rmse_mc"] for r in rows]
    ax.scatter(ours_x, ours_y, label="droplab", color="C0")
    for r in rows:
        ax.annotate(str(r["split"]), (r["rmse_weight_scaling"], r["rmse_mc"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
    pub = [r["published"] for r in rows if r.get("published")]
    if pub:
        ax.scatter([p["rmse_weight_scaling"] for p in pub], [p["rmse_mc"] for p in pub],
                   label="published (same splits)", color="C1", marker="s")  # fmt: skip
    values = (
        ours_x
        + ours_y
        + [p[k] for p in pub for k in ("rmse_mc", "rmse_weight_scaling")]
    )
    low, high = min(values) * 0.9, max(values) * 1.1
    ax.plot([low, high], [low, high], color="0.6", lw=1, ls="--", label="equal RMSE")
    ax.set_xlabel("test RMSE, weight scaling (one deterministic pass)")
    ax.set_ylabel("test RMSE, MC dropout (mean of T passes)")
    settings = result["settings"]
    ax.set_title(f"{result['dataset']}: {result['epochs']} epochs, T = {settings['samples']}",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _interval(entry: dict[str, Any]) -> tuple[float | None, float | None]:
    n = len(entry["values"])
    if entry["se"] is None or n < 2:
        return None, None
    from scipy import stats

    half = float(stats.t.ppf(0.975, n - 1)) * entry["se"]
    return entry["mean"] - half, entry["mean"] + half


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean over splits with the 95 % t-interval, ours and published, per metric."""
    if "skipped" in result:
        return []
    rows = []
    for key, label, _ in METRICS:
        sources = [("droplab", result["ours"][key])]
        if "published" in result:
            sources.append(("published", result["published"][key]))
        for source, entry in sources:
            low, high = _interval(entry)
            rows.append({"quantity": f"{label} ({source})", "value": entry["mean"],
                         "low": low, "high": high, "unit": ""})  # fmt: skip
        if "paired" in result:
            paired = result["paired"][key]
            low, high = paired.get("ci95") or (None, None)
            rows.append({"quantity": f"{label}: droplab - published, paired",
                         "value": paired["mean_difference"], "low": low, "high": high,
                         "unit": ""})  # fmt: skip
    return rows


def tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-split table."""
    if "skipped" in result:
        return []
    columns = ["split", "p", "tau", "RMSE MC", "RMSE weight scaling", "test LL"]
    if "published" in result:
        columns += ["published RMSE MC", "published RMSE w.s.", "published LL"]
    rows = []
    for r in result["per_split"]:
        row = [r["split"], r["dropout_rate"], r["tau"], f"{r['rmse_mc']:.3f}",
               f"{r['rmse_weight_scaling']:.3f}", f"{r['test_ll']:.3f}"]  # fmt: skip
        if "published" in result:
            p = r.get("published") or {}
            row += [f"{p[k]:.3f}" if k in p else "" for k in
                    ("rmse_mc", "rmse_weight_scaling", "test_ll")]  # fmt: skip
        rows.append(row)
    return [
        {"title": f"{result['dataset']}, per split", "columns": columns, "rows": rows}
    ]


def answer(result: dict[str, Any]) -> str:
    """One sentence from the numbers."""
    if "skipped" in result:
        return f"Not run: {result['skipped']}."
    ours = result["ours"]
    short = result["settings"]["epochs_multiplier"] < 100
    text = ("A pipeline check, not the published protocol: " if short else "") + (
        f"On {len(result['splits'])} split(s) of {result['dataset']} with "
        f"{result['epochs']} epochs, MC dropout gives RMSE {ours['rmse_mc']['mean']:.2f} "
        f"against {ours['rmse_weight_scaling']['mean']:.2f} for weight scaling and test "
        f"log-likelihood {ours['test_ll']['mean']:.2f}"
    )
    if "paired" in result:
        verdicts = {key: result["paired"][key]["verdict"] for key, _, _ in METRICS}
        pub = result["published"]
        text += (
            f"; the published numbers on the same splits are RMSE "
            f"{pub['rmse_mc']['mean']:.2f} and log-likelihood {pub['test_ll']['mean']:.2f} "
            f"(droplab's RMSE: {verdicts['rmse_mc']}, log-likelihood: "
            f"{verdicts['test_ll']}, relative to 2 published standard errors)"
        )
    if result["settings"]["epochs_multiplier"] < 100:
        text += (
            "; fewer epochs than the paper's 4000, so this checks the pipeline rather "
            "than the published table"
        )
    return text + "."
