"""The pipeline without Kafka: window counts, surges and trend views of an event stream, in memory.

Runs exactly the worker's pure code — the partitioner ``replay`` uses, per-partition ingest,
routing, the counting store, the surge detectors and the aggregator — so its results equal what a
worker computes from a replay of the same events with the same settings. The one difference is
time: it never waits, and every window closes when the input ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from surgewatch.config import Settings
from surgewatch.downstream import Downstream, surge_params
from surgewatch.eventfile import EventRecord
from surgewatch.events.timestamps import parse_ts
from surgewatch.ingest import END_OF_TIME, STREAMS, BatchOutcome, Partial, StreamIngest
from surgewatch.partitioner import KafkaPartitioner
from surgewatch.trends.aggregate import TrendAggregator, TrendView
from surgewatch.trends.partition import Surge
from surgewatch.windows.counting import WindowCount

#: Events per input partition handed to ingest at a time (any size gives the same results).
BATCH_EVENTS = 4096


@dataclass(slots=True)
class StreamTotals:
    """What happened to one stream's events."""

    received: int = 0
    counted: int = 0
    late: int = 0
    rejected: int = 0


@dataclass(slots=True)
class OfflineResult:
    """Everything a run computed; ``view`` is the trend view once every window has closed."""

    window_counts: list[WindowCount] = field(default_factory=list)
    surges: list[Surge] = field(default_factory=list)
    view: TrendView = field(default_factory=TrendView)
    totals: dict[str, StreamTotals] = field(default_factory=dict)


class OfflinePipeline:
    """Feed :class:`EventRecord`s with :meth:`add`, then :meth:`finish` to close every window."""

    def __init__(
        self,
        settings: Settings,
        now: Callable[[], float] = time.time,
        *,
        batch_per_window: bool = False,
    ) -> None:
        """``batch_per_window``: hand ingest one batch per input partition and event-time window
        (instead of every :data:`BATCH_EVENTS`), so :attr:`on_batch` sees time advance window by
        window; the results are the same."""
        self.settings = settings
        self.now = now
        self.batch_per_window = batch_per_window
        self._batch_window: dict[tuple[str, int], int] = {}
        n = settings.partitions
        self.topic_of = {"posts": settings.posts_topic, "signups": settings.signups_topic}
        self.partitioner = KafkaPartitioner(
            {topic: list(range(n)) for topic in self.topic_of.values()}
        )
        self.ingests = {
            stream: StreamIngest(
                stream,
                settings.window_seconds,
                settings.grace_seconds,
                n,
                n,
                settings.trend_user_cap,
            )
            for stream in STREAMS
        }
        params = surge_params(settings)
        self.downstreams = [
            Downstream(
                p, n, settings.window_seconds, settings.grace_seconds, params, settings.top_k
            )
            for p in range(n)
        ]
        self.aggregator = TrendAggregator(params, settings.top_k)
        self.result = OfflineResult(totals={stream: StreamTotals() for stream in STREAMS})
        #: Called with ``(stream, outcome, input partition watermark)`` after each ingest batch.
        self.on_batch: Callable[[str, BatchOutcome, float], None] | None = None
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._offsets: dict[tuple[str, int], int] = {}

    def add(self, record: EventRecord) -> None:
        """One input record, placed on the partition a producer would pick."""
        stream = record.stream
        partition = self.partitioner.partition(self.topic_of[stream], record.key_bytes())
        slot = (stream, partition)
        if self.batch_per_window and isinstance(record.value, dict):
            seconds = parse_ts(record.value.get("ts"), END_OF_TIME)
            if seconds is not None:
                window = int(seconds // self.settings.window_seconds)
                if window != self._batch_window.get(slot, window) and slot in self._buffers:
                    self._process(stream, partition)
                self._batch_window[slot] = window
        buffer = self._buffers.setdefault(slot, [])
        buffer.append(record.value_bytes())
        if len(buffer) >= BATCH_EVENTS:
            self._process(stream, partition)

    def extend(self, records: Iterable[EventRecord]) -> None:
        """Many input records."""
        for record in records:
            self.add(record)

    def _process(self, stream: str, partition: int) -> None:
        values = self._buffers.pop((stream, partition), [])
        first = self._offsets.get((stream, partition), 0)
        self._offsets[(stream, partition)] = first + len(values)
        outcome, partials = self.ingests[stream].process(
            partition, values, first, first + len(values) - 1, None, self.now()
        )
        if self.on_batch is not None:
            clock = self.ingests[stream].watermarks.partitions[partition]
            self.on_batch(stream, outcome, clock.watermark_seconds)
        totals = self.result.totals[stream]
        totals.received += outcome.received
        totals.counted += outcome.counted
        totals.late += outcome.late
        totals.rejected += len(outcome.rejected)
        self._route(partials)

    def _route(self, partials: list[tuple[int, Partial]]) -> None:
        for dest, partial in partials:
            downstream = self.downstreams[dest]
            closed = downstream.apply(partial)
            self.result.window_counts.extend(closed)
            surges, message = downstream.conclude(closed)
            self.result.surges.extend(surges)
            if message is not None:
                self.result.surges.extend(self.aggregator.add(message))

    def finish(self) -> OfflineResult:
        """Process what is buffered, then let every input partition's watermark run out."""
        for stream, partition in list(self._buffers):
            self._process(stream, partition)
        for ingest in self.ingests.values():
            self._route(ingest.close_all(self.now()))
        self.result.view = self.aggregator.view
        return self.result


def compute(
    records: Iterable[EventRecord], settings: Settings, now: Callable[[], float] = time.time
) -> OfflineResult:
    """Window counts, surges and views of ``records`` (see :class:`OfflinePipeline`)."""
    pipeline = OfflinePipeline(settings, now)
    pipeline.extend(records)
    return pipeline.finish()
