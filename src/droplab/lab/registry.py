"""Which experiments exist, and what each experiment module must provide.

An experiment is a module under :mod:`droplab.lab.experiments` with:

- ``NAME`` (str, also the results file name), ``QUESTION`` (the question in plain
  words), ``METHOD`` (how the numbers are produced, a few sentences);
- ``Config``: a frozen dataclass, a comment on each field; ``Config()`` is the
  ``default`` preset (between quick and full), ``Config.quick()`` and
  ``Config.full()`` the others. A field named ``data`` (a :func:`droplab.lab.data.load`
  name) is replaced by ``droplab report --data``; a field ``seed`` is the root seed;
- ``run(config, *, jobs=1) -> dict``: JSON-able numbers, the same for any ``jobs``;
- ``figure(result) -> matplotlib.figure.Figure``;
- ``numbers(result) -> list[dict]``: table rows ``{"quantity", "value", "low",
  "high", "unit"}`` (``low``/``high`` the 95 % interval, or None);
- ``answer(result) -> str``: a sentence computed from the numbers and intervals;
- optionally ``tables(result) -> list[dict]`` (``{"title", "columns", "rows"}``),
  shown as HTML tables.

To add an experiment, add its module name to :data:`EXPERIMENTS` (report order).

A saved result is reused only by the code that made it
(:func:`code_fingerprint`) and only if that experiment's own ``numbers``,
``answer`` and ``tables`` read it without error, with its ``check_result(result)``
first when it has one (:func:`result_problem`).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
    "catalog",
    "code_fingerprint",
    "config_for",
    "experiment_names",
    "get_experiment",
    "result_problem",
    "row_adder",
]

# Report order: a new experiment goes where it reads best in the report.
EXPERIMENTS: tuple[str, ...] = (
    "droplab.lab.experiments.masks",
    "droplab.lab.experiments.expectation",
    "droplab.lab.experiments.averaging",
    "droplab.lab.experiments.gradients",
    "droplab.lab.experiments.exact_count",
    "droplab.lab.experiments.smaller_network",
    "droplab.lab.experiments.convergence",
    "droplab.lab.experiments.rate",
    "droplab.lab.experiments.data_size",
    "droplab.lab.experiments.when_it_helps",
    "droplab.lab.experiments.features",
    "droplab.lab.experiments.uncertainty_toy",
    "droplab.lab.experiments.variants",
    "droplab.lab.experiments.uci",
)

PRESETS = ("quick", "default", "full")

REQUIRED = (
    "NAME",
    "QUESTION",
    "METHOD",
    "Config",
    "run",
    "figure",
    "numbers",
    "answer",
)


def _modules() -> dict[str, ModuleType]:
    found = {}
    for module_name in EXPERIMENTS:
        module = importlib.import_module(module_name)
        missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
        if missing:
            raise TypeError(
                f"experiment module {module_name} lacks {', '.join(missing)}"
            )
        found[module.NAME] = module
    return found


def _constants(module_name: str) -> dict[str, str] | None:
    """``NAME`` and ``QUESTION`` of a module read from its source, without
    importing it (an experiment's imports cost seconds); None if they are not
    plain string literals there."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    found: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("NAME", "QUESTION")
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            if isinstance(value, str):
                found[node.targets[0].id] = value
    return found if len(found) == 2 else None


def catalog() -> list[tuple[str, str]]:
    """``(NAME, QUESTION)`` of every experiment, in report order, fast: read from
    the modules' source where they are literals (what ``droplab list`` needs).

    >>> first, _ = catalog()[0]
    >>> first
    'masks'
    """
    rows = []
    for module_name in EXPERIMENTS:
        constants = _constants(module_name)
        if constants is None:
            module = importlib.import_module(module_name)
            constants = {"NAME": module.NAME, "QUESTION": module.QUESTION}
        rows.append((constants["NAME"], constants["QUESTION"]))
    return rows


def experiment_names() -> list[str]:
    """Names of the registered experiments, in report order.

    >>> experiment_names()[0]
    'masks'
    """
    return [name for name, _ in catalog()]


def get_experiment(name: str) -> ModuleType:
    """The experiment module called ``name`` (see the module doc for its contents)."""
    from droplab._validation import fail

    modules = _modules()
    if name not in modules:
        raise fail("name", name, "one of " + ", ".join(modules), owner="get_experiment")
    return modules[name]


def code_fingerprint(experiment: ModuleType | str) -> str:
    """A fingerprint of the code that computes ``experiment`` (a module, its
    module name in :data:`EXPERIMENTS`, or its NAME).

    SHA-256 (first 16 hex digits) of droplab's version and of the experiment
    module's source file, read without importing it: any edit of the
    experiment, and any droplab upgrade, changes it. (Edits of shared helpers
    without a version change do not: pass ``--force`` after those.)

    >>> code_fingerprint("masks") == code_fingerprint(get_experiment("masks"))
    True
    """
    from droplab import __version__

    if isinstance(experiment, ModuleType):
        module_name = experiment.__name__
    elif experiment in EXPERIMENTS:
        module_name = experiment
    else:
        names = dict(zip(experiment_names(), EXPERIMENTS, strict=True))
        if experiment not in names:
            from droplab._validation import fail

            raise fail(
                "experiment",
                experiment,
                "one of " + ", ".join(names),
                owner="code_fingerprint",
            )
        module_name = names[experiment]
    spec = importlib.util.find_spec(module_name)
    source = b""
    if spec is not None and spec.origin is not None and spec.origin.endswith(".py"):
        with open(spec.origin, "rb") as file:
            source = file.read()
    digest = hashlib.sha256(f"droplab {__version__}\0".encode() + source)
    return digest.hexdigest()[:16]


def result_problem(module: ModuleType, result: Any) -> str:
    """Why this code cannot use a saved ``result`` of ``module`` ("" if it can).

    The experiment's own schema check: its ``check_result`` if it has one,
    then its ``numbers``, ``answer`` and ``tables``, which read the keys the
    page shows; a result missing one of them, or of the wrong shape, is named.
    """
    if not isinstance(result, dict):
        return f"the result is a {type(result).__name__}, not an object"
    try:
        check = getattr(module, "check_result", None)
        if check is not None:
            check(result)
        module.numbers(result)
        module.answer(result)
        getattr(module, "tables", lambda _: [])(result)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        return f"{type(error).__name__}: {error}"
    return ""


def config_for(
    module: ModuleType, preset: str = "default", *, data: str | None = None
) -> Any:
    """The experiment's config for ``preset``, with its ``data`` field replaced if given.

    Experiments without a ``data`` field ignore ``data`` (they use no data set).
    """
    from droplab._validation import check_choice

    preset = check_choice(preset, "preset", PRESETS, owner="config_for")
    config = {
        "quick": module.Config.quick,
        "default": module.Config,
        "full": module.Config.full,
    }[preset]()
    if data is not None and any(f.name == "data" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, data=data)
    return config


def row_adder(rows: list[dict[str, Any]]) -> Callable[..., None]:
    """A function that appends one ``numbers(result)`` row to ``rows``.

    A saved ``[value, low, high]`` triple is passed as ``*triple``; ``unit`` is
    keyword-only, so a sequence of any other length fails instead of filling it.

    Examples:
        >>> rows: list[dict[str, Any]] = []
        >>> add = row_adder(rows)
        >>> add("test error", 0.02, 0.01, 0.03)
        >>> add("seconds per epoch", *[1.5, 1.25, 1.75], unit="s")
        >>> rows[0]["quantity"], rows[0]["high"], rows[1]["unit"]
        ('test error', 0.03, 's')
    """

    def add(
        quantity: str, value: Any, low: Any = None, high: Any = None, *, unit: str = ""
    ) -> None:
        rows.append(
            {
                "quantity": quantity,
                "value": value,
                "low": low,
                "high": high,
                "unit": unit,
            }
        )

    return add
