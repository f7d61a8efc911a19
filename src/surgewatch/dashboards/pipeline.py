"""The pipeline dashboard: throughput, watermarks and lag, late and rejected events, windows, workers.

Faust's sensors export nothing to ``/metrics`` and the workers' registry carries no ``process_*``
collectors, so the worker-health panels use the series Prometheus itself records for every
scrape target (``up``, ``scrape_duration_seconds``, ``scrape_samples_scraped``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as dash_model

from surgewatch.dashboards.panels import (
    OVERVIEW_UID,
    PIPELINE_UID,
    TAGS,
    UNIT_COUNT,
    UNIT_PER_SECOND,
    UNIT_SECONDS,
    UNIT_TIME_ISO,
    Query,
    dashboard_link,
    dashboard_url,
    data_link,
    datasource_variable,
    label_variable,
    row,
    single_stat,
    time_series,
)

JOB = 'job=~"$job"'


def _rate(metric: str) -> str:
    return f"rate({metric}{{{JOB}}}[$__rate_interval])"


def _lag_quantile(quantile: float) -> Query:
    bucket_rate = _rate("surgewatch_event_lag_seconds_bucket")
    return Query(
        f"histogram_quantile({quantile}, sum by (le) ({bucket_rate}))", f"p{quantile * 100:g}"
    )


_TO_OVERVIEW = data_link("Overview", dashboard_url(OVERVIEW_UID))
WATERMARK = f"min by (stream) (surgewatch_watermark_seconds{{{JOB}}})"


def pipeline() -> dash.Dashboard:
    """``surgewatch-pipeline``: is the pipeline keeping up, and is anything lost or held back?"""
    return (
        dash.Dashboard("surgewatch / Pipeline")
        .uid(PIPELINE_UID)
        .description(
            "Is the pipeline keeping up? Throughput, watermarks and event lag, late and rejected "
            "events, window records, and the workers as Prometheus sees them."
        )
        .tags(TAGS)
        .timezone("utc")
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(dash_model.DashboardCursorSync.CROSSHAIR)
        .editable()
        .with_variable(datasource_variable())
        .with_variable(label_variable("job", "Job", "surgewatch_events_received_total"))
        .link(dashboard_link("Overview", OVERVIEW_UID, "Signups, surges and hashtags"))
        .with_row(row("Right now"))
        .with_panel(
            single_stat(
                "Workers up",
                "Worker targets Prometheus scraped successfully on its last scrape.",
                UNIT_COUNT,
                Query(f"sum(up{{{JOB}}})", "up"),
                width=4,
                thresholds=((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            single_stat(
                "Events per second",
                "Input events read by all workers, both streams.",
                UNIT_PER_SECOND,
                Query(f"sum({_rate('surgewatch_events_received_total')})", "events/s"),
                width=5,
                links=[_TO_OVERVIEW],
            )
        )
        .with_panel(
            single_stat(
                "Watermark",
                "Event-time watermark per stream: the oldest over the workers.",
                UNIT_TIME_ISO,
                Query(f"{WATERMARK} * 1000", "{{stream}}"),
                width=10,
            )
        )
        .with_panel(
            single_stat(
                "Open windows",
                "Windows held open by the counting partitions, both metrics.",
                UNIT_COUNT,
                Query(f"sum(surgewatch_open_windows{{{JOB}}})", "open"),
                width=5,
            )
        )
        .with_row(row("Throughput"))
        .with_panel(
            time_series(
                "Events received and counted per second",
                "Input events read, by stream, and the posts and signups counted in a window "
                "(received = counted + late + rejected).",
                UNIT_PER_SECOND,
                [
                    Query(
                        f"sum by (stream) ({_rate('surgewatch_events_received_total')})",
                        "received {{stream}}",
                    ),
                    Query(f"sum({_rate('surgewatch_posts_total')})", "counted posts"),
                    Query(f"sum({_rate('surgewatch_signups_total')})", "counted signups"),
                ],
                links=[_TO_OVERVIEW],
            )
        )
        .with_panel(
            time_series(
                "Late and rejected events per second",
                "Late: the event's window had already closed. Rejected: sent to the dead-letter "
                "topic, by reason.",
                UNIT_PER_SECOND,
                [
                    Query(
                        f"sum by (stream) ({_rate('surgewatch_events_late_total')})",
                        "late {{stream}}",
                    ),
                    Query(
                        f"sum by (stream, reason) ({_rate('surgewatch_events_rejected_total')})",
                        "rejected {{stream}} {{reason}}",
                    ),
                ],
            )
        )
        .with_row(row("Event time"))
        .with_panel(
            time_series(
                "Watermark lag",
                "Wall clock minus the stream's watermark. During a replay of old events this is "
                "their age; live, it is how far behind the pipeline runs.",
                UNIT_SECONDS,
                [Query(f"time() - {WATERMARK}", "{{stream}}")],
            )
        )
        .with_panel(
            time_series(
                "Event lag quantiles",
                "Processing time minus event time of the counted events "
                "(surgewatch_event_lag_seconds histogram). Its largest bound is a day, so a "
                "replay of older events shows 1 day.",
                UNIT_SECONDS,
                [_lag_quantile(0.5), _lag_quantile(0.9), _lag_quantile(0.99)],
            )
        )
        .with_row(row("Windows"))
        .with_panel(
            time_series(
                "Windows closed and records published per second",
                "Windows closed and window-count records published, by metric.",
                UNIT_PER_SECOND,
                [
                    Query(
                        f"sum by (metric) ({_rate('surgewatch_windows_closed_total')})",
                        "closed {{metric}}",
                    ),
                    Query(
                        f"sum by (metric) ({_rate('surgewatch_window_records_total')})",
                        "records {{metric}}",
                    ),
                ],
            )
        )
        .with_panel(
            time_series(
                "Open windows by metric",
                "Windows held open, by metric: about (window + grace) / window of each, more "
                "while a stream's watermark is held back.",
                UNIT_COUNT,
                [Query(f"sum by (metric) (surgewatch_open_windows{{{JOB}}})", "{{metric}}")],
            )
        )
        .with_panel(
            time_series(
                "Surge records",
                "Surge start and end records published, by metric.",
                UNIT_COUNT,
                [
                    Query(
                        "sum by (metric, state) "
                        f"(increase(surgewatch_surges_total{{{JOB}}}[$__rate_interval]))",
                        "{{metric}} {{state}}",
                    )
                ],
                bars=True,
                links=[_TO_OVERVIEW],
            )
        )
        .with_panel(
            time_series(
                "Re-read and dropped per second",
                "Records read again after a rebalance and skipped, and counts that reached an "
                "already-closed window (both only after a partition changed owner).",
                UNIT_PER_SECOND,
                [
                    Query(
                        f"sum by (stream) ({_rate('surgewatch_events_reread_skipped_total')})",
                        "re-read skipped {{stream}}",
                    ),
                    Query(
                        f"sum by (metric) ({_rate('surgewatch_window_updates_dropped_total')})",
                        "dropped {{metric}}",
                    ),
                ],
            )
        )
        .with_row(row("Workers"))
        .with_panel(
            time_series(
                "Worker targets up",
                "Worker targets up and configured, per job, as Prometheus scrapes them.",
                UNIT_COUNT,
                [
                    Query(f"sum by (job) (up{{{JOB}}})", "up {{job}}"),
                    Query(f"count by (job) (up{{{JOB}}})", "targets {{job}}"),
                ],
                width=8,
            )
        )
        .with_panel(
            time_series(
                "Scrape duration",
                "How long each worker took to answer /metrics.",
                UNIT_SECONDS,
                [Query(f"max by (instance) (scrape_duration_seconds{{{JOB}}})", "{{instance}}")],
                width=8,
            )
        )
        .with_panel(
            time_series(
                "Samples per scrape",
                "Samples each worker serves on /metrics; labels are bounded, so this stays flat.",
                UNIT_COUNT,
                [Query(f"max by (instance) (scrape_samples_scraped{{{JOB}}})", "{{instance}}")],
                width=8,
            )
        )
    )
