"""Offline reports: one self-contained HTML page of an event file's windows and surges.

``surgewatch report FILE --out report.html`` runs the worker's pure pipeline over the file
(:mod:`surgewatch.offline`), condenses what it found (:mod:`.data`), draws it as inline SVG
(:mod:`.svg`) and writes one page (:mod:`.page`) an analyst can open, mail or attach to a ticket.
"""

from surgewatch.report.data import ReportData, SurgeSpan, WindowSeries, build_report_data
from surgewatch.report.page import render_html
from surgewatch.report.run import (
    ReportCollector,
    ReportError,
    ReportStats,
    compute_report,
    report_data,
    write_report,
)

__all__ = [
    "ReportCollector",
    "ReportData",
    "ReportError",
    "ReportStats",
    "SurgeSpan",
    "WindowSeries",
    "build_report_data",
    "compute_report",
    "render_html",
    "report_data",
    "write_report",
]
