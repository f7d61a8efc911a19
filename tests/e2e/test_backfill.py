"""Backfill against the real Prometheus 2.42: a scaled ``rednote-2025`` turned into TSDB blocks with
``promtool``, served by Prometheus, queried at historical instants.

The expected values come from the offline pipeline (the integration tests prove it equals what a
live worker publishes on the window-counts and surges topics).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from surgewatch.backfill import backfill
from surgewatch.config import load_settings
from surgewatch.eventfile import write_events
from surgewatch.monitoring import PrometheusProcess
from surgewatch.offline import OfflinePipeline
from surgewatch.simulate.scenarios import simulate, wave_onset
from surgewatch.trends.aggregate import TrendView
from surgewatch.trends.partition import SIGNUPS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="Prometheus/promtool not installed: make setup",
    ),
]

SCALE = 0.05
HOURS = 42.0
WINDOW = 60


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("backfill")
    records = list(simulate("rednote-2025", scale=SCALE, hours=HOURS))
    path = tmp / "wave.jsonl.gz"
    write_events(path, records)
    settings = load_settings()

    # The truth: window counts and each signup window's scores, from the worker's pure code.
    pipeline = OfflinePipeline(settings)
    views: dict[int, TrendView] = {}

    def keep(metric: str, view: TrendView) -> None:
        if metric == SIGNUPS and view.signup_window is not None:
            views[view.signup_window] = view

    pipeline.aggregator.on_window = keep
    pipeline.extend(records)
    result = pipeline.finish()
    counts = {(w.metric, w.key, w.window_start): w.count for w in result.window_counts}

    tsdb = tmp / "tsdb"
    stats, blocks = backfill([str(path)], settings, tsdb)
    with PrometheusProcess(tmp / "prom", [], tsdb_dir=tsdb) as prometheus:
        yield {
            "prometheus": prometheus,
            "counts": counts,
            "views": views,
            "stats": stats,
            "blocks": blocks,
            "events": len(records),
        }


def test_backfill_writes_blocks_for_the_whole_file(history: dict[str, object]) -> None:
    stats = history["stats"]
    assert stats.events == history["events"]  # type: ignore[attr-defined]
    assert stats.bad_lines == 0  # type: ignore[attr-defined]
    assert stats.windows >= HOURS * 60 - 5  # type: ignore[attr-defined]
    assert len(history["blocks"]) >= 2  # type: ignore[arg-type]


def test_a_historical_instant_answers_what_the_window_counts_said(
    history: dict[str, object],
) -> None:
    prometheus: PrometheusProcess = history["prometheus"]  # type: ignore[assignment]
    counts: dict[tuple[str, str, int], int] = history["counts"]  # type: ignore[assignment]
    views: dict[int, TrendView] = history["views"]  # type: ignore[assignment]
    onset = int(wave_onset().timestamp())
    checked = 0
    for offset_minutes in (5, 30, 90, 150):
        window = onset + offset_minutes * WINDOW
        at = window + WINDOW  # the window's end: when the worker served it
        result = prometheus.query('surgewatch_signups_window{country="US"}', at=at)
        assert len(result) == 1, (offset_minutes, result)
        assert float(result[0]["value"][1]) == counts[("signups", "US", window)]
        score = prometheus.query('surgewatch_signup_surge_score{country="US"}', at=at)
        expected = {t.key: t.score for t in views[window].signups}["US"]
        assert float(score[0]["value"][1]) == pytest.approx(expected, rel=1e-12)
        checked += 1
    assert checked == 4
    # The wave is a surge at its height, and the baseline day before it is not.
    during = prometheus.query(
        'max_over_time(surgewatch_signup_surging{country="US"}[1h])', at=onset + 3600
    )
    assert during and float(during[0]["value"][1]) == 1.0
    day_before = prometheus.query(
        'max_over_time(surgewatch_signup_surging{country="US"}[12h])', at=onset - 3600
    )
    assert day_before == []


def test_the_overview_dashboard_has_data_over_the_historical_range(
    history: dict[str, object],
) -> None:
    from surgewatch.dashboards import panel_queries
    from surgewatch.dashboards.build import default_dashboards_dir

    prometheus: PrometheusProcess = history["prometheus"]  # type: ignore[assignment]
    onset = wave_onset().timestamp()
    start, end = onset - 6 * 3600, onset + 2 * 3600
    empty = []
    queries = panel_queries(default_dashboards_dir() / "surgewatch-overview.json", "15m")
    for title, expr in queries:
        if not prometheus.query_range(expr, start, end, 300):
            empty.append(f"{title}: {expr}")
    assert len(queries) >= 10
    assert empty == [], "\n".join(empty)
