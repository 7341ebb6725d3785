"""One self-contained HTML page from saved results: ``render_report(records) -> str``.

The page opens with its findings: a summary table, one row per experiment
(its answer sentence, its headline number with the 95 % interval, a link to
its section); each section then shows its figure and answer before the
numbers, and folds long tables into ``<details>``.

Pure: the page depends only on the records (and the experiment modules'
``figure``/``numbers``/``answer``/``tables`` functions, which read only the
record's result), so a report can be re-rendered without retraining. Figures
are embedded as base64 PNG; the page loads nothing from anywhere else and its
CSS adapts to a phone's width. :func:`write_report` reads the saved results
and writes the page (atomically) into the report folder.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from droplab.execution import write_text
from droplab.lab.registry import get_experiment, result_problem
from droplab.lab.report.summary import (
    EXACT_HEADLINES,
    HEADLINE_POINTS,
    MAX_WORDS,
    SEED_QUESTIONS,
    forest_figure,
    forest_rows,
    headline_row,
    in_points,
    short_answer,
)
from droplab.lab.results import ResultError, load_result, result_path

__all__ = [
    "figure_png",
    "format_number",
    "render_report",
    "shipped_results",
    "write_report",
]


def format_number(value: Any) -> str:
    """Four significant digits (Python's ``.4g``: scientific for tiny or huge numbers).

    >>> format_number(0.0625), format_number(7.888609052210118e-31), format_number(None)
    ('0.0625', '7.889e-31', '')
    >>> format_number(12345.678), format_number(3), format_number(float("nan"))
    ('1.235e+04', '3', 'nan')
    """
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return str(number)
    return f"{number:.4g}"


# Figures at most this wide (pixels) shrink to a phone's width (370 px: 8-point
# text stays at 9 px or more); wider ones are shown at their own size there.
PHONE_FIT_PX = 600


def png_width(png_base64: str) -> int:
    """The width in pixels of a base64 PNG (from its IHDR header)."""
    header = base64.b64decode(png_base64[:32])
    return int.from_bytes(header[16:20], "big")


def figure_png(figure: Any) -> str:
    """A matplotlib Figure as a base64 PNG string (Agg, 110 dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# Quantities that cannot be negative (or leave [0, 1]); a t interval from a few
# seeds can reach past the bound, and the page then shows it cut there, marked.
_NONNEGATIVE = ("error", "accuracy", "seconds", "cost", "rmse", "standard deviation",
                "coverage", "fraction", "epochs", "units dropped")  # fmt: skip
_DIFFERENCE = (" - ", "minus", "ratio", "difference", "log-likelihood", "gap")


def _bounds(quantity: str, unit: str) -> tuple[float, float | None] | None:
    """The range a quantity lives in, from its name (None: unbounded).

    >>> _bounds("none: test error", ""), _bounds("dropout - none (paired)", "")
    ((0.0, 1.0), None)
    >>> _bounds("dropout: seconds per epoch", "s")
    (0.0, None)
    """
    text = quantity.lower()
    if any(word in text for word in _DIFFERENCE):
        return None
    if not any(word in text for word in _NONNEGATIVE):
        return None
    proportion = any(w in text for w in ("error", "accuracy", "coverage", "fraction"))
    return (
        0.0,
        1.0 if proportion and unit in ("", "fraction") and "rmse" not in text else None,
    )


def _interval(row: Mapping[str, Any]) -> str:
    """``[low, high]``, cut (and marked ``*``) where it crosses the quantity's bound.

    A paired difference's point "interval" (every seed pair differed alike) is
    said to be no interval:

    >>> _interval({"quantity": "epochs to target", "value": 5.5, "low": -0.85, "high": 11.9})
    '[0*, 11.9]'
    >>> _interval({"quantity": "dropout - none (paired)", "low": -0.01, "high": -0.01})
    '(no spread: no interval)'
    """
    low, high = row.get("low"), row.get("high")
    if low is None or high is None:
        return ""
    quantity = str(row.get("quantity", ""))
    if low == high and any(w in quantity for w in ("paired", " - ", "minus")):
        return "(no spread: no interval)"
    bounds = _bounds(quantity, str(row.get("unit", "")))
    mark_low = mark_high = ""
    if bounds is not None:
        if low < bounds[0]:
            low, mark_low = bounds[0], "*"
        if bounds[1] is not None and high > bounds[1]:
            high, mark_high = bounds[1], "*"
    return f"[{format_number(low)}{mark_low}, {format_number(high)}{mark_high}]"


FOLD_ROWS = 8  # number tables longer than this are folded (<details>)


def _headline(
    module: Any,
    result: Any,
    rows: Sequence[Mapping[str, str]],
    raw_rows: Sequence[Mapping[str, Any]] = (),
) -> Mapping[str, str] | None:
    """The number the summary shows: ``module.headline(result)`` (a row of
    ``numbers``, or its index) where the module defines it, else the first row
    with an interval, else the first row."""
    picked = headline_row(module.NAME, [dict(row) for row in raw_rows])
    if picked is not None and module.NAME in HEADLINE_POINTS:
        picked = in_points(picked)
    chosen: Any
    if picked is not None:
        chosen = lambda _result: picked  # noqa: E731
    else:
        chosen = getattr(module, "headline", None)
    if chosen is not None:
        pick = chosen(result)
        if isinstance(pick, int):
            return rows[pick] if 0 <= pick < len(rows) else None
        if pick is None:
            return None
        return {
            "quantity": pick["quantity"],
            "value": format_number(pick.get("value")),
            "interval": _interval(pick),
            "unit": pick.get("unit", ""),
        }
    with_interval = [row for row in rows if row["interval"]]
    chosen_rows = with_interval or list(rows)
    return chosen_rows[0] if chosen_rows else None


def _section(
    record: Mapping[str, Any],
    shipped: Mapping[str, Any] | None = None,
    note: str = "",
) -> dict[str, Any]:
    module = get_experiment(record["name"])
    result = record["result"]
    raw_rows = module.numbers(result)
    rows = [
        {
            "quantity": row["quantity"],
            "value": format_number(row.get("value")),
            "interval": _interval(row),
            "unit": row.get("unit", ""),
        }
        for row in raw_rows
    ]
    tables = []
    for table in getattr(module, "tables", lambda _: [])(result):
        tables.append(
            {
                "title": table["title"],
                "columns": table["columns"],
                "rows": [
                    [format_number(cell) for cell in row] for row in table["rows"]
                ],
            }
        )
    figure = figure_png(module.figure(result))
    answer = module.answer(result)
    short = short_answer(record["name"], result, raw_rows) or _first_sentence(answer)
    decided = None
    if shipped is not None and shipped.get("config_hash") != record.get("config_hash"):
        try:
            decided_answer = module.answer(shipped["result"])
        except (KeyError, IndexError, TypeError, ValueError):
            decided_answer = ""  # saved by an older version: its keys moved
        decided = {
            "answer": decided_answer,
            "short": short_answer(
                record["name"],
                shipped["result"],
                _safe_numbers(module, shipped["result"]),
            ),
            "preset": shipped.get("preset", "full"),
            "seeds": shipped.get("config", {}).get("seeds", ""),
            "started": str(shipped.get("started", ""))[:10],
            "wall_time": _duration(float(shipped.get("wall_time_s", 0.0))),
        }
    return {
        "name": record["name"],
        "note": note,
        "seed_question": SEED_QUESTIONS.get(record["name"], module.QUESTION),
        "short": short,
        "decided": decided,
        "has_intervals": any(row["interval"] for row in rows),
        "headline": _headline(module, result, rows, raw_rows),
        "exact": EXACT_HEADLINES.get(record["name"], ""),
        "question": module.QUESTION,
        "method": module.METHOD,
        "figure": figure,
        "figure_wide": png_width(figure) > PHONE_FIT_PX,
        "numbers": rows,
        "tables": tables,
        "answer": answer,
        "preset": record.get("preset", ""),
        "wall_time": f"{record['wall_time_s']:.1f} s",
        "started": record.get("started", ""),
        "config": {k: v for k, v in record.get("config", {}).items() if v != ""},
    }


def _safe_numbers(module: Any, result: Any) -> list[dict[str, Any]]:
    try:
        rows: list[dict[str, Any]] = module.numbers(result)
    except (KeyError, IndexError, TypeError, ValueError):
        return []
    return rows


def _first_sentence(text: str) -> str:
    """The first sentence of ``text`` if it has at most MAX_WORDS words, else ""."""
    first = text.split(". ")[0].rstrip(".") + "."
    return first if len(first.split()) <= MAX_WORDS else ""


def _duration(seconds: float) -> str:
    """``seconds`` for a reader.

    >>> _duration(42.0), _duration(2235.0)
    ('42 s', '37 min')
    """
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def shipped_results() -> dict[str, dict[str, Any]]:
    """The full-preset results that ship with droplab (package data), by name."""
    found: dict[str, dict[str, Any]] = {}
    folder = resources.files("droplab.lab.report") / "shipped"
    if not folder.is_dir():
        return found
    for entry in folder.iterdir():
        if entry.name.endswith("-full.json"):
            record = json.loads(entry.read_text("utf-8"))
            if isinstance(record, dict) and "name" in record and "result" in record:
                found[str(record["name"])] = record
    return found


def render_report(
    records: Sequence[Mapping[str, Any]],
    *,
    missing: Mapping[str, str] | None = None,
    failed: Mapping[str, str] | None = None,
    shipped: Mapping[str, Mapping[str, Any]] | None = None,
    title: str = "droplab: what dropout does, measured",
    notes: Mapping[str, str] | None = None,
) -> str:
    """Render the report page from saved result records (see :mod:`droplab.lab.results`).

    Args:
        records: saved records, in the order they should appear.
        missing: experiments without a result, mapped to the reason (shown as such).
        failed: experiments that failed, mapped to the error (shown as failed).
        shipped: saved full-preset records by name (see :func:`shipped_results`),
            shown in each section beside the fresh run, labelled as such.
        title: the page title.
        notes: experiments recomputed in this run, mapped to why their saved
            result was not reused ("recomputed: ..."), shown in their section.

    Returns:
        The complete HTML document as a string.
    """
    shipped = shipped or {}
    notes = notes or {}
    sections = [
        _section(
            record,
            shipped.get(str(record["name"])),
            notes.get(str(record["name"]), ""),
        )
        for record in records
    ]
    forest = forest_rows({str(r["name"]): r["result"] for r in records})
    first = records[0] if records else {}
    ends = [
        datetime.fromisoformat(str(r["started"])) + timedelta(seconds=float(r["wall_time_s"]))
        for r in records if r.get("started")
    ]  # fmt: skip
    presets = sorted({str(r.get("preset", "")) for r in records})
    total = sum(float(r["wall_time_s"]) for r in records)
    starts = [str(r["started"]) for r in records if r.get("started")]
    environment = resources.files("droplab.lab.report")
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = template.from_string(
        environment.joinpath("template.html.j2").read_text("utf-8")
    )
    return page.render(
        title=title,
        sections=sections,
        missing=dict(missing or {}),
        failed=dict(failed or {}),
        forest=figure_png(forest_figure(forest)) if forest else "",
        forest_phone=figure_png(forest_figure(forest, narrow=True)) if forest else "",
        max_words=MAX_WORDS,
        versions=first.get("versions", {}),
        machine=first.get("machine", {}),
        presets=", ".join(presets),
        total_time=f"{total:.1f} s",
        fold_rows=FOLD_ROWS,
        computed=(
            f"{min(starts)} to {max(ends).isoformat(timespec='seconds')}"
            if starts
            else ""
        ),
    )


def write_report(
    out: str | Path,
    names: list[str],
    *,
    failed: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
) -> tuple[Path, dict[str, str]]:
    """Render ``out/index.html`` from the saved results of ``names`` (atomically).

    Args:
        out: the report folder (results in ``out/results``).
        names: the experiments, in page order.
        failed: experiments that failed in this run, with the error; the page
            shows them as failed (not as "not run yet"), even where an older
            result is saved.
        notes: experiments recomputed in this run, with the reason (shown).

    Returns:
        The page's path and the experiments left out, with the reason.
    """
    out = Path(out)
    records, missing = [], {}
    for name in names:
        if failed and name in failed:
            continue
        path = result_path(out / "results", name)
        try:
            record = load_result(path, name)
        except FileNotFoundError:
            missing[name] = "not run yet"
            continue
        except ResultError as error:
            missing[name] = str(error)
            continue
        problem = result_problem(get_experiment(name), record["result"])
        if problem:  # this code cannot read it: say so rather than crash
            missing[name] = f"{path} is malformed for this version ({problem})"
        else:
            records.append(record)
    html = render_report(
        records,
        missing=missing,
        failed=failed,
        shipped=shipped_results(),
        notes=notes,
    )
    return write_text(out / "index.html", html), missing
