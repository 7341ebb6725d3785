"""Fixtures shared by the report tests."""

from __future__ import annotations

from typing import Any

import pytest

from droplab.lab.registry import experiment_names
from droplab.lab.report import render_report
from droplab.lab.report.render import shipped_results


@pytest.fixture(scope="session")
def shipped_page() -> tuple[list[dict[str, Any]], str]:
    """The full-preset results shipped with droplab, in the lab's order, and the
    page rendered from them."""
    shipped = shipped_results()
    records = [shipped[n] for n in experiment_names() if n in shipped]
    return records, render_report(records)
