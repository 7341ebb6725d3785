"""Does MC dropout reproduce the UCI regression table of Gal & Ghahramani (2016)?

The paper's protocol (:mod:`droplab.uncertainty.uci`, the code ``droplab uci``
runs) on one data set of the UCI folder, on some of its published splits, next
to the published per-split numbers and to the published mean over all splits
(the paper's table): RMSE of the MC mean, RMSE of the deterministic pass
(weight scaling) and test log-likelihood. The default preset is the published
protocol on split 0 of yacht only (about 20 s); one split's scores carry a
bootstrap interval over its test rows, not the spread over splits that the
published ± describes. The quick preset trains a tenth of the epochs on two
splits and says that it is a pipeline check. The data are ``Config.data_dir``, else
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

from droplab.execution import one_thread, parallel_map
from droplab.uncertainty.uci.folder import UCIFormatError, load_uci_folder
from droplab.uncertainty.uci.protocol import (
    ProtocolSettings,
    chunk_splits,
    default_data_dir,
    run_splits,
)
from droplab.uncertainty.uci.summary import (
    METRICS,
    published_means,
    read_published,
    summarize,
)

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
    "differences to the published numbers with a paired t-interval. The default "
    "preset is the published protocol (4000 epochs, T = 10000) on yacht's split 0 "
    "only, one of its 20 splits, with 95 % bootstrap intervals over that split's "
    "test rows; the paper's table averages all 20 splits. The quick preset trains "
    "a tenth of the epochs on 2 splits with T = 500, a check of the pipeline, not "
    "of the table; the full preset is the published protocol on all 20 splits."
)


@dataclass(frozen=True)
class Config:
    """Settings of the UCI experiment (``Config()`` is the default preset)."""

    dataset: str = "yacht"  # folder name inside the UCI data folder
    splits: tuple[int, ...] = (0,)  # published splits to run; the paper: all 20
    epochs_multiplier: float = 100.0  # epochs = n_epochs.txt (40) x this; paper: 100
    samples: int = 10_000  # T, MC passes for test and validation scores; paper: 10000
    data_dir: str = ""  # UCI data folder; "" = $DROPLAB_UCI_DATA or the packaged one
    seed: int = 0  # root seed of the protocol

    @classmethod
    def quick(cls) -> Config:
        """Two splits of yacht, 400 epochs, T = 500: a check of the pipeline."""
        return cls(splits=(0, 1), epochs_multiplier=10.0, samples=500)

    @classmethod
    def full(cls) -> Config:
        """The published protocol on all 20 splits (about a minute for yacht here)."""
        return cls(splits=tuple(range(20)), epochs_multiplier=100.0, samples=10_000)


def _data_dir(config: Config) -> Path | None:
    return Path(config.data_dir) if config.data_dir else default_data_dir()


def _some_splits(task: tuple[str, list[int], ProtocolSettings]) -> list[dict[str, Any]]:
    """Several splits trained together (droplab.uncertainty.uci.run_splits)."""
    path, splits, settings = task
    with one_thread():  # as droplab uci: tiny networks, one thread is fastest
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
    summary["n_splits"] = folder.n_splits
    summary["per_split"] = [
        {key: r[key] for key in ("split", "dropout_rate", "tau", "test_rows", "rmse_mc",
                                  "rmse_mc_rows_ci95", "rmse_weight_scaling", "test_ll",
                                  "test_ll_rows_ci95", "seconds")}
        for r in results
    ]  # fmt: skip
    if published:
        summary["published_all"] = published_means(published)
        for row in summary["per_split"]:
            row["published"] = published.get(row["split"])
    return _json_safe(summary)


def is_published_protocol(result: dict[str, Any]) -> bool:
    """Whether ``result`` ran the paper's settings (4000 epochs, T = 10000)."""
    settings = result["settings"]
    return bool(
        settings["epochs_multiplier"] >= 100
        and settings["samples"] >= 10_000
        and settings["validation_samples"] >= 10_000
    )


def _split_names(result: dict[str, Any]) -> str:
    splits = result["splits"]
    return f"split {splits[0]}" if len(splits) == 1 else f"{len(splits)} splits"


def figure(result: dict[str, Any]) -> Figure:
    """MC RMSE against weight-scaling RMSE per split (ours and published), and the
    published mean over all splits."""
    fig = Figure(figsize=(4.2, 4.0))  # 462 pixels: a phone shows it at 80 % or more
    ax = fig.subplots()
    if "skipped" in result:
        ax.text(0.5, 0.5, "not run:\n" + result["skipped"], ha="center", va="center",
                wrap=True, fontsize=9, transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return fig
    rows = result["per_split"]
    ours_x = [r["rmse_weight_scaling"] for r in rows]
    ours_y = [r["rmse_mc"] for r in rows]
    if len(rows) == 1 and rows[0].get("rmse_mc_rows_ci95"):
        low, high = rows[0]["rmse_mc_rows_ci95"]
        ax.errorbar(ours_x, ours_y, yerr=[[ours_y[0] - low], [high - ours_y[0]]],
                    fmt="o", color="C0", capsize=3,
                    label="droplab (95 % bootstrap over test rows)")  # fmt: skip
    else:
        ax.scatter(ours_x, ours_y, label="droplab", color="C0")
    for r in rows:
        ax.annotate(str(r["split"]), (r["rmse_weight_scaling"], r["rmse_mc"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
    pub = [r["published"] for r in rows if r.get("published")]
    if pub:
        ax.scatter([p["rmse_weight_scaling"] for p in pub], [p["rmse_mc"] for p in pub],
                   label="published (same splits)", color="C1", marker="s")  # fmt: skip
    extra: list[float] = []
    everything = result.get("published_all")
    if everything is not None and len(everything["splits"]) > len(rows):
        mc, ws = everything["rmse_mc"], everything["rmse_weight_scaling"]
        ax.errorbar([ws["mean"]], [mc["mean"]], xerr=[ws["se"]], yerr=[mc["se"]],
                    fmt="D", color="C2", capsize=3,
                    label=f"published, mean ± SE of all {len(everything['splits'])} "
                    "splits")  # fmt: skip
        extra = [mc["mean"], ws["mean"]]
    values = (
        ours_x
        + ours_y
        + extra
        + [p[k] for p in pub for k in ("rmse_mc", "rmse_weight_scaling")]
    )
    low, high = min(values) * 0.8, max(values) * 1.2
    ax.plot([low, high], [low, high], color="0.6", lw=1, ls="--", label="equal RMSE")
    ax.set_xlabel("test RMSE, weight scaling (one pass)", fontsize=9)
    ax.set_ylabel("test RMSE, MC dropout (mean of T passes)", fontsize=9)
    ax.tick_params(labelsize=8)
    settings = result["settings"]
    ax.set_title(
        f"{result['dataset']}, {_split_names(result)}: {result['epochs']} epochs, "
        f"T = {settings['samples']}",
        fontsize=9,
    )
    ax.legend(fontsize=7.5)
    fig.tight_layout()
    return fig


def _interval(entry: dict[str, Any]) -> tuple[float | None, float | None]:
    n = len(entry["values"])
    if entry["se"] is None or n < 2:
        return None, None
    from scipy import stats

    half = float(stats.t.ppf(0.975, n - 1)) * entry["se"]
    return entry["mean"] - half, entry["mean"] + half


_ROW_INTERVAL = {"rmse_mc": "rmse_mc_rows_ci95", "test_ll": "test_ll_rows_ci95"}


def numbers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per metric: droplab's mean over the splits run (95 % t-interval over splits;
    for one split, the 95 % bootstrap interval over its test rows), the
    published numbers of the same splits, the paired difference, and the
    published mean over all splits (the paper's table) with its t-interval."""
    if "skipped" in result:
        return []
    rows = []
    one = result["per_split"][0] if len(result["per_split"]) == 1 else None
    everything = result.get("published_all")
    for key, label, _ in METRICS:
        ours = result["ours"][key]
        low, high = _interval(ours)
        quantity = f"{label} (droplab)"
        if one is not None:
            quantity = f"{label} (droplab), split {one['split']}"
            if one.get(_ROW_INTERVAL.get(key, "")):
                low, high = one[_ROW_INTERVAL[key]]
                quantity += (
                    f"; interval: bootstrap over its {one['test_rows']} test rows"
                )
        rows.append({"quantity": quantity, "value": ours["mean"], "low": low,
                     "high": high, "unit": ""})  # fmt: skip
        if "published" in result:
            low, high = _interval(result["published"][key])
            rows.append({"quantity": f"{label} (published, same {_split_names(result)})",
                         "value": result["published"][key]["mean"], "low": low,
                         "high": high, "unit": ""})  # fmt: skip
        if "paired" in result:
            paired = result["paired"][key]
            low, high = paired.get("ci95") or (None, None)
            what = "paired" if one is None else f"split {one['split']}"
            rows.append({"quantity": f"{label}: droplab - published, {what}",
                         "value": paired["mean_difference"], "low": low, "high": high,
                         "unit": ""})  # fmt: skip
        if everything is not None:
            low, high = _interval(everything[key])
            rows.append({"quantity": f"{label} (published, mean of all "
                                     f"{len(everything['splits'])} splits)",
                         "value": everything[key]["mean"], "low": low, "high": high,
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


def _one_split_answer(result: dict[str, Any]) -> str:
    """The published protocol on one split: its scores, its split's published
    scores, and what the paper's table averages over."""
    row = result["per_split"][0]
    total = result.get("n_splits", "?")
    settings = result["settings"]
    text = (
        f"The published protocol (Gal & Ghahramani 2016: {result['epochs']} epochs, "
        f"dropout rate and tau chosen on validation rows, T = {settings['samples']}) "
        f"on split {row['split']} of {result['dataset']} only, one of its {total} "
        f"train/test splits (Hernández-Lobato & Adams 2015): MC dropout test RMSE "
        f"{row['rmse_mc']:.3f}"
    )
    rmse_ci, ll_ci = row.get("rmse_mc_rows_ci95"), row.get("test_ll_rows_ci95")
    if rmse_ci:
        text += f" [{rmse_ci[0]:.3f}, {rmse_ci[1]:.3f}]"
    text += f" and test log-likelihood {row['test_ll']:.3f}"
    if ll_ci:
        text += f" [{ll_ci[0]:.3f}, {ll_ci[1]:.3f}]"
    if rmse_ci or ll_ci:
        text += f" (95 % bootstrap over its {row['test_rows']} test rows)"
    text += f"; weight scaling's RMSE {row['rmse_weight_scaling']:.3f}"
    published = row.get("published")
    if published:
        text += (
            f". Published for this split: RMSE {published['rmse_mc']:.3f} and "
            f"log-likelihood {published['test_ll']:.3f}"
        )
        if rmse_ci:
            inside = rmse_ci[0] <= published["rmse_mc"] <= rmse_ci[1]
            text += (
                f"; the published RMSE is {'inside' if inside else 'outside'} "
                "droplab's interval"
            )
    everything = result.get("published_all")
    if everything is not None:
        n = len(everything["splits"])
        mc, ll = everything["rmse_mc"], everything["test_ll"]
        text += (
            f". The paper's table averages all {n} splits: RMSE {mc['mean']:.2f} ± "
            f"{mc['se']:.2f} and log-likelihood {ll['mean']:.2f} ± {ll['se']:.2f} "
            "(mean ± standard error over splits); one split is not that figure, and "
            f"the full preset runs all {n}"
        )
    return text + "."


def answer(result: dict[str, Any]) -> str:
    """The answer, from the numbers."""
    if "skipped" in result:
        return f"Not run: {result['skipped']}."
    full = is_published_protocol(result)
    if full and len(result["splits"]) == 1:
        return _one_split_answer(result)
    ours = result["ours"]
    text = ("" if full else "A pipeline check, not the published protocol: ") + (
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
    if not full:
        text += (
            "; fewer epochs or passes than the paper's (4000 epochs, T = 10000), so "
            "this checks the pipeline rather than the published table"
        )
    return text + "."
