"""The Faust app: topics, the ingest and counting agents, the watermark timer and ``/metrics``.

Data flow: ``posts``/``signups`` → ingest agents (parse, lateness, pre-aggregate; rejects to the
dead-letter topic) → ``{app_id}-window-partials`` partitioned by key owner → counting agent
(:class:`~surgewatch.windows.counting.WindowStore`) → one record per key and closed window on the
window-counts topic. The counting agent also scores what closed (surges to the surges topic) and
sends a summary of each window to ``{app_id}-trend-summaries``; that topic has one partition, so one
worker merges the summaries into the app-wide trend view that its ``/metrics`` serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
import orjson
from faust.types import TP
from prometheus_client import generate_latest

from surgewatch.config import Settings
from surgewatch.downstream import Downstream, surge_params
from surgewatch.ingest import (
    METRIC_OF_STREAM,
    POSTS,
    SIGNUPS,
    STREAM_OF_METRIC,
    Partial,
    StreamIngest,
    owner_partition,
)
from surgewatch.metrics import Metrics
from surgewatch.trends.aggregate import TrendAggregator, TrendView
from surgewatch.trends.partition import SummaryMessage, Surge
from surgewatch.windows.counting import WindowCount
from surgewatch.windows.watermark import FRESH_SECONDS
from surgewatch.worker.batching import BatchingApp, BatchingConsumer, BatchTopic, RecordBatch
from surgewatch.worker.recount import InputReader
from surgewatch.worker.snapshots import Restore, encode_chunks, is_chunk

if TYPE_CHECKING:
    from surgewatch.worker.local_state import LocalSurgeState

log = logging.getLogger("surgewatch.worker")

#: How often idle partitions are checked and their watermarks sent downstream, seconds.
WATERMARK_TICK_SECONDS = 0.5
#: Every this many ticks every input watermark is re-announced, so a new owner learns them all.
REANNOUNCE_EVERY_TICKS = 10

# This broker join wait is half the session timeout; 6 s keeps rebalances short everywhere.
SESSION_TIMEOUT_SECONDS = 6.0
HEARTBEAT_INTERVAL_SECONDS = 1.0
MAX_POLL_RECORDS = 10_000
#: How often offsets are committed, seconds.
COMMIT_INTERVAL_SECONDS = 0.5
#: How far an input partition's reading may run ahead of its last acknowledged commit, records.
#: This bounds what a worker that dies can have sent without committing: its successor sends that
#: many records (plus one batch) granularly, so the overlap is removed record by record.
UNCOMMITTED_LIMIT = 40_000
GRANULAR_RECORDS = UNCOMMITTED_LIMIT + MAX_POLL_RECORDS
#: How often a downstream partition snapshots its state into the partials topic, seconds.
SNAPSHOT_SECONDS = 5.0
#: How long a partials partition's state is kept after it was revoked, seconds: a rebalance that
#: gives it back meanwhile continues from it.
FORGET_AFTER_SECONDS = 30.0
#: Records a new owner holds back while it looks for the snapshot it starts from; past this it
#: gives up on the snapshot and starts empty (logged and counted).
RESTORE_MAX_HELD = 2_000_000


def faust_credentials(settings: Settings) -> Any:
    """Faust's form of the Kafka TLS/SASL settings (``None`` for plaintext)."""
    kwargs = settings.kafka_security_kwargs()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    ssl_context = kwargs.get("ssl_context")
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    mechanism = settings.kafka_sasl_mechanism or "PLAIN"
    if mechanism == "GSSAPI":
        return faust.GSSAPICredentials(ssl_context=ssl_context)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=mechanism,
        ssl_context=ssl_context,
    )


def dlq_headers(stream: str, reason: str, detail: str, partition: int, offset: int) -> list[Any]:
    """Headers of a dead-letter record: why it was rejected and where it came from."""
    return [
        ("reason", reason.encode()),
        ("detail", detail.encode()),
        ("stream", stream.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


class Pipeline:
    """State and agents of one worker; everything time-dependent reads the injected ``clock``."""

    def __init__(
        self,
        app: BatchingApp,
        settings: Settings,
        metrics: Metrics,
        partition_counts: dict[str, int],
        clock: Callable[[], float],
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.downstream_partitions = partition_counts[settings.partials_topic]
        self.window_counts_partitions = partition_counts[settings.window_counts_topic]
        self.topic_of_stream = {POSTS: settings.posts_topic, SIGNUPS: settings.signups_topic}
        self.ingests = {
            stream: StreamIngest(
                stream,
                settings.window_seconds,
                settings.grace_seconds,
                self.downstream_partitions,
                partition_counts[topic],
                settings.trend_user_cap,
            )
            for stream, topic in self.topic_of_stream.items()
        }
        self.surge_params = surge_params(settings)
        self.surges_partitions = partition_counts[settings.surges_topic]
        self.dlq_partitions = partition_counts[settings.dlq_topic]
        #: The trend view's merger, while this worker reads the summaries topic.
        self.aggregator: TrendAggregator | None = None
        self._aggregated: int | None = None
        fresh_seconds = max(FRESH_SECONDS, 4 * settings.fetch_max_wait_ms / 1000)
        for state in self.ingests.values():
            state.watermarks.fresh_seconds = fresh_seconds
        self.downstreams: dict[int, Downstream] = {}
        #: Next offset of each partials or summaries partition that this worker has applied.
        self._applied: dict[TP, int] = {}
        #: Batches of a partition whose sends are not all acknowledged, oldest first: offsets are
        #: committed only over a run of finished batches.
        self._pending: dict[TP, deque[list[Any]]] = {}
        #: Held while a stream's partials are computed and sent, so a watermark heartbeat from the
        #: timer can never overtake the counts it covers.
        self._stream_locks = {stream: asyncio.Lock() for stream in self.ingests}
        self._ticks = 0
        self._crash: asyncio.Future[Any] | None = None
        #: Input partition -> (consumer generation, first offset read in it, end of the granular
        #: zone): where this ownership started.
        self._owned: dict[TP, tuple[int, int, int]] = {}
        #: Partials partitions being taken over: their snapshot and the records held back.
        self._restoring: dict[TP, Restore] = {}
        #: Partials partition -> wall time of its last snapshot and the offset it was taken at.
        self._snapshotted: dict[TP, tuple[float, int]] = {}
        #: Partials partitions not assigned at the last ticks -> since when (wall time).
        self._away_since: dict[TP, float] = {}
        #: Checkpoints of the surge detectors in a local RocksDB (``rocksdb://`` only).
        self.local_state: LocalSurgeState | None = None
        #: Reads input records back when partials were lost on the way (see :meth:`_recount`).
        self.input_reader = InputReader(settings)

    @property
    def consumer(self) -> BatchingConsumer:
        return self.app.consumer  # type: ignore[no-any-return]

    def _commit_after(self, tp: TP, next_offset: int | None, futures: list[Awaitable[Any]]) -> None:
        """Let ``tp`` commit up to ``next_offset`` once this and every earlier batch is acknowledged
        (``None``: commit nothing new, but hold later commits until these sends are acknowledged).

        A failed send stops the worker: its offsets stay uncommitted, and the batch is read again
        after a restart instead of being skipped by a later batch's commit.
        """
        pending = self._pending.setdefault(tp, deque())
        entry = [next_offset, not futures]
        pending.append(entry)

        def release() -> None:
            while pending and pending[0][1]:
                offset = pending.popleft()[0]
                if offset is not None:
                    self.consumer.mark_processed(tp, offset)

        if not futures:
            release()
            return

        def done(result: asyncio.Future[Any]) -> None:
            if result.cancelled():
                return
            error = result.exception()
            if error is not None:
                log.critical("a send derived from %s failed: %r; stopping the worker", tp, error)
                self._crash = asyncio.ensure_future(self.app.crash(error))
                return
            entry[1] = True
            release()

        asyncio.gather(*futures).add_done_callback(done)

    def _is_stale(self, batch: RecordBatch) -> bool:
        """Fetched before the latest rebalance: the partition may belong to another worker now."""
        return bool(batch.generation_id != self.app.consumer_generation_id)

    async def _send_partials(self, partials: list[tuple[int, Partial]]) -> list[Awaitable[Any]]:
        producer = self.app.producer
        topic = self.settings.partials_topic
        return [
            await producer.send(topic, None, partial.encode(), dest, None, None)
            for dest, partial in partials
        ]

    async def ingest(self, stream: str, batch: RecordBatch) -> None:
        """One batch of an input partition: count, route partials, dead-letter the rejects."""
        if self._is_stale(batch):
            return
        granular = await self._hold_back(batch)
        if self._is_stale(batch):
            return
        async with self._stream_locks[stream]:
            await self._ingest(stream, batch, granular)

    async def _hold_back(self, batch: RecordBatch) -> bool:
        """Wait until the batch is within :data:`UNCOMMITTED_LIMIT` of the acknowledged commit;
        whether it lies in this ownership's granular zone."""
        tp, first = batch.tp, batch.records[0].offset
        owned = self._owned.get(tp)
        if owned is None or owned[0] != batch.generation_id:
            owned = self._owned[tp] = (batch.generation_id, first, first + GRANULAR_RECORDS)
        confirmed = self.consumer.confirmed_commits
        while first - max(confirmed.get(tp, owned[1]), owned[1]) > UNCOMMITTED_LIMIT:
            if self._is_stale(batch):
                break
            # Flow control: commits land every COMMIT_INTERVAL_SECONDS.
            await asyncio.sleep(0.005)
        return bool(first < owned[2])

    async def _ingest(self, stream: str, batch: RecordBatch, granular: bool = False) -> None:
        now = self.clock()
        state = self.ingests[stream]
        records = batch.records
        clock = state.watermarks.partitions.get(batch.tp.partition)
        if clock is not None and clock.next_offset is not None:
            # After a rebalance Faust seeks back to the committed offset; what this worker has
            # already counted must not be counted twice.
            fresh = [r for r in records if r.offset >= clock.next_offset]
            if len(fresh) < len(records):
                self.metrics.reread_skipped.labels(stream).inc(len(records) - len(fresh))
            records = fresh
            if not records:
                return
        outcome, partials = state.process(
            batch.tp.partition,
            [record.value for record in records],
            records[0].offset,
            records[-1].offset,
            batch.highwater,
            now,
            batch.highwater_wall_seconds,
            [record.offset for record in records] if granular else None,
        )
        self.metrics.record_batch(stream, outcome)
        producer = self.app.producer
        futures: list[Awaitable[Any]] = []
        # A dead letter goes to the partition numbered like its input partition, so it keeps the
        # input's order and, with equal partition counts, each dead-letter partition has a single
        # writer: Faust assigns equal partition numbers of both input topics to one worker. (The
        # embedded broker can drop one of two writes that reach a partition at the same moment.)
        dlq_partition = batch.tp.partition % self.dlq_partitions
        for index, rejection in outcome.rejected:
            record = records[index]
            headers = dlq_headers(
                stream,
                rejection.reason.value,
                rejection.detail,
                record.partition,
                record.offset,
            )
            futures.append(
                await producer.send(
                    self.settings.dlq_topic, record.key, record.value, dlq_partition, None, headers
                )
            )
        futures.extend(await self._send_partials(partials))
        self.metrics.set_watermark(stream, state.watermarks.stream_watermark_seconds())
        self._commit_after(batch.tp, records[-1].offset + 1, futures)

    async def _publish_windows(self, closed: list[WindowCount], owner: int) -> list[Awaitable[Any]]:
        """Send window records a producer batch per partition (one ``send`` per record is the
        bottleneck otherwise). A key's windows all go to one partition: CRC-32 of ``metric|key``."""
        if not closed:
            return []
        topic = self.settings.window_counts_topic
        partitions = self.window_counts_partitions
        by_partition: dict[int, list[WindowCount]] = {}
        if partitions == self.downstream_partitions:
            # Same count as the partials topic: every key here is owned by partition ``owner``.
            by_partition[owner] = closed
        else:
            for window in closed:
                partition = owner_partition(window.metric, window.key, partitions)
                by_partition.setdefault(partition, []).append(window)
        # Faust's producer wraps an aiokafka producer; its batch API is the fast path.
        producer = self.app.producer._ensure_producer()
        futures: list[Awaitable[Any]] = []
        dumps = orjson.dumps
        for partition, windows in by_partition.items():
            batch = producer.create_batch()
            for window in windows:
                key = window.kafka_key.encode()
                value = dumps(window.as_dict())
                timestamp_ms = window.window_end * 1000
                if batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=timestamp_ms)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _publish_surges(self, surges: list[Surge]) -> list[Awaitable[Any]]:
        """Surge starts and ends; a key's records share a partition, so they stay in order."""
        producer = self.app.producer
        futures: list[Awaitable[Any]] = []
        size = self.settings.window_seconds
        for surge in surges:
            key = surge.kafka_key.encode()
            partition = zlib.crc32(key) % self.surges_partitions
            timestamp_ms = (surge.event.window_start + size) * 1000
            value = orjson.dumps(surge.as_dict())
            futures.append(
                await producer.send(
                    self.settings.surges_topic, key, value, partition, timestamp_ms, None
                )
            )
            self.metrics.surges.labels(surge.metric, surge.event.state).inc()
        return futures

    def _unapplied(self, batch: RecordBatch) -> list[Any]:
        """The batch's records this worker has not applied yet (a rebalance seeks back)."""
        applied = self._applied.get(batch.tp)
        if applied is None:
            return list(batch.records)
        return [r for r in batch.records if r.offset >= applied]

    def _new_downstream(self, partition: int) -> Downstream:
        settings = self.settings
        downstream = self.downstreams[partition] = Downstream(
            partition,
            self.downstream_partitions,
            settings.window_seconds,
            settings.grace_seconds,
            self.surge_params,
            settings.top_k,
            # Every worker writes to the one summaries partition (see Downstream.conclude).
            resend_summaries=True,
        )
        return downstream

    def _take_over(self, batch: RecordBatch) -> list[Any]:
        """The records of a partials batch to apply now.

        A partition this worker has been applying continues where it was. Otherwise (a new
        owner, or one that lost the partition meanwhile) the batch starts at the committed offset,
        where a snapshot was taken: records are held back until the snapshot's chunks have been
        read, then the state is restored and the held records are applied.
        """
        tp, partition = batch.tp, batch.tp.partition
        restore = self._restoring.get(tp)
        if restore is not None and batch.records[0].offset != restore.next_offset:
            # Read again from the committed offset (the group rebalanced): start over there.
            del self._restoring[tp]
            restore = None
        if restore is None:
            applied = self._applied.get(tp)
            first = batch.records[0].offset
            if partition in self.downstreams and applied is not None and first <= applied:
                return self._unapplied(batch)
            self._applied.pop(tp, None)
            self._snapshotted[tp] = (self.clock(), first)
            if first == 0:  # nothing was ever committed: no snapshot to start from
                fresh = self._new_downstream(partition)
                if self.local_state is not None:
                    self.local_state.take_over(fresh, from_snapshot=False)
                return list(batch.records)
            self.downstreams.pop(partition, None)
            restore = self._restoring[tp] = Restore(first)
        for record in batch.records:
            restore.add(record)
        state = restore.state()
        if state is None:
            if len(restore.held) <= RESTORE_MAX_HELD:
                return []
            log.error(
                "partials partition %d: no snapshot at offset %d within %d records; starting empty",
                partition,
                restore.offset,
                len(restore.held),
            )
            self.metrics.restores.labels("no_snapshot").inc()
        downstream = self._new_downstream(partition)
        if state is not None:
            downstream.import_state(state)
            self.metrics.restores.labels("snapshot").inc()
            log.info(
                "partials partition %d: restored the snapshot at offset %d (%d open windows)",
                partition,
                restore.offset,
                sum(downstream.store.open_windows(m) for m in METRIC_OF_STREAM.values()),
            )
        if self.local_state is not None:
            self.local_state.take_over(downstream, from_snapshot=state is not None)
        del self._restoring[tp]
        return restore.held

    async def count(self, batch: RecordBatch) -> None:
        """One batch of routed partials: add them up, publish the windows that closed, score them."""
        if self._is_stale(batch):
            return
        settings = self.settings
        partition = batch.tp.partition
        records = self._take_over(batch)
        if not records:
            if batch.tp not in self._restoring:
                self._applied[batch.tp] = max(
                    self._applied.get(batch.tp, 0), batch.records[-1].offset + 1
                )
            return
        downstream = self.downstreams[partition]
        futures: list[Awaitable[Any]] = []
        closed: list[WindowCount] = []
        repeats = downstream.duplicates
        for record in records:
            if is_chunk(record.value):
                continue
            try:
                partial = Partial.decode(record.value)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping unreadable partial at %s@%s: %s", batch.tp, record.offset, exc)
                continue
            lost = downstream.missing(partial)
            if lost is not None and await self._recount(downstream, partial, lost, closed):
                continue
            closed.extend(self._apply(downstream, partial))
        if downstream.duplicates > repeats:
            self.metrics.repeated_partials.inc(downstream.duplicates - repeats)
        futures.extend(await self._publish_windows(closed, partition))
        surges, message = downstream.conclude(closed)
        futures.extend(await self._publish_surges(surges))
        if message is not None:
            futures.append(
                await self.app.producer.send(
                    settings.summaries_topic, None, message.encode(), 0, None, None
                )
            )
        if self.local_state is not None:
            # Stored once what this close produced is acknowledged: never ahead of its records.
            self.local_state.checkpoint(downstream, list(futures))
        records_by_metric: Counter[str] = Counter()
        windows_by_metric: dict[str, set[int]] = {}
        for window in closed:
            records_by_metric[window.metric] += 1
            windows_by_metric.setdefault(window.metric, set()).add(window.window_start)
        for metric, starts in windows_by_metric.items():
            self.metrics.windows_closed.labels(metric).inc(len(starts))
            self.metrics.window_records.labels(metric).inc(records_by_metric[metric])
        for metric in METRIC_OF_STREAM.values():
            self.metrics.open_windows.labels(metric).set(
                sum(d.store.open_windows(metric) for d in self.downstreams.values())
            )
        applied = self._applied[batch.tp] = batch.records[-1].offset + 1
        self._commit_after(
            batch.tp, await self._snapshot(batch.tp, downstream, applied, futures), futures
        )

    def _apply(self, downstream: Downstream, partial: Partial) -> list[WindowCount]:
        """Apply one partial; the window records it closed."""
        store = downstream.store
        before = store.dropped_updates(partial.metric)
        closed = downstream.apply(partial)
        dropped = store.dropped_updates(partial.metric) - before
        if dropped:
            self.metrics.dropped_updates.labels(partial.metric).inc(dropped)
        return closed

    async def _recount(
        self,
        downstream: Downstream,
        partial: Partial,
        lost: tuple[int, int, bool],
        closed: list[WindowCount],
    ) -> bool:
        """Count the input offsets whose partials never reached ``downstream`` (see
        :meth:`~surgewatch.downstream.Downstream.missing`) from the input topic, adding the
        windows that closed to ``closed``; whether that covered ``partial`` too.

        The embedded broker can lose one of two writes that reach a partition at the same moment
        and acknowledge both; this is how no count goes with it.
        """
        first, last, replaces = lost
        metric, source = partial.metric, partial.source_partition
        stream = STREAM_OF_METRIC[metric]
        topic = self.topic_of_stream[stream]
        records = await self.input_reader.read(topic, source, first, last)
        if records is None:
            self.metrics.lost_partials.labels("unrecoverable").inc()
            log.error(
                "partials partition %d: the partials of %s[%d] offsets %d-%d never arrived, and "
                "those input records could not be read back: their counts are missing",
                downstream.partition,
                topic,
                source,
                first,
                last,
            )
            return False
        settings = self.settings
        counter = StreamIngest(
            stream,
            settings.window_seconds,
            settings.grace_seconds,
            self.downstream_partitions,
            partial.source_partitions,
            settings.trend_user_cap,
        )
        watermark = downstream.store.source_watermark_seconds(metric, source)
        for recounted in counter.recount(
            source, downstream.partition, records, first, last, watermark, self.clock()
        ):
            closed.extend(self._apply(downstream, recounted))
        if not records:
            # Offsets that hold no record (transaction markers) look the same; nothing was lost.
            return replaces
        self.metrics.lost_partials.labels("recounted").inc()
        log.warning(
            "partials partition %d: the partials of %s[%d] offsets %d-%d never arrived (the "
            "broker acknowledged and lost them); recounted %d input records",
            downstream.partition,
            topic,
            source,
            first,
            last,
            len(records),
        )
        return replaces

    async def _snapshot(
        self, tp: TP, downstream: Downstream, applied: int, futures: list[Awaitable[Any]]
    ) -> int | None:
        """Every :data:`SNAPSHOT_SECONDS`, write the partition's state into its partials partition
        (adding the sends to ``futures``); the offset it was taken at, which may be committed once
        they are acknowledged."""
        now = self.clock()
        # Set when this worker took the partition over (see _take_over).
        last_time, last_offset = self._snapshotted[tp]
        if now - last_time < SNAPSHOT_SECONDS or applied == last_offset:
            return None
        producer = self.app.producer
        for chunk in encode_chunks(applied, downstream.export_state()):
            futures.append(
                await producer.send(
                    self.settings.partials_topic, None, chunk, tp.partition, None, None
                )
            )
        self._snapshotted[tp] = (now, applied)
        return applied

    async def aggregate(self, batch: RecordBatch) -> None:
        """One batch of window summaries: merge them into the trend view; all-signups surges."""
        if self._is_stale(batch):
            return
        records = self._unapplied(batch)
        if not records:
            return
        if self.aggregator is None:
            self.aggregator = TrendAggregator(self.surge_params, self.settings.top_k)
        surges: list[Surge] = []
        for record in records:
            try:
                message = SummaryMessage.decode(record.value)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping unreadable summary at %s@%s: %s", batch.tp, record.offset, exc)
                continue
            surges.extend(self.aggregator.add(message))
        futures = await self._publish_surges(surges)
        self._applied[batch.tp] = records[-1].offset + 1
        self._commit_after(batch.tp, records[-1].offset + 1, futures)

    def trend_view(self) -> TrendView | None:
        """The app-wide trend view, on the worker that merges it (``None`` elsewhere)."""
        aggregator = self.aggregator
        return aggregator.view if aggregator is not None else None

    async def tick(self) -> None:
        """Track assignment, mark idle partitions, and send watermark heartbeats downstream."""
        now = self.clock()
        self._ticks += 1
        force = self._ticks % REANNOUNCE_EVERY_TICKS == 0
        consumer = self.consumer
        assignment = consumer.assignment()
        for stream, topic in self.topic_of_stream.items():
            state = self.ingests[stream]
            owned = {tp.partition for tp in assignment if tp.topic == topic}
            async with self._stream_locks[stream]:
                for partition in list(state.watermarks.partitions):
                    if partition not in owned:
                        state.revoke(partition)
                for partition in owned:
                    state.watermarks.assign(partition, now)
                    known = consumer.fetch_state(TP(topic, partition))
                    state.watermarks.set_highwater(
                        partition, known.highwater, known.highwater_wall_seconds
                    )
                await self._send_partials(state.heartbeats(now, force=force))
            self.metrics.set_watermark(stream, state.watermarks.stream_watermark_seconds())
        # A partials partition's state: its Downstream, how far it was applied, a takeover in
        # progress and its last snapshot; all of it goes with the partition, once it has been
        # away for a while. A rebalance revokes every partition and may give one straight back,
        # and reading need not go back to a snapshot then: the state must still be there.
        partials = self.settings.partials_topic
        gone = {TP(partials, partition) for partition in self.downstreams}
        gone.update(
            tp for held in (self._applied, self._restoring, self._snapshotted) for tp in held
        )
        for tp in gone:
            if tp.topic != partials:
                continue
            if tp in assignment:
                self._away_since.pop(tp, None)
                continue
            if now - self._away_since.setdefault(tp, now) >= FORGET_AFTER_SECONDS:
                self._away_since.pop(tp)
                self.downstreams.pop(tp.partition, None)
                self._applied.pop(tp, None)
                self._restoring.pop(tp, None)
                self._snapshotted.pop(tp, None)
                if self.local_state is not None:
                    self.local_state.release(tp.partition)
        for tp in [tp for tp in self._owned if tp not in assignment]:
            del self._owned[tp]
        summaries = TP(self.settings.summaries_topic, 0)
        if summaries not in assignment and self.aggregator is not None:
            self.aggregator = None
            self._applied.pop(summaries, None)


def create_app(
    settings: Settings,
    metrics: Metrics,
    partition_counts: dict[str, int],
    *,
    clock: Callable[[], float] = time.time,
    data_dir: Path | None = None,
) -> tuple[BatchingApp, Pipeline]:
    """Build the Faust app and its pipeline; ``partition_counts`` comes from :func:`ensure_topics`."""
    app = BatchingApp(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=faust_credentials(settings),
        store=settings.store,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        broker_session_timeout=SESSION_TIMEOUT_SECONDS,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_SECONDS,
        broker_max_poll_records=MAX_POLL_RECORDS,
        broker_commit_interval=COMMIT_INTERVAL_SECONDS,
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        # A dead letter is re-sent whole: leave room for a value at Kafka's default 1 MiB limit.
        producer_max_request_size=2 * 1024 * 1024,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_in_thread=False,
        datadir=str(data_dir) if data_dir else None,
        topic_disable_leader=True,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    pipeline = Pipeline(app, settings, metrics, partition_counts, clock)
    if settings.store.startswith("rocksdb://"):
        # Imported here: memory:// never loads rocksdict.
        from surgewatch.worker.local_state import LocalSurgeState

        pipeline.local_state = LocalSurgeState.open(Path(app.conf.tabledir), metrics)

    def batch_topic(name: str) -> BatchTopic:
        return BatchTopic(
            app,
            topics=[name],
            partitions=partition_counts[name],
            key_serializer="raw",
            value_serializer="raw",
        )

    def ingest_agent(stream: str) -> Callable[[Any], Awaitable[None]]:
        async def agent(batches: Any) -> None:
            async for batch in batches:
                await pipeline.ingest(stream, batch)

        agent.__name__ = agent.__qualname__ = f"ingest_{stream}"
        return agent

    app.agent(batch_topic(settings.posts_topic), name="ingest-posts")(ingest_agent(POSTS))
    app.agent(batch_topic(settings.signups_topic), name="ingest-signups")(ingest_agent(SIGNUPS))

    async def count_windows(batches: Any) -> None:
        async for batch in batches:
            await pipeline.count(batch)

    app.agent(batch_topic(settings.partials_topic), name="count-windows")(count_windows)

    async def aggregate_trends(batches: Any) -> None:
        async for batch in batches:
            await pipeline.aggregate(batch)

    app.agent(batch_topic(settings.summaries_topic), name="aggregate-trends")(aggregate_trends)
    metrics.watch_trends(pipeline.trend_view, settings.top_k)

    async def watermark_timer() -> None:
        await pipeline.tick()

    @app.task
    async def quiet_client_logs() -> None:
        # The worker's log level can leave aiokafka at DEBUG: a log record per produced message.
        client_log = logging.getLogger("aiokafka")
        client_log.setLevel(max(client_log.getEffectiveLevel(), logging.INFO))

    app.timer(interval=WATERMARK_TICK_SECONDS, name="watermarks")(watermark_timer)

    @app.on_before_shutdown.connect
    async def close_input_reader(sender: Any, **kwargs: Any) -> None:
        await pipeline.input_reader.close()

    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")

    app.page("/metrics")(metrics_page)
    return app, pipeline
