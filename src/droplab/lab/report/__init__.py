"""The lab's HTML report, rendered from saved results by a pure function."""

from droplab.lab.report.render import render_report as render_report
from droplab.lab.report.render import write_report as write_report

__all__ = ["render_report", "write_report"]
