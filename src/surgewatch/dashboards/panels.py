"""Panel building blocks shared by the dashboards: datasource, queries, units, links, thresholds.

Every panel and every query reads from the ``datasource`` dashboard variable, so one JSON file
works against any Prometheus; every panel states its unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dash_model

from surgewatch.config import Settings

OVERVIEW_UID = "surgewatch-overview"
PIPELINE_UID = "surgewatch-pipeline"
TAGS = ["surgewatch"]

#: The dashboard variable every panel reads from.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = dash_model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")

#: What a link carries along: the time range and the chosen datasource.
KEEP_CONTEXT = "${__url_time_range}&${datasource:queryparam}"

# Grafana unit ids (https://github.com/grafana/grafana/blob/main/packages/grafana-data/src/valueFormats/categories.ts).
UNIT_COUNT = "short"
UNIT_PER_SECOND = "ops"
UNIT_SECONDS = "s"
UNIT_RATIO = "percentunit"
UNIT_SCORE = "none"
UNIT_TIME_ISO = "dateTimeAsIso"

#: Surge score thresholds drawn on the score panels: the worker's defaults.
SURGE_Z_START = float(Settings.model_fields["surge_z_start"].default)
SURGE_Z_END = float(Settings.model_fields["surge_z_end"].default)
TOP_K = int(Settings.model_fields["top_k"].default)


@dataclass(frozen=True)
class Query:
    """One PromQL target: ``instant`` for panels that show only the latest value."""

    expr: str
    legend: str = ""
    instant: bool = False


def dashboard_url(uid: str, extra: str = "") -> str:
    """Relative URL of a dashboard that keeps the time range and datasource (data links)."""
    return f"/d/{uid}/{uid}?{KEEP_CONTEXT}{extra}"


def dashboard_link(title: str, uid: str, tooltip: str) -> dash.DashboardLink:
    """A link in the dashboard's header to another dashboard, keeping time and variables."""
    return (
        dash.DashboardLink(title)
        .type(dash_model.DashboardLinkType.LINK)
        .url(f"/d/{uid}/{uid}")
        .tooltip(tooltip)
        .icon("dashboard")
        .keep_time(True)
        .include_vars(True)
        .target_blank(False)
        .as_dropdown(False)
        .tags([])
    )


def data_link(title: str, url: str) -> dash.DashboardLink:
    """A data link: a click on a series or value opens ``url`` (Grafana's DataLink fields)."""
    return dash.DashboardLink(title).url(url).target_blank(False)


def datasource_variable() -> dash.DatasourceVariable:
    """The ``datasource`` variable: any Prometheus datasource, Grafana's default first."""
    return (
        dash.DatasourceVariable(DATASOURCE_VARIABLE)
        .label("Prometheus")
        .type("prometheus")
        .multi(False)
        .include_all(False)
    )


def label_variable(name: str, label: str, metric: str) -> dash.QueryVariable:
    """A multi-value variable over a label's values, "All" selected by default."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(dash_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(True)
        .include_all(True)
        .current(dash_model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def _targets(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    targets = []
    for index, query in enumerate(queries):
        target = (
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
            .expr(query.expr)
            .legend_format(query.legend or "__auto")
        )
        targets.append(target.instant() if query.instant else target.range())
    return targets


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(dash_model.ThresholdsMode.ABSOLUTE)
        .steps([dash_model.Threshold(value=value, color=color) for value, color in steps])
    )


#: Green below the end of a surge, yellow in between, red from where a surge starts.
SURGE_THRESHOLDS = ((None, "green"), (SURGE_Z_END, "yellow"), (SURGE_Z_START, "red"))
NEUTRAL_THRESHOLDS = ((None, "green"),)


PanelT = TypeVar("PanelT", timeseries.Panel, stat.Panel, bargauge.Panel)


def time_series(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 12,
    height: int = 8,
    bars: bool = False,
    thresholds: Sequence[tuple[float | None, str]] = NEUTRAL_THRESHOLDS,
    show_thresholds: bool = False,
    links: Sequence[dash.DashboardLink] = (),
) -> timeseries.Panel:
    """A time series panel; ``show_thresholds`` draws the thresholds as dashed lines."""
    panel = (
        _framed(timeseries.Panel(), title, description, unit, width, height)
        .fill_opacity(25 if bars else 10)
        .line_width(1)
        .show_points(common_model.VisibilityMode.NEVER)
        .draw_style(common_model.GraphDrawStyle.BARS if bars else common_model.GraphDrawStyle.LINE)
        .thresholds(_thresholds(*thresholds))
        .thresholds_style(
            common.GraphThresholdsStyleConfig().mode(
                common_model.GraphThresholdsStyleMode.DASHED
                if show_thresholds
                else common_model.GraphThresholdsStyleMode.OFF
            )
        )
        .legend(
            common.VizLegendOptions()
            .display_mode(common_model.LegendDisplayMode.LIST)
            .placement(common_model.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs([])
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_model.TooltipDisplayMode.MULTI)
            .sort(common_model.SortOrder.DESCENDING)
        )
    )
    return _with_queries(panel, queries, links)


def _framed(
    panel: PanelT, title: str, description: str, unit: str, width: int, height: int
) -> PanelT:
    """What every panel has: title, description, the datasource variable, unit and size."""
    return (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
    )


def _with_queries(
    panel: PanelT, queries: Sequence[Query], links: Sequence[dash.DashboardLink]
) -> PanelT:
    """The panel with its targets and data links."""
    for target in _targets(queries):
        panel = panel.with_target(target)
    if links:
        panel = panel.data_links(list(links))
    return panel


def single_stat(
    title: str,
    description: str,
    unit: str,
    query: Query,
    *,
    width: int = 6,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = NEUTRAL_THRESHOLDS,
    links: Sequence[dash.DashboardLink] = (),
) -> stat.Panel:
    """A big number (the last value), coloured by ``thresholds``, with a sparkline."""
    panel = (
        _framed(stat.Panel(), title, description, unit, width, height)
        .thresholds(_thresholds(*thresholds))
        .graph_mode(common_model.BigValueGraphMode.AREA)
        .color_mode(common_model.BigValueColorMode.VALUE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return _with_queries(panel, [query], links)


def bar_gauge(
    title: str,
    description: str,
    unit: str,
    query: Query,
    *,
    width: int = 12,
    height: int = 10,
    links: Sequence[dash.DashboardLink] = (),
) -> bargauge.Panel:
    """Horizontal bars, one per series of an instant query, in the query's order."""
    panel = (
        _framed(bargauge.Panel(), title, description, unit, width, height)
        .min(0)
        .thresholds(_thresholds(*NEUTRAL_THRESHOLDS))
        .orientation(common_model.VizOrientation.HORIZONTAL)
        .display_mode(common_model.BarGaugeDisplayMode.GRADIENT)
        .value_mode(common_model.BarGaugeValueMode.COLOR)
        .show_unfilled(True)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return _with_queries(panel, [query], links)


def row(title: str) -> dash.Row:
    """A row header (expanded: its panels follow it on the grid)."""
    return dash.Row(title)
