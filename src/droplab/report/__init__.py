"""The lab's HTML report, rendered from saved results by a pure function."""

from droplab.report.render import render_report as render_report

__all__ = ["render_report"]
