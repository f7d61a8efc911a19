"""Grafana dashboards as code: built with grafana-foundation-sdk, checked, pushed.

``build_all()`` gives the text of ``dashboards/*.json``; ``panel_queries()`` every panel's PromQL
ready to run against Prometheus; ``push_dashboards()`` uploads them to a Grafana.
"""

from __future__ import annotations

from surgewatch.dashboards.build import DASHBOARDS, build_all, check_files, write_all
from surgewatch.dashboards.panels import OVERVIEW_UID, PIPELINE_UID
from surgewatch.dashboards.queries import panel_queries, run_queries

__all__ = [
    "DASHBOARDS",
    "OVERVIEW_UID",
    "PIPELINE_UID",
    "build_all",
    "check_files",
    "panel_queries",
    "run_queries",
    "write_all",
]
