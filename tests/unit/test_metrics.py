"""Metrics: exact increments on a private registry, pre-created series, the lag histogram."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from surgewatch.events.model import Reason, Rejected
from surgewatch.ingest import LAG_BUCKETS_SECONDS, BatchOutcome
from surgewatch.metrics import LagHistogram, Metrics

STREAMS = ("posts", "signups")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def lag_counts(**by_bound: int) -> list[int]:
    """Per-bucket (non-cumulative) counts: ``lag_counts(b0_1=2, inf=1)``."""
    counts = [0] * (len(LAG_BUCKETS_SECONDS) + 1)
    for name, count in by_bound.items():
        if name == "inf":
            counts[-1] = count
        else:
            counts[LAG_BUCKETS_SECONDS.index(float(name[1:].replace("_", ".")))] = count
    return counts


def test_uses_the_injected_registry(registry: CollectorRegistry, metrics: Metrics) -> None:
    assert metrics.registry is registry
    other = CollectorRegistry()
    assert other.get_sample_value("surgewatch_events_received_total", {"stream": "posts"}) is None
    # A second Metrics on another registry does not collide with the first.
    Metrics(other)
    assert other.get_sample_value("surgewatch_events_received_total", {"stream": "posts"}) == 0.0


def test_every_stream_and_reason_series_exists_at_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    assert len(Reason) == 7
    for stream in STREAMS:
        assert value(registry, "surgewatch_events_received_total", stream=stream) == 0.0
        assert value(registry, "surgewatch_events_late_total", stream=stream) == 0.0
        for reason in Reason:
            assert (
                value(registry, "surgewatch_events_rejected_total", stream=stream, reason=reason)
                == 0.0
            ), (stream, reason)
    assert value(registry, "surgewatch_posts_total") == 0.0
    for metric in ("hashtag_posts", "signups"):
        assert value(registry, "surgewatch_window_records_total", metric=metric) == 0.0
        assert value(registry, "surgewatch_windows_closed_total", metric=metric) == 0.0
        assert value(registry, "surgewatch_open_windows", metric=metric) == 0.0
        assert value(registry, "surgewatch_window_updates_dropped_total", metric=metric) == 0.0
    assert value(registry, "surgewatch_event_lag_seconds_count") == 0.0
    assert value(registry, "surgewatch_event_lag_seconds_sum") == 0.0
    # No watermark before the first event.
    assert value(registry, "surgewatch_watermark_seconds", stream="posts") is None


def test_record_posts_batch_exact_increments(registry: CollectorRegistry, metrics: Metrics) -> None:
    outcome = BatchOutcome(
        received=10,
        counted=5,
        late=2,
        rejected=[
            (0, Rejected(Reason.INVALID_JSON, "x")),
            (3, Rejected(Reason.INVALID_JSON, "y")),
            (7, Rejected(Reason.TOO_MANY_HASHTAGS, "z")),
        ],
        lag_bucket_counts=lag_counts(b0_1=2, b1_0=2, inf=1),
        lag_sum_seconds=100_003.5,
    )
    metrics.record_batch("posts", outcome)
    metrics.record_batch("posts", outcome)
    assert value(registry, "surgewatch_events_received_total", stream="posts") == 20.0
    assert value(registry, "surgewatch_events_late_total", stream="posts") == 4.0
    rejected = "surgewatch_events_rejected_total"
    assert value(registry, rejected, stream="posts", reason="invalid_json") == 4.0
    assert value(registry, rejected, stream="posts", reason="too_many_hashtags") == 2.0
    assert value(registry, rejected, stream="posts", reason="missing_field") == 0.0
    assert value(registry, "surgewatch_posts_total") == 10.0
    # Other stream untouched, no signup series.
    assert value(registry, "surgewatch_events_received_total", stream="signups") == 0.0
    assert value(registry, "surgewatch_events_late_total", stream="signups") == 0.0
    assert value(registry, rejected, stream="signups", reason="invalid_json") == 0.0
    assert value(registry, "surgewatch_signups_total", country="unknown") is None
    # Lag histogram got both batches.
    assert value(registry, "surgewatch_event_lag_seconds_count") == 10.0
    assert value(registry, "surgewatch_event_lag_seconds_sum") == 200_007.0


def test_record_signups_batch_by_country(registry: CollectorRegistry, metrics: Metrics) -> None:
    outcome = BatchOutcome(
        received=9,
        counted=7,
        late=1,
        rejected=[(4, Rejected(Reason.INVALID_FIELD, "country"))],
        counted_by_country={"US": 3, "DE": 1, "unknown": 2, "XK": 1},
        lag_bucket_counts=lag_counts(b5_0=7),
        lag_sum_seconds=21.0,
    )
    metrics.record_batch("signups", outcome)
    assert value(registry, "surgewatch_events_received_total", stream="signups") == 9.0
    assert value(registry, "surgewatch_events_late_total", stream="signups") == 1.0
    assert (
        value(
            registry, "surgewatch_events_rejected_total", stream="signups", reason="invalid_field"
        )
        == 1.0
    )
    assert value(registry, "surgewatch_signups_total", country="US") == 3.0
    assert value(registry, "surgewatch_signups_total", country="DE") == 1.0
    # A label outside ISO alpha-2 ∪ {unknown} is folded into unknown: the label set stays bounded.
    assert value(registry, "surgewatch_signups_total", country="unknown") == 3.0
    assert value(registry, "surgewatch_signups_total", country="XK") is None
    assert value(registry, "surgewatch_posts_total") == 0.0
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="5.0") == 7.0
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="2.5") == 0.0


def test_batch_without_counted_events_leaves_lag_alone(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    outcome = BatchOutcome(received=3, counted=0, late=3)
    metrics.record_batch("posts", outcome)
    assert value(registry, "surgewatch_events_late_total", stream="posts") == 3.0
    assert value(registry, "surgewatch_posts_total") == 0.0
    assert value(registry, "surgewatch_event_lag_seconds_count") == 0.0


def test_lag_histogram_buckets_are_cumulative(registry: CollectorRegistry) -> None:
    histogram = LagHistogram()
    registry.register(histogram)
    histogram.add(lag_counts(b0_1=1, b0_5=2, b60_0=3, b86400_0=1, inf=4), 90_500.25)
    histogram.add(lag_counts(b0_5=1), 0.3)
    expected = {
        "0.1": 1,
        "0.25": 1,
        "0.5": 4,
        "1.0": 4,
        "2.5": 4,
        "5.0": 4,
        "10.0": 4,
        "30.0": 4,
        "60.0": 7,
        "300.0": 7,
        "900.0": 7,
        "3600.0": 7,
        "21600.0": 7,
        "86400.0": 8,
        "+Inf": 12,
    }
    got = {le: value(registry, "surgewatch_event_lag_seconds_bucket", le=le) for le in expected}
    assert got == expected
    assert value(registry, "surgewatch_event_lag_seconds_count") == 12.0
    assert value(registry, "surgewatch_event_lag_seconds_sum") == pytest.approx(90_500.55)


def test_lag_histogram_custom_buckets_and_exposition(registry: CollectorRegistry) -> None:
    histogram = LagHistogram(buckets=[1, 10])
    registry.register(histogram)
    histogram.add([2, 0, 3], 40.0)
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="1.0") == 2.0
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="10.0") == 2.0
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="+Inf") == 5.0
    text = generate_latest(registry).decode()
    assert "# TYPE surgewatch_event_lag_seconds histogram" in text
    assert 'surgewatch_event_lag_seconds_bucket{le="+Inf"} 5.0' in text
    # Each scrape yields one fresh family: scraping twice does not double anything.
    generate_latest(registry)
    assert value(registry, "surgewatch_event_lag_seconds_count") == 5.0


def test_record_batch_from_a_real_ingest_outcome(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    import orjson

    from surgewatch.ingest import StreamIngest

    t0 = 1_700_000_040.0
    ingest = StreamIngest("signups", 60, 30, 2, 1)
    values = [
        orjson.dumps({"event_id": "1", "user_id": "u", "ts": t0 + 100, "country": "us"}),
        orjson.dumps({"event_id": "2", "user_id": "u", "ts": t0, "country": "us"}),  # late
        orjson.dumps({"event_id": "3", "user_id": "u", "ts": t0 + 101}),
        b"{",
    ]
    outcome, _ = ingest.process(0, values, 0, 3, None, t0 + 110.5)
    metrics.record_batch("signups", outcome)
    assert value(registry, "surgewatch_events_received_total", stream="signups") == 4.0
    assert value(registry, "surgewatch_events_late_total", stream="signups") == 1.0
    assert (
        value(registry, "surgewatch_events_rejected_total", stream="signups", reason="invalid_json")
        == 1.0
    )
    assert value(registry, "surgewatch_signups_total", country="US") == 1.0
    assert value(registry, "surgewatch_signups_total", country="unknown") == 1.0
    assert value(registry, "surgewatch_event_lag_seconds_count") == 2.0
    assert value(registry, "surgewatch_event_lag_seconds_sum") == pytest.approx(10.5 + 9.5)
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="5.0") == 0.0
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="10.0") == 1.0
    assert value(registry, "surgewatch_event_lag_seconds_bucket", le="30.0") == 2.0


def test_set_watermark_ignores_minus_infinity(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.set_watermark("posts", -math.inf)
    assert value(registry, "surgewatch_watermark_seconds", stream="posts") is None
    metrics.set_watermark("posts", 1_700_000_040.5)
    assert value(registry, "surgewatch_watermark_seconds", stream="posts") == 1_700_000_040.5
    metrics.set_watermark("posts", float("-inf"))
    assert value(registry, "surgewatch_watermark_seconds", stream="posts") == 1_700_000_040.5
    assert value(registry, "surgewatch_watermark_seconds", stream="signups") is None
