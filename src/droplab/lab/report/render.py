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
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from droplab.execution import write_text
from droplab.lab.registry import get_experiment
from droplab.lab.results import ResultError, load_result, result_path

__all__ = ["figure_png", "format_number", "render_report", "write_report"]


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


def figure_png(figure: Any) -> str:
    """A matplotlib Figure as a base64 PNG string (Agg, 110 dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _interval(row: Mapping[str, Any]) -> str:
    low, high = row.get("low"), row.get("high")
    if low is None or high is None:
        return ""
    return f"[{format_number(low)}, {format_number(high)}]"


FOLD_ROWS = 8  # number tables longer than this are folded (<details>)


def _headline(
    module: Any, result: Any, rows: Sequence[Mapping[str, str]]
) -> Mapping[str, str] | None:
    """The number the summary shows: ``module.headline(result)`` (a row of
    ``numbers``, or its index) where the module defines it, else the first row
    with an interval, else the first row."""
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


def _section(record: Mapping[str, Any]) -> dict[str, Any]:
    module = get_experiment(record["name"])
    result = record["result"]
    rows = [
        {
            "quantity": row["quantity"],
            "value": format_number(row.get("value")),
            "interval": _interval(row),
            "unit": row.get("unit", ""),
        }
        for row in module.numbers(result)
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
    return {
        "name": record["name"],
        "headline": _headline(module, result, rows),
        "question": module.QUESTION,
        "method": module.METHOD,
        "figure": figure_png(module.figure(result)),
        "numbers": rows,
        "tables": tables,
        "answer": module.answer(result),
        "preset": record.get("preset", ""),
        "wall_time": f"{record['wall_time_s']:.1f} s",
        "started": record.get("started", ""),
        "config": record.get("config", {}),
    }


def render_report(
    records: Sequence[Mapping[str, Any]],
    *,
    missing: Mapping[str, str] | None = None,
    title: str = "droplab: what dropout does, measured",
) -> str:
    """Render the report page from saved result records (see :mod:`droplab.lab.results`).

    Args:
        records: saved records, in the order they should appear.
        missing: experiments without a result, mapped to the reason (shown as such).
        title: the page title.

    Returns:
        The complete HTML document as a string.
    """
    sections = [_section(record) for record in records]
    first = records[0] if records else {}
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
        versions=first.get("versions", {}),
        machine=first.get("machine", {}),
        presets=", ".join(presets),
        total_time=f"{total:.1f} s",
        fold_rows=FOLD_ROWS,
        computed=" to ".join(sorted({min(starts), max(starts)})) if starts else "",
    )


def write_report(
    out: str | Path, names: list[str], *, failed: Mapping[str, str] | None = None
) -> tuple[Path, dict[str, str]]:
    """Render ``out/index.html`` from the saved results of ``names`` (atomically).

    Args:
        out: the report folder (results in ``out/results``).
        names: the experiments, in page order.
        failed: experiments that failed in this run, with the error; the page
            shows them as failed (not as "not run yet"), even where an older
            result is saved.

    Returns:
        The page's path and the experiments left out, with the reason.
    """
    out = Path(out)
    records, missing = [], {}
    for name in names:
        if failed and name in failed:
            missing[name] = f"failed in this run: {failed[name]}"
            continue
        path = result_path(out / "results", name)
        try:
            records.append(load_result(path, name))
        except FileNotFoundError:
            missing[name] = "not run yet"
        except ResultError as error:
            missing[name] = str(error)
    html = render_report(records, missing=missing)
    return write_text(out / "index.html", html), missing
