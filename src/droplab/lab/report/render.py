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
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from droplab.execution import write_text
from droplab.lab.ranges import value_range
from droplab.lab.registry import get_experiment, result_problem
from droplab.lab.report.summary import (
    MAX_WORDS,
    SEED_QUESTIONS,
    forest_figure,
    forest_rows,
    headline,
    short_answer,
)
from droplab.lab.results import ResultError, load_result, result_path

__all__ = [
    "answers_markdown",
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


# Figures at most this wide (pixels) shrink to a phone's width at 88 % or more
# of their size (a 390-px screen leaves 372 px: 8-point text stays at 9 px);
# wider ones get a phone version (phone_figure), as wide as this.
PHONE_FIT_PX = 420


def png_width(png_base64: str) -> int:
    """The width in pixels of a base64 PNG (from its IHDR header)."""
    header = base64.b64decode(png_base64[:32])
    return int.from_bytes(header[16:20], "big")


PHONE_INCHES = 3.5  # a phone figure's width: 385 px at 110 dpi, shown near full size


def phone_figure(figure: Any) -> Any:
    """``figure`` redrawn for a phone: its panels stacked in one column, 3.5 inches
    wide, each keeping its own legend (and twin axes, colorbars) beside it, long
    titles wrapped; the desktop figure's panels side by side would be cut at 390 px.
    """
    import textwrap

    panels: dict[tuple[int, int], list[Any]] = {}  # grid cell -> its axes (twins)
    for ax in figure.axes:
        spec = ax.get_subplotspec()
        if spec is not None:
            key = (spec.rowspan.start, spec.colspan.start)
            panels.setdefault(key, []).append(ax)
    if not panels:
        return figure
    cells = sorted(panels)
    first = panels[cells[0]][0].get_subplotspec().get_gridspec()
    rows, cols = first.get_geometry()
    width, height = figure.get_size_inches()
    # each panel keeps its shape (height / width), within readable limits
    panel = min(max(PHONE_INCHES * (height / rows) / (width / cols), 2.3), 3.4)
    grid = figure.add_gridspec(len(cells), 1)
    for i, key in enumerate(cells):
        for ax in panels[key]:
            ax.set_subplotspec(grid[i, 0])
            title = ax.get_title()
            if len(title) > 44 and "\n" not in title:
                head, sep, tail = title.rpartition(" (")
                lines = [head, "(" + tail] if sep and len(head) <= 44 else [title]
                ax.set_title("\n".join(textwrap.fill(t, 44) for t in lines), fontsize=9)
            words = "".join(t.get_text() for t in ax.get_xticklabels())
            letters = re.sub(r"\\mathdefault|[^A-Za-z]", "", words)  # not 10^2, 0.5
            if len(words) > 24 and len(letters) > 6:
                ax.tick_params(axis="x", labelrotation=30)  # names, not numbers
    figure.set_size_inches(PHONE_INCHES, panel * len(cells))
    return figure


def figure_png(figure: Any) -> str:
    """A matplotlib Figure as a base64 PNG string (Agg, 110 dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def shown_interval(row: Mapping[str, Any]) -> tuple[float, float, str, str] | None:
    """The interval the page shows for ``row``: ``(low, high, mark_low, mark_high)``,
    each end cut to the quantity's range (:func:`value_range`) and marked ``*``
    where it was; None where the row has no interval. Figures that draw an
    interval draw this one.

    >>> shown_interval({"quantity": "test error", "value": 0.04, "low": -0.03, "high": 0.11})
    (0.0, 0.11, '*', '')
    """
    low, high = row.get("low"), row.get("high")
    if low is None or high is None:
        return None
    bottom, top = value_range(str(row.get("quantity", "")), str(row.get("unit", "")))
    mark_low = mark_high = ""
    if bottom is not None and low < bottom:
        low, mark_low = bottom, "*"
    if top is not None and high > top:
        high, mark_high = top, "*"
    return float(low), float(high), mark_low, mark_high


def _interval(row: Mapping[str, Any]) -> str:
    """``[low, high]``, cut (and marked ``*``) where it crosses the quantity's range.

    A paired difference's point "interval" (every seed pair differed alike) is
    said to be no interval:

    >>> _interval({"quantity": "epochs to target", "value": 5.5, "low": -0.85, "high": 11.9})
    '[0*, 11.9]'
    >>> _interval({"quantity": "inverted: mean squared error", "value": 1.44, "low": 1.31, "high": 1.58})
    '[1.31, 1.58]'
    >>> _interval({"quantity": "dropout - none (paired)", "low": -0.01, "high": -0.01})
    '(no spread: no interval)'
    """
    shown = shown_interval(row)
    if shown is None:
        return ""
    quantity = str(row.get("quantity", ""))
    if shown[0] == shown[1] and any(w in quantity for w in ("paired", " - ", "minus")):
        return "(no spread: no interval)"
    low, high, mark_low, mark_high = shown
    return f"[{format_number(low)}{mark_low}, {format_number(high)}{mark_high}]"


FOLD_ROWS = 8  # number tables longer than this are folded (<details>)


def _headline(
    name: str, result: Any, raw_rows: Sequence[Mapping[str, Any]]
) -> Mapping[str, str] | None:
    """The number the summary shows: the one its short answer states
    (:func:`~droplab.lab.report.summary.headline`), formatted as the tables are."""
    pick = headline(name, result, [dict(row) for row in raw_rows])
    if pick is None:
        return None
    return {
        "quantity": pick["quantity"],
        "value": format_number(pick.get("value")),
        "interval": _interval(pick),
        "unit": pick.get("unit", ""),
        "reason": pick.get("reason", ""),
    }


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
    wide = png_width(figure) > PHONE_FIT_PX
    phone = figure_png(phone_figure(module.figure(result))) if wide else ""
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
        "headline": _headline(record["name"], result, raw_rows),
        "question": module.QUESTION,
        "method": module.METHOD,
        "figure": figure,
        "figure_phone": phone,
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


def answers_markdown(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The lab's answers as Markdown table rows (the README's table): per record,
    its question, short answer, headline number with its interval, and the run.

    The same functions as the page's summary, so the two say the same.
    """
    lines = []
    for record in records:
        name = str(record["name"])
        result = record["result"]
        rows = get_experiment(name).numbers(result)
        picked = _headline(name, result, rows)
        number = ""
        if picked is not None:
            unit = f" {picked['unit']}" if picked["unit"] else ""
            said = picked["interval"] or (
                f"({picked['reason']})" if picked["reason"] else ""
            )
            number = f"**{picked['value']}**{unit} {said}".strip()
        seeds = record.get("config", {}).get("seeds")
        run = (
            f"{record.get('preset', '')}"
            + (f", {seeds} seeds" if seeds else "")
            + f", {str(record.get('started', ''))[:10]}"
        )
        cells = [
            SEED_QUESTIONS.get(name, name),
            short_answer(name, result, rows),
            number,
            run,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


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
