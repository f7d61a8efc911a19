"""The overview dashboard: who is signing up where, which hashtags lead and surge, what comes in."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as dash_model

from surgewatch.dashboards.panels import (
    OVERVIEW_UID,
    PIPELINE_UID,
    SURGE_THRESHOLDS,
    SURGE_Z_START,
    TAGS,
    TOP_K,
    UNIT_COUNT,
    UNIT_PER_SECOND,
    UNIT_RATIO,
    UNIT_SCORE,
    Query,
    bar_gauge,
    dashboard_link,
    dashboard_url,
    data_link,
    datasource_variable,
    label_variable,
    row,
    single_stat,
    time_series,
)

COUNTRY = 'country=~"$country"'
RECEIVED_RATE = "rate(surgewatch_events_received_total[$__rate_interval])"
REJECTED_RATE = "rate(surgewatch_events_rejected_total[$__rate_interval])"

_TO_PIPELINE = data_link("Pipeline health", dashboard_url(PIPELINE_UID))
_ONLY_THIS_COUNTRY = data_link(
    "Only ${__field.labels.country}",
    dashboard_url(OVERVIEW_UID, "&var-country=${__field.labels.country}"),
)


def overview() -> dash.Dashboard:
    """``surgewatch-overview``: signups by country, surge scores, top and surging hashtags, intake."""
    return (
        dash.Dashboard("surgewatch / Overview")
        .uid(OVERVIEW_UID)
        .description(
            "Is a user migration happening right now, and what is it about? Signups per window by "
            "country, surge scores, top and surging hashtags, events in and rejected."
        )
        .tags(TAGS)
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(dash_model.DashboardCursorSync.CROSSHAIR)
        .editable()
        .with_variable(datasource_variable())
        .with_variable(label_variable("country", "Country", "surgewatch_signups_window"))
        .link(
            dashboard_link(
                "Pipeline", PIPELINE_UID, "Throughput, watermarks, lag, late and rejected events"
            )
        )
        .with_row(row("Right now"))
        .with_panel(
            single_stat(
                "Signups in the last window",
                "Signups of the selected countries in the last complete window.",
                UNIT_COUNT,
                Query(f"sum(surgewatch_signups_window{{{COUNTRY}}})", "signups"),
                width=5,
            )
        )
        .with_panel(
            single_stat(
                "All-signups surge score",
                f"Surge score of all signups together (key *); a surge starts at {SURGE_Z_START:g}.",
                UNIT_SCORE,
                Query("max(surgewatch_all_signups_surge_score)", "score"),
                width=5,
                thresholds=SURGE_THRESHOLDS,
            )
        )
        .with_panel(
            single_stat(
                "Hashtags surging now",
                "Hashtags in a surge now (the top ones by score).",
                UNIT_COUNT,
                Query("count(surgewatch_hashtag_surge_score) or vector(0)", "surging"),
                width=5,
                thresholds=((None, "green"), (1, "red")),
            )
        )
        .with_panel(
            single_stat(
                "Events per second",
                "Input events read by the workers, both streams.",
                UNIT_PER_SECOND,
                Query(f"sum({RECEIVED_RATE})", "events/s"),
                width=5,
                links=[_TO_PIPELINE],
            )
        )
        .with_panel(
            single_stat(
                "Rejected share",
                "Share of input events rejected to the dead-letter topic.",
                UNIT_RATIO,
                Query(f"sum({REJECTED_RATE}) / sum({RECEIVED_RATE})", "rejected"),
                width=4,
                thresholds=((None, "green"), (0.01, "yellow"), (0.05, "red")),
                links=[_TO_PIPELINE],
            )
        )
        .with_row(row("Signups"))
        .with_panel(
            time_series(
                "Signups per window by country",
                "Signups counted in each complete window, by country (ISO code or unknown). "
                "Click a series to show only that country.",
                UNIT_COUNT,
                [
                    Query(
                        f"sum by (country) (surgewatch_signups_window{{{COUNTRY}}})",
                        "{{country}}",
                    )
                ],
                links=[_ONLY_THIS_COUNTRY],
            )
        )
        .with_panel(
            time_series(
                "Signup surge score",
                f"Surge score of each window's signups, by country and for all signups together. "
                f"A surge starts at {SURGE_Z_START:g} (dashed lines: the worker's defaults).",
                UNIT_SCORE,
                [
                    Query(
                        f"max by (country) (surgewatch_signup_surge_score{{{COUNTRY}}})",
                        "{{country}}",
                    ),
                    Query("max(surgewatch_all_signups_surge_score)", "all signups"),
                ],
                thresholds=SURGE_THRESHOLDS,
                show_thresholds=True,
            )
        )
        .with_row(row("Hashtags"))
        .with_panel(
            bar_gauge(
                "Top hashtags, last window",
                f"Posts per hashtag in the last complete window, top {TOP_K}.",
                UNIT_COUNT,
                Query(
                    "sort_desc(max by (hashtag) (surgewatch_top_hashtag_posts))",
                    "{{hashtag}}",
                    instant=True,
                ),
                width=8,
                height=12,
            )
        )
        .with_panel(
            time_series(
                "Top hashtags per window",
                f"Posts per window of the hashtags in the top {TOP_K}; a tag leaves the chart "
                "when it leaves the top.",
                UNIT_COUNT,
                [Query("max by (hashtag) (surgewatch_top_hashtag_posts)", "{{hashtag}}")],
                width=16,
                height=12,
            )
        )
        .with_panel(
            time_series(
                "Surging hashtags",
                f"Surge score of each hashtag while it surges (top {TOP_K} by score). "
                f"A surge starts at {SURGE_Z_START:g}.",
                UNIT_SCORE,
                [Query("max by (hashtag) (surgewatch_hashtag_surge_score)", "{{hashtag}}")],
                width=24,
                thresholds=SURGE_THRESHOLDS,
                show_thresholds=True,
            )
        )
        .with_row(row("Intake"))
        .with_panel(
            time_series(
                "Events received per second",
                "Input events read, by stream. Click for the pipeline dashboard.",
                UNIT_PER_SECOND,
                [Query(f"sum by (stream) ({RECEIVED_RATE})", "{{stream}}")],
                links=[_TO_PIPELINE],
            )
        )
        .with_panel(
            time_series(
                "Events rejected per second",
                "Input events sent to the dead-letter topic, by stream and reason.",
                UNIT_PER_SECOND,
                [Query(f"sum by (stream, reason) ({REJECTED_RATE})", "{{stream}} {{reason}}")],
                links=[_TO_PIPELINE],
            )
        )
    )
