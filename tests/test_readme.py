"""Every ``>>>`` line of the README runs, with the output it shows."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_examples_run() -> None:
    text = README.read_text(encoding="utf-8")
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, "README.md", str(README), 0)
    assert len(test.examples) >= 15  # the library tour
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    failed, tried = runner.run(test, out=report.append)
    assert tried == len(test.examples) and failed == 0, "".join(report)


def test_the_quick_start_keeps_its_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "pip install . && droplab report" in quick
    assert 'pip install ".[test]" && pytest' in quick


def test_the_readme_is_a_front_page() -> None:
    """About 200 lines: what droplab is, the two commands, the library, one table
    of answers, "in your model", links; the long results and the changelog live
    in docs/results.md and CHANGELOG.md."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections == [
        "Quick start", "The library in a few lines", "What the lab found",
        "In your model", "Speed", "Documentation",
    ]  # fmt: skip
    root = README.parent
    assert (root / "CHANGELOG.md").read_text(encoding="utf-8").startswith("# Changelog")
    assert (root / "docs" / "results.md").exists()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):  # local links
        assert (root / target).exists(), target


def test_the_table_of_answers_is_the_pages_summary_of_the_shipped_results() -> None:
    """One row per question, in the lab's order; each row of a shipped full-preset
    result is what the page's summary computes from it, so the README and the
    page say the same; the other rows name their preset and date."""
    from droplab.lab.registry import experiment_names
    from droplab.lab.report.render import answers_markdown, shipped_results
    from droplab.lab.report.summary import SEED_QUESTIONS

    text = README.read_text(encoding="utf-8")
    section = text.split("## What the lab found", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    names = experiment_names()
    assert [row.split(" | ")[0][2:] for row in rows] == [
        SEED_QUESTIONS[n] for n in names
    ]
    shipped = shipped_results()
    assert len(shipped) >= 9
    for name, row in zip(names, rows, strict=True):
        if name in shipped:
            assert row == answers_markdown([shipped[name]])[0], name
        else:
            assert re.search(
                r"\| (default|quick), (\d+ seeds, )?\d{4}-\d\d-\d\d \|$", row
            )
