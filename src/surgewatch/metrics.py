"""Metrics: every Prometheus series a worker exports, created in one place on an injected registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from surgewatch.events.countries import ISO_ALPHA2, UNKNOWN_COUNTRY
from surgewatch.events.model import Reason
from surgewatch.ingest import LAG_BUCKETS_SECONDS, METRIC_OF_STREAM, STREAMS, BatchOutcome
from surgewatch.labels import MAX_LABEL_CHARS, hashtag_label
from surgewatch.trends.aggregate import TrendView
from surgewatch.trends.checkpoint import LOAD_OUTCOMES

__all__ = ["MAX_LABEL_CHARS", "LagHistogram", "Metrics", "TrendCollector", "hashtag_label"]


class TrendCollector(Collector):
    """The trend series, built fresh from the current :class:`TrendView` on every scrape.

    A tag that leaves the top-K leaves ``/metrics`` with the next scrape. ``view`` returns ``None``
    on a worker that does not merge the trend view: it serves the families without samples, so
    summed over workers every series has exactly one owner.
    """

    def __init__(self, view: Callable[[], TrendView | None], top_k: int) -> None:
        self.view = view
        self.top_k = top_k

    def collect(self) -> Iterator[Metric]:
        """One set of families per scrape."""
        view = self.view() or TrendView()
        window = GaugeMetricFamily(
            "surgewatch_trend_window_start_seconds",
            "Start of the newest complete window the trend series describe, Unix seconds.",
        )
        top = GaugeMetricFamily(
            "surgewatch_top_hashtag_posts",
            f"Posts in the last complete window, for the top {self.top_k} hashtags.",
            labels=["hashtag"],
        )
        hashtag_score = GaugeMetricFamily(
            "surgewatch_hashtag_surge_score",
            f"Surge score of the (up to {self.top_k}) surging hashtags with the highest scores.",
            labels=["hashtag"],
        )
        signups = GaugeMetricFamily(
            "surgewatch_signups_window",
            "Signups in the last complete window, by country.",
            labels=["country"],
        )
        signup_score = GaugeMetricFamily(
            "surgewatch_signup_surge_score",
            "Surge score of the signups in the last complete window, by country.",
            labels=["country"],
        )
        signup_surging = GaugeMetricFamily(
            "surgewatch_signup_surging",
            "1 for each country whose signups are in a surge.",
            labels=["country"],
        )
        all_signups = GaugeMetricFamily(
            "surgewatch_all_signups_window", "Signups in the last complete window, all countries."
        )
        all_score = GaugeMetricFamily(
            "surgewatch_all_signups_surge_score", "Surge score of all signups together."
        )
        all_surging = GaugeMetricFamily(
            "surgewatch_all_signups_surging", "1 while all signups together are in a surge."
        )
        if view.window_start is not None:
            window.add_metric([], float(view.window_start))
        for tag, count in view.top_hashtags:
            top.add_metric([hashtag_label(tag)], float(count))
        for trend in view.surging_hashtags:
            hashtag_score.add_metric([hashtag_label(trend.key)], trend.score)
        for trend in view.signups:
            signups.add_metric([trend.key], float(trend.count))
            signup_score.add_metric([trend.key], trend.score)
            if trend.surging:
                signup_surging.add_metric([trend.key], 1.0)
        everyone = view.all_signups
        if everyone is not None:
            all_signups.add_metric([], float(everyone.count))
            all_score.add_metric([], everyone.score)
            all_surging.add_metric([], 1.0 if everyone.surging else 0.0)
        yield from (window, top, hashtag_score, signups, signup_score, signup_surging)
        yield from (all_signups, all_score, all_surging)


class LagHistogram(Collector):
    """``surgewatch_event_lag_seconds``: processing time minus event time, added a batch at a time."""

    name = "surgewatch_event_lag_seconds"

    def __init__(self, buckets: Sequence[float] = LAG_BUCKETS_SECONDS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum_seconds = 0.0

    def add(self, bucket_counts: Sequence[int], sum_seconds: float) -> None:
        """Add per-bucket (non-cumulative) counts; the last slot is above the largest bound."""
        counts = self.counts
        for index, value in enumerate(bucket_counts):
            counts[index] += value
        self.sum_seconds += sum_seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """One fresh family per scrape."""
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            cumulative.append((repr(float(bound)), running))
        running += self.counts[-1]
        cumulative.append(("+Inf", running))
        family = HistogramMetricFamily(
            self.name, "Processing time minus event time of counted events, seconds."
        )
        family.add_metric([], cumulative, self.sum_seconds)
        yield family


class Metrics:
    """The worker's metrics; ``registry`` is what ``/metrics`` serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "surgewatch_events_received", "Input events read, by stream.", ["stream"], registry=r
        )
        self.rejected = Counter(
            "surgewatch_events_rejected",
            "Input events rejected to the dead-letter topic, by stream and reason.",
            ["stream", "reason"],
            registry=r,
        )
        self.late = Counter(
            "surgewatch_events_late",
            "Input events whose window had already closed, by stream (counted in no window).",
            ["stream"],
            registry=r,
        )
        self.reread_skipped = Counter(
            "surgewatch_events_reread_skipped",
            "Input records read again after a rebalance and skipped: this worker had counted them.",
            ["stream"],
            registry=r,
        )
        self.posts = Counter("surgewatch_posts", "Posts counted in a window.", registry=r)
        self.signups = Counter(
            "surgewatch_signups",
            "Signups counted in a window, by country.",
            ["country"],
            registry=r,
        )
        self.watermark = Gauge(
            "surgewatch_watermark_seconds",
            "Event-time watermark of the input partitions this worker reads, Unix seconds.",
            ["stream"],
            registry=r,
        )
        self.lag = LagHistogram()
        r.register(self.lag)
        self.window_records = Counter(
            "surgewatch_window_records",
            "Final window-count records published, by metric.",
            ["metric"],
            registry=r,
        )
        self.windows_closed = Counter(
            "surgewatch_windows_closed", "Windows closed, by metric.", ["metric"], registry=r
        )
        self.open_windows = Gauge(
            "surgewatch_open_windows", "Windows held open, by metric.", ["metric"], registry=r
        )
        self.dropped_updates = Counter(
            "surgewatch_window_updates_dropped",
            "Counts that reached a window after it closed (only after a partition changed owner).",
            ["metric"],
            registry=r,
        )
        self.repeated_partials = Counter(
            "surgewatch_partials_repeated",
            "Routed partials left out because they had been applied already (re-sent by a "
            "partition's new owner after a worker stopped before committing).",
            registry=r,
        )
        self.lost_partials = Counter(
            "surgewatch_partials_lost",
            "Routed partials that never arrived although the broker had acknowledged them, by "
            "whether their input records were read back and recounted or could not be.",
            ["outcome"],
            registry=r,
        )
        self.restores = Counter(
            "surgewatch_partition_restores",
            "Downstream partitions taken over, by how their state was restored.",
            ["outcome"],
            registry=r,
        )
        self.surge_state_restores = Counter(
            "surgewatch_surge_state_restores",
            "Surge detectors of downstream partitions taken over from a log snapshot, by metric and "
            "what their local state (rocksdb:// only) gave: restored, none, stale, unreadable.",
            ["metric", "outcome"],
            registry=r,
        )
        self.surge_state_keys_restored = Counter(
            "surgewatch_surge_state_keys_restored",
            "Keys whose surge baselines were restored from local state at a takeover, by metric.",
            ["metric"],
            registry=r,
        )
        self.surges = Counter(
            "surgewatch_surges",
            "Surge starts and ends published, by metric and state.",
            ["metric", "state"],
            registry=r,
        )
        self._known_countries = ISO_ALPHA2 | {UNKNOWN_COUNTRY}
        for stream in STREAMS:
            self.received.labels(stream)
            self.late.labels(stream)
            self.reread_skipped.labels(stream)
            for reason in Reason:
                self.rejected.labels(stream, reason.value)
        for metric in METRIC_OF_STREAM.values():
            self.window_records.labels(metric)
            self.windows_closed.labels(metric)
            self.open_windows.labels(metric)
            self.dropped_updates.labels(metric)
            self.surge_state_keys_restored.labels(metric)
            for outcome in LOAD_OUTCOMES:
                self.surge_state_restores.labels(metric, outcome)
            for state in ("start", "end"):
                self.surges.labels(metric, state)

    def watch_trends(self, view: Callable[[], TrendView | None], top_k: int) -> None:
        """Serve the trend series of ``view`` (see :class:`TrendCollector`)."""
        self.registry.register(TrendCollector(view, top_k))

    def record_batch(self, stream: str, outcome: BatchOutcome) -> None:
        """Add one ingest batch's outcome."""
        self.received.labels(stream).inc(outcome.received)
        if outcome.late:
            self.late.labels(stream).inc(outcome.late)
        for _, rejection in outcome.rejected:
            self.rejected.labels(stream, rejection.reason.value).inc()
        if stream == "posts":
            if outcome.counted:
                self.posts.inc(outcome.counted)
        else:
            for country, count in outcome.counted_by_country.items():
                label = country if country in self._known_countries else UNKNOWN_COUNTRY
                self.signups.labels(label).inc(count)
        if outcome.counted:
            self.lag.add(outcome.lag_bucket_counts, outcome.lag_sum_seconds)

    def set_watermark(self, stream: str, watermark_seconds: float) -> None:
        """Publish a stream's watermark (nothing before its first event)."""
        if watermark_seconds != float("-inf"):
            self.watermark.labels(stream).set(watermark_seconds)
