"""The HTML report: a pure function of saved results, self-contained, phone-friendly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from droplab.lab.experiments import gradients, masks
from droplab.lab.report import render_report, write_report
from droplab.lab.report.render import format_number
from droplab.lab.report.summary import MAX_WORDS, SEED_QUESTIONS
from droplab.lab.results import load_result, result_path
from droplab.lab.runner import run_experiment


def _quiet(message: str) -> None:
    del message


@pytest.fixture(scope="module")
def records(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("report")
    out = []
    for module, config in (
        (masks, masks.Config(draws=300)),
        (gradients, gradients.Config()),
    ):
        outcome = run_experiment(
            module, config, results_dir=folder / "results", preset="quick", log=_quiet
        )
        assert outcome.record is not None
        out.append(outcome.record)
    return folder, out


def test_render_is_pure_and_contains_every_part(
    records: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, saved = records
    page = render_report(saved)
    assert page == render_report(saved)  # same records, same page
    for module, record in zip((masks, gradients), saved, strict=True):
        assert f'<section id="{module.NAME}">' in page
        assert f'<a href="#{module.NAME}">' in page  # contents list
        assert module.QUESTION in page.replace("&#39;", "'")
        assert module.answer(record["result"]).replace("'", "&#39;") in page
    assert page.count('src="data:image/png;base64,') == 2
    assert (
        '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    )
    assert "@media (max-width: 600px)" in page
    assert "dL1/dw" in page and "dropped" in page  # the gradients table
    assert "chi-square p-value" in page
    assert saved[0]["versions"]["torch"] in page


def test_page_is_self_contained(records: tuple[Path, list[dict[str, Any]]]) -> None:
    page = render_report(records[1])
    assert "<script" not in page and "<link" not in page and "@import" not in page
    for attribute in re.findall(r'(?:src|srcset|href)="([^"]*)"', page):
        assert attribute.startswith(("data:image/png;base64,", "#")), attribute
    assert "http://" not in page and "https://" not in page


def test_rendering_from_saved_files_needs_no_rerun(
    records: tuple[Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = records

    def no_running(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the report must not re-run experiments")

    monkeypatch.setattr(masks, "run", no_running)
    monkeypatch.setattr(gradients, "run", no_running)
    page, missing = write_report(folder, ["masks", "expectation", "gradients"])
    html = page.read_text()
    assert missing == {"expectation": "not run yet"}
    assert "No result: not run yet" in html
    assert html == render_report(
        [
            load_result(result_path(folder / "results", n))
            for n in ("masks", "gradients")
        ],
        missing=missing,
    )


def test_corrupt_saved_result_is_reported_in_the_page(
    records: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "masks.json").write_text("{broken")
    _, missing = write_report(tmp_path, ["masks"])
    assert "is not readable JSON" in missing["masks"]


def test_escaping_of_untrusted_text(records: tuple[Path, list[dict[str, Any]]]) -> None:
    record = dict(records[1][1])
    record["preset"] = "<script>alert(1)</script>"
    page = render_report([record])
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_format_number() -> None:
    assert format_number(0.0625) == "0.0625"
    assert format_number(7.888609052210118e-31) == "7.889e-31"
    assert (
        format_number(None) == ""
        and format_number(3) == "3"
        and format_number("kept") == "kept"
    )


def test_the_summary_comes_first_with_a_short_answer_and_headline_per_question(
    records: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, saved = records
    page = render_report(
        saved, missing={"uci": "not run yet"}, failed={"rate": "RuntimeError: boom"}
    ).replace("&#39;", "'")
    start, first = (
        page.index('<section id="summary">'),
        page.index('<section id="masks">'),
    )
    assert start < first
    summary = page[start:first]
    body = summary[summary.index("<tbody>") : summary.index("</tbody>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
    assert len(rows) == len(saved) + 2  # one per question, the failed, the missing
    for module, record, row in zip((masks, gradients), saved, rows, strict=False):
        assert f'<a href="#{module.NAME}">{SEED_QUESTIONS[module.NAME]}</a>' in row
        answer_cell = re.findall(r"<td>(.*?)</td>", row, flags=re.S)[0]
        words = re.sub(r"<[^>]+>", " ", answer_cell).split()
        assert 5 <= len(words) <= MAX_WORDS, answer_cell
        assert module.answer(record["result"]) not in summary  # the long one: below
        assert re.search(r"<strong>[^<]+</strong>", row)  # a headline number
    assert "Failed in this run: RuntimeError: boom" in summary
    assert '<a href="#uci">uci</a>' in summary and "No result: not run yet" in summary


def test_every_experiment_has_a_seed_question_and_a_short_answer() -> None:
    from droplab.lab.registry import experiment_names
    from droplab.lab.report.summary import SHORT

    assert set(SEED_QUESTIONS) == set(experiment_names()) == set(SHORT)
    assert all(len(q.split()) <= 12 for q in SEED_QUESTIONS.values())


def test_short_answers_of_the_shipped_full_results_fit_the_word_limit() -> None:
    from droplab.lab.registry import get_experiment
    from droplab.lab.report.render import shipped_results
    from droplab.lab.report.summary import short_answer

    shipped = shipped_results()
    assert len(shipped) >= 9  # docs/results/*-full.json, as package data
    for name, record in shipped.items():
        rows = get_experiment(name).numbers(record["result"])
        text = short_answer(name, record["result"], rows)
        assert 5 <= len(text.split()) <= MAX_WORDS, (name, text)


def test_the_forest_plot_follows_holm() -> None:
    from droplab.lab.report.summary import forest_rows

    cell = {
        "size": 300,
        "width": 64,
        "benefit": {"mean": 0.05, "low": 0.03, "high": 0.07, "p_holm": 0.2},
    }
    size = {
        "size": 500,
        "difference": {"mean": -0.04, "low": -0.06, "high": -0.02, "p_holm": 0.01},
    }
    rows = forest_rows({"when-it-helps": {"cells": [cell]},
                        "data-size": {"sizes": [size]}})  # fmt: skip
    assert [r["label"] for r in rows] == [
        "when-it-helps: 300 ex. × 64",
        "data-size: 500 ex.",
    ]
    assert rows[0]["holm"] is False  # interval excludes 0, Holm does not
    assert rows[1]["holm"] is True
    assert rows[1]["mean"] == pytest.approx(0.04)  # error lowered = benefit
    assert rows[1]["low"] == pytest.approx(0.02) and rows[1]["high"] == pytest.approx(
        0.06
    )


def test_intervals_of_positive_quantities_stay_in_range() -> None:
    from droplab.lab.report.render import _interval

    assert _interval({"quantity": "none: test error", "low": -0.03, "high": 0.11}) == (
        "[0*, 0.11]"
    )
    assert _interval({"quantity": "dropout - none (paired)", "low": -0.03, "high": 0.1})
    assert (
        _interval({"quantity": "dropout - none (paired)", "low": -0.03, "high": 0.1})
        == "[-0.03, 0.1]"
    )
    assert _interval({"quantity": "test accuracy", "low": 0.9, "high": 1.02}) == (
        "[0.9, 1*]"
    )


def test_each_section_shows_figure_and_answer_before_the_numbers(
    records: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, saved = records
    page = render_report(saved)
    section = page[page.index('<section id="masks">') :]
    section = section[: section.index("</section>")]
    figure, answer = section.index("<img"), section.index('class="answer"')
    numbers = section.index("<table>")
    assert figure < answer < numbers


def test_long_tables_are_folded(
    records: tuple[Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from droplab.lab.report import render

    _, saved = records
    monkeypatch.setattr(render, "FOLD_ROWS", 1)
    page = render_report(saved)
    assert page.count('<details class="numbers">') >= 2
    assert "<summary>Numbers: " in page


def test_the_forest_plot_has_a_phone_sized_version() -> None:
    """The phone gets its own forest plot (picture/source), drawn near a phone's
    width so its labels are not shrunk; the desktop one stays wide."""
    from droplab.lab.report.render import figure_png, png_width
    from droplab.lab.report.summary import forest_figure

    rows = [
        {"label": f"data-size: {n} ex.", "mean": 0.01 * k, "low": -0.02, "high": 0.04,
         "holm": False}
        for k, n in enumerate((50, 200, 1079))
    ]  # fmt: skip
    phone = png_width(figure_png(forest_figure(rows, narrow=True)))
    desktop = png_width(figure_png(forest_figure(rows)))
    assert phone <= 400 < 600 < desktop


def test_the_page_offers_the_phone_forest_plot_below_600_px(
    shipped_page: tuple[list[dict[str, Any]], str],
) -> None:
    from droplab.lab.report.render import png_width

    page = shipped_page[1]
    found = re.search(
        r'<picture><source media="\(max-width: 600px\)" '
        r'srcset="data:image/png;base64,([^"]+)"><img src="data:image/png;base64,'
        r'([^"]+)"',
        page,
    )
    assert found, "no <picture> for the forest plot"
    # a 370-px screen shows it at 82 % or more of its size; the desktop one is wide
    assert png_width(found[1]) <= 450 < 600 < png_width(found[2])
