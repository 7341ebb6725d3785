"""The HTML report: a pure function of saved results, self-contained, phone-friendly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from droplab.lab.experiments import gradients, masks
from droplab.lab.report import render_report, write_report
from droplab.lab.report.render import format_number
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
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', page):
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
