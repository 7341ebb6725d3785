"""``droplab sweep``: tune the dropout rates (and width, learning rate) of an MLP.

- Sampler: TPE (Bergstra, Bardenet, Bengio and Kégl, "Algorithms for
  hyper-parameter optimization", NeurIPS 2011), seeded.
- Pruning: the median rule of Google Vizier (Golovin et al., KDD 2017): a trial
  stops once its validation loss after an epoch is worse than the median of the
  earlier trials at that epoch.
- Engine: Optuna (Akiba et al., KDD 2019), ``pip install 'droplab[distributed]'``.

The study lives in a database (SQLite in the output folder by default; any URL
Optuna accepts, e.g. PostgreSQL shared by many machines), so a sweep that is
stopped or whose machine dies loses only the trial in progress. **``--n-trials``
is the total**: running the same command again continues the study until
``n_trials`` trials have finished (completed or pruned); ask for a larger
number to add trials; ``--n-trials 0`` only reports. Every process pointed at
one shared study stops when the total is reached. The search space, per trial:

- ``p_input`` in [0, ``max_input_rate``], ``p`` (hidden layers) in [0, ``max_rate``];
- ``width`` (of each of ``depth`` hidden layers), log-uniform in [16, 256];
- ``lr`` (Adam), log-uniform in [1e-4, 3e-2].

A trial's value is its validation loss after the last epoch (lower is better).
Its train and validation curves are stored in the study (trial user attributes)
and the summary (best configuration, table of trials, curves of the best
trials) is written to ``OUT/sweep.json``. The test split is never used to
choose; its accuracy is recorded for completed trials, to be read for the best.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from droplab._validation import check_int, check_probability, check_seed, fail
from droplab.execution import one_thread, write_json
from droplab.lab.data import load
from droplab.lab.training import build_mlp, fit
from droplab.rng import derive_seed

__all__ = [
    "SweepConfig",
    "figure",
    "finished_trials",
    "open_study",
    "run_sweep",
    "summarize",
    "train_trial",
    "write_summary",
]

DEFAULT_OUT = "droplab-sweep"
DEFAULT_STUDY = "droplab-sweep"


@dataclass(frozen=True)
class SweepConfig:
    """What every trial of a study shares; stored with the study, checked on resume."""

    data: str = (
        "digits"  # a droplab.lab.data.load name: digits, mnist1d, toy, mnist:DIR
    )
    depth: int = 2  # hidden layers
    epochs: int = 20  # epochs per trial (pruning may stop a trial earlier)
    batch_size: int = 64
    max_rate: float = 0.8  # upper bound of the hidden layers' dropout rate
    max_input_rate: float = 0.5  # upper bound of the input dropout rate
    startup_trials: int = 5  # TPE samples at random, and no pruning, before this
    warmup_epochs: int = 3  # no pruning before this many epochs of a trial
    seed: int = 0  # data split, TPE and every trial's initialisation and masks

    def __post_init__(self) -> None:
        owner = "SweepConfig"
        check_int(self.depth, "depth", low=1, owner=owner)
        check_int(self.epochs, "epochs", low=1, owner=owner)
        check_int(self.batch_size, "batch_size", low=1, owner=owner)
        check_int(self.startup_trials, "startup_trials", low=0, owner=owner)
        check_int(self.warmup_epochs, "warmup_epochs", low=0, owner=owner)
        check_seed(self.seed, owner=owner)
        for name in ("max_rate", "max_input_rate"):
            if check_probability(getattr(self, name), name, owner=owner) >= 1.0:
                raise fail(name, getattr(self, name), "a rate in [0, 1)", owner=owner)


def load_optuna() -> Any:
    try:
        import optuna
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError(
            "droplab sweep needs Optuna: pip install 'droplab[distributed]'"
        ) from None
    return optuna


def finished_trials(study: Any) -> list[Any]:
    """The trials that count towards ``n_trials``: completed or pruned."""
    state = load_optuna().trial.TrialState
    return list(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)))


def open_study(config: SweepConfig, *, storage: str | None, study_name: str) -> Any:
    """Create the study, or load it and check it was made with the same config.

    The TPE sampler is seeded with ``(config.seed, trials already in the study)``,
    so a resumed study does not repeat the proposals of its first start.
    """
    optuna = load_optuna()

    store = (
        optuna.storages.InMemoryStorage()
        if storage is None
        else optuna.storages.RDBStorage(storage)
    )
    study = optuna.create_study(
        storage=store, study_name=study_name, direction="minimize", load_if_exists=True
    )
    wanted = dataclasses.asdict(config)
    saved = study.user_attrs.get("droplab_config")
    if saved is None:
        study.set_user_attr("droplab_config", wanted)
    elif saved != wanted:
        differ = sorted(k for k in wanted if saved.get(k) != wanted[k])
        raise ValueError(
            f"study {study_name!r} was started with other settings "
            f"({', '.join(f'{k}={saved.get(k)!r}' for k in differ)}); resume it with "
            "those, or choose another --study-name"
        )
    # Samplers and pruners are not stored in the database: load with ours.
    return optuna.load_study(
        study_name=study_name,
        storage=store,
        sampler=optuna.samplers.TPESampler(
            seed=derive_seed(config.seed, len(study.trials)) % 2**32,  # its limit
            n_startup_trials=config.startup_trials,
        ),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=config.startup_trials,
            n_warmup_steps=config.warmup_epochs,
        ),
    )


def train_trial(
    params: dict[str, Any],
    data: Any,
    *,
    depth: int,
    epochs: int,
    batch_size: int,
    seed: int,
    report: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Train one configuration (the lab's loop, :func:`droplab.lab.training.fit`);
    the curves per epoch and the test metrics.

    Args:
        params: ``p_input``, ``p``, ``width`` and ``lr``.
        data: a :class:`droplab.lab.data.Dataset` (classification or regression).
        depth, epochs, batch_size: as in :class:`SweepConfig`.
        seed: initialisation, dropout streams and shuffling.
        report: called after each epoch with the epoch and the curves so far
            (it may raise to stop the trial: pruning).

    Returns:
        ``(curves, test)``: ``train_loss`` and ``val_loss`` (the training loss
        measured like the validation one, in evaluation mode, so they compare)
        and for classifiers ``val_accuracy``, one entry per epoch; ``test_loss``
        and for classifiers ``test_accuracy``.
    """

    classes = data.n_classes
    model = build_mlp(
        data.n_features, [params["width"]] * depth,
        classes or int(data.y_train.shape[1]),
        p=params["p"], p_input=params["p_input"], seed=seed,
    )  # fmt: skip
    loss_fn: nn.Module = nn.CrossEntropyLoss() if classes else nn.MSELoss()

    def split(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        target = torch.as_tensor(
            np.asarray(y, dtype=np.int64 if classes else np.float32)
        )
        return torch.as_tensor(x), target

    def scores(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(x)
            right = (
                (out.argmax(1) == y).double().mean() if classes else out.new_zeros(())
            )
            return float(loss_fn(out, y)), float(right)

    (x, y), val, test = (split(data.x_train, data.y_train),
                         split(data.x_val, data.y_val), split(data.x_test, data.y_test))  # fmt: skip
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    if classes:
        curves["val_accuracy"] = []

    def record(epoch: int, train_loss: float, seconds: float) -> None:
        curves["train_loss"].append(scores(x, y)[0])
        val_loss, val_accuracy = scores(*val)
        curves["val_loss"].append(val_loss)
        if classes:
            curves["val_accuracy"].append(val_accuracy)
        if report is not None:
            report(epoch, curves)

    fit(model, x, y, loss_fn, epochs=epochs, seed=seed, batch_size=batch_size,
        lr=params["lr"], on_epoch=record)  # fmt: skip
    test_loss, test_accuracy = scores(*test)
    return curves, (
        {"test_loss": test_loss, "test_accuracy": test_accuracy}
        if classes
        else {"test_loss": test_loss}
    )


def _objective(config: SweepConfig, data: Any) -> Callable[[Any], float]:
    from droplab.execution.progress import current as current_progress

    optuna = load_optuna()

    def objective(trial: Any) -> float:
        params = {
            "p_input": trial.suggest_float("p_input", 0.0, config.max_input_rate),
            "p": trial.suggest_float("p", 0.0, config.max_rate),
            "width": trial.suggest_int("width", 16, 256, log=True),
            "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        }

        shown = current_progress()  # droplab.execution.progress: the trial's epochs

        def report(epoch: int, curves: dict[str, list[float]]) -> None:
            if shown is not None:
                shown.step(
                    epoch + 1, config.epochs, "epoch", label=f"trial {trial.number}"
                )
            if not all(math.isfinite(c[-1]) for c in curves.values()):
                trial.set_user_attr("diverged_at_epoch", epoch)
                raise optuna.TrialPruned()  # a diverged trial is pruned
            trial.set_user_attr("curves", curves)
            trial.report(curves["val_loss"][-1], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        with one_thread():  # the same numbers on any machine and thread count
            curves, test = train_trial(
                params, data, depth=config.depth, epochs=config.epochs,
                batch_size=config.batch_size,
                seed=derive_seed(config.seed, trial.number), report=report,
            )  # fmt: skip
        for key, value in test.items():
            trial.set_user_attr(key, value)
        return curves["val_loss"][-1]

    return objective


def run_sweep(
    config: SweepConfig,
    *,
    n_trials: int,
    storage: str | None,
    study_name: str = DEFAULT_STUDY,
    callbacks: Sequence[Callable[[Any, Any], None]] = (),
) -> Any:
    """Run (or continue) the study until ``n_trials`` trials have finished.

    Args:
        config: what every trial shares (checked against a resumed study).
        n_trials: the total of completed plus pruned trials to reach.
        storage: an Optuna storage URL (``sqlite:///PATH``, ``postgresql://...``),
            or None for a study in memory.
        study_name: the study's name in the storage.
        callbacks: Optuna callbacks ``f(study, frozen_trial)``, run after each trial.

    Returns:
        The ``optuna.Study``.
    """

    n_trials = check_int(n_trials, "n_trials", low=0, owner="run_sweep")
    optuna = load_optuna()
    study = open_study(config, storage=storage, study_name=study_name)
    remaining = n_trials - len(finished_trials(study))
    if remaining > 0:
        state = optuna.trial.TrialState
        stop = optuna.study.MaxTrialsCallback(
            n_trials, states=(state.COMPLETE, state.PRUNED)
        )
        study.optimize(
            _objective(config, load(config.data, seed=config.seed)),
            n_trials=remaining, callbacks=[stop, *callbacks], catch=(),
        )  # fmt: skip
    return study


def summarize(study: Any, *, top: int = 3) -> dict[str, Any]:
    """The best configuration, a row per trial and the curves of the ``top`` best.

    Returns:
        A JSON-able dict: ``config``, ``n_finished``, ``trials`` (number, state,
        params, value, epochs run, last validation loss), ``best`` (number,
        value, params, curves, test metrics) or None, and ``best_curves``.
    """
    state = load_optuna().trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        curves = t.user_attrs.get("curves", {})
        val = curves.get("val_loss", [])
        rows.append({
            "number": t.number, "state": t.state.name, "params": dict(t.params),
            "value": t.value, "epochs": len(val), "val_loss": val[-1] if val else None,
        })  # fmt: skip
    done = [t for t in study.get_trials(deepcopy=False, states=(state.COMPLETE,))]
    ranked = sorted(done, key=lambda t: (t.value, t.number))

    def entry(t: Any) -> dict[str, Any]:
        return {
            "number": t.number, "value": t.value, "params": dict(t.params),
            "curves": t.user_attrs.get("curves", {}),
            "test": {k: v for k, v in t.user_attrs.items() if k.startswith("test_")},
        }  # fmt: skip

    return {
        "study": study.study_name,
        "config": study.user_attrs.get("droplab_config"),
        "n_finished": len(finished_trials(study)),
        "best": entry(ranked[0]) if ranked else None,
        "best_curves": [entry(t) for t in ranked[:top]],
        "trials": rows,
    }


def write_summary(summary: dict[str, Any], path: str | Path) -> Path:
    """Write the summary as JSON, atomically (a reader never sees half a file)."""
    return write_json(path, summary, indent=1, allow_nan=False)


def figure(summary: dict[str, Any]) -> Any:
    """The train (dashed) and validation (solid) loss curves of the best trials.

    The same shape as a lab experiment's ``figure(result)``, so a report can
    show a saved ``sweep.json``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    axes = fig.add_subplot()
    for i, entry in enumerate(summary["best_curves"]):
        color, curves, params = f"C{i % 10}", entry["curves"], entry["params"]
        epochs = range(1, len(curves["val_loss"]) + 1)
        label = (
            f"trial {entry['number']}: p_input {params['p_input']:.2f}, "
            f"p {params['p']:.2f}, width {params['width']}"
        )
        axes.plot(epochs, curves["val_loss"], color=color, label=label)
        axes.plot(epochs, curves["train_loss"], color=color, linestyle="--")
    axes.set(xlabel="epoch", ylabel="loss (dashed: train, solid: validation)")
    axes.set_title(f"best trials of study {summary['study']!r}")
    if summary["best_curves"]:
        axes.legend(fontsize="small")
    return fig


def format_summary(summary: dict[str, Any]) -> str:
    """The table of trials and the best configuration, as text."""

    def num(value: Any, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}g}"

    lines = [f"{'trial':>5} {'state':9} {'p_input':>8} {'p':>6} {'width':>5} "
             f"{'lr':>8} {'epochs':>6} {'val loss':>9}"]  # fmt: skip
    for row in summary["trials"]:
        params = row["params"]
        lines.append(
            f"{row['number']:>5} {row['state']:9} {num(params.get('p_input'), 3):>8} "
            f"{num(params.get('p'), 3):>6} {params.get('width', '-'):>5} "
            f"{num(params.get('lr'), 3):>8} {row['epochs']:>6} {num(row['val_loss']):>9}"
        )
    best = summary["best"]
    if best is None:
        lines.append("no completed trial yet")
    else:
        test = ", ".join(f"{k} {v:.4g}" for k, v in best["test"].items())
        lines.append(
            f"best: trial {best['number']}, validation loss {best['value']:.4g}, "
            + ", ".join(f"{k}={num(v)}" for k, v in best["params"].items())
            + (f" ({test})" if test else "")
        )
    return "\n".join(lines)
