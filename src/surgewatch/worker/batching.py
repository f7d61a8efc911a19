"""Batch delivery for Faust: the consumer hands agents a partition's fetched records in one piece.

Faust's stock fetch loop awaits a task pair per message (``wait_first(callback(message), ...)``)
and builds an event per message; measured here that caps an agent at about 5,000 events/s. Topics
made with :class:`BatchTopic` skip that path: :class:`BatchingConsumer` gives each fetched batch of
such a partition to the topic's handler in one call, the handler puts one :class:`RecordBatch` on
the agent's stream, and offsets are committed through :meth:`BatchingConsumer.mark_processed` once
the agent has handed everything derived from the batch to the producer. Consumer groups, partition
assignment, rebalancing, commits and the web server stay Faust's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, MutableSet
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

import faust
from faust.transport.conductor import Conductor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

#: Batches a topic may hold for its agent before the fetch loop waits: bounds memory.
MAX_QUEUED_BATCHES = 4


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Records fetched from one partition, in offset order (aiokafka ``ConsumerRecord``s)."""

    tp: TP
    records: list[Any]
    highwater: int | None
    #: Wall time of the fetch response that reported ``highwater``.
    highwater_wall_seconds: float | None
    #: The consumer generation it was fetched in: a batch from before a rebalance is stale.
    generation_id: int = 0


@dataclass(frozen=True, slots=True)
class FetchState:
    """A partition's end offset as the last fetch response reported it, and when that was.

    (The consumer's fetch position is deliberately not offered: it runs ahead of what the agents
    have processed while fetched batches wait in the queue.)
    """

    highwater: int | None
    highwater_wall_seconds: float | None


BatchHandler = Callable[[RecordBatch], Awaitable[None]]


class BatchTopic(faust.Topic):
    """A topic whose agent receives :class:`RecordBatch` objects instead of single events."""

    def batch_handler(self) -> BatchHandler:
        """Handler the consumer calls with each fetched batch of one of this topic's partitions."""
        queue = self.queue

        async def deliver(batch: RecordBatch) -> None:
            while queue.qsize() >= MAX_QUEUED_BATCHES:
                # Flow control, not synchronisation: the agent drains a batch every few ms.
                await asyncio.sleep(0.001)
            queue.put_nowait(batch)

        return deliver


class BatchingConductor(Conductor):
    """Routes partitions of :class:`BatchTopic` topics to their batch handlers."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._batch_handlers: dict[TP, BatchHandler] = {}

    def _build_handler(self, tp: TP, channels: MutableSet[Any]) -> Any:
        batch_channels = [c for c in channels if isinstance(c, BatchTopic)]
        if batch_channels:
            if len(channels) != 1:
                raise RuntimeError(f"{tp.topic}: a batch topic must have exactly one subscriber")
            self._batch_handlers[tp] = batch_channels[0].batch_handler()
        else:
            self._batch_handlers.pop(tp, None)
        return super()._build_handler(tp, channels)

    def batch_handler_for(self, tp: TP) -> BatchHandler | None:
        """The batch handler of ``tp``, if its topic is a batch topic."""
        return self._batch_handlers.get(tp)


class BatchingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with a configurable fetch wait (Faust fixes it at 1.5 s)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer

    async def _commit(self, offsets: Any) -> bool:
        done = bool(await super()._commit(offsets))
        if done:
            confirmed = cast(BatchingConsumer, self.consumer).confirmed_commits
            for tp, offset in offsets.items():
                if offset > confirmed.get(tp, -1):
                    confirmed[tp] = offset
        return done


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with a fetch loop that delivers batch topics a batch at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._processed_offsets: dict[TP, int] = {}
        #: Offsets the broker has acknowledged as committed, per partition.
        self.confirmed_commits: dict[TP, int] = {}

    def _new_consumer_thread(self) -> BatchingConsumerThread:
        return BatchingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def mark_processed(self, tp: TP, next_offset: int) -> None:
        """Offsets before ``next_offset`` of ``tp`` are done with and may be committed."""
        if next_offset > self._processed_offsets.get(tp, -1):
            self._processed_offsets[tp] = next_offset

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        seen = set()
        for tp in super()._filter_tps_with_pending_acks(topics):
            seen.add(tp)
            yield tp
        for tp in list(self._processed_offsets):
            if tp not in seen and (topics is None or tp in topics or tp.topic in topics):
                yield tp

    def _new_offset(self, tp: TP) -> int | None:
        if tp in self._processed_offsets:
            return self._processed_offsets[tp]
        return cast(int | None, super()._new_offset(tp))

    def fetch_state(self, tp: TP) -> FetchState:
        """End offset of ``tp`` from the last fetch response, and that response's wall time."""
        try:
            client = self._thread._ensure_consumer()
            # aiokafka keeps these per assigned partition; they are plain attribute reads.
            state = client._subscription.subscription.assignment.state_value(tp)
        except (AssertionError, AttributeError, KeyError):  # not (or no longer) assigned
            return FetchState(None, None)
        if state is None:
            return FetchState(None, None)
        polled_ms = state.timestamp
        return FetchState(state.highwater, polled_ms / 1000.0 if polled_ms is not None else None)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        conductor = cast(BatchingConductor, self.app.topics)
        callback = self.callback
        read_offset = self._read_offset
        consumer_should_stop = self._stopped.is_set
        monitor = self.app.monitor
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active_partitions = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                generation_id = self.app.consumer_generation_id
                for tp, tp_records in records.items():
                    if self.app.consumer_generation_id != generation_id or not self.flow_active:
                        break
                    if not (
                        active_partitions is None
                        or tp in active_partitions
                        or tp in self._buffered_partitions
                    ):
                        continue
                    floor = read_offset[tp]
                    if floor is not None:
                        tp_records = [r for r in tp_records if r.offset >= floor]
                    if not tp_records:
                        continue
                    handler = conductor.batch_handler_for(tp)
                    if handler is not None:
                        if monitor is not None:
                            # What Faust's stream would record per event: its stall check
                            # (stream_processing_timeout) reads it.
                            monitor.stream_inbound_time[tp] = monotonic()
                        known = self.fetch_state(tp)
                        await handler(
                            RecordBatch(
                                tp,
                                tp_records,
                                known.highwater,
                                known.highwater_wall_seconds,
                                generation_id,
                            )
                        )
                    else:
                        for record in tp_records:
                            await callback(self._to_message(tp, record))
                    if self.app.consumer_generation_id != generation_id:
                        # A rebalance while the batch waited for room in the queue: its seek put
                        # reading back at the committed offset, and this stale batch must not
                        # move the floor past it (the records in between would be skipped).
                        break
                    read_offset[tp] = tp_records[-1].offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class BatchingTransport(faust_aiokafka.Transport):
    """The aiokafka transport with :class:`BatchingConsumer`."""

    Consumer = BatchingConsumer


class BatchingApp(faust.App):
    """A Faust app whose batch topics are delivered by :class:`BatchingConsumer`."""

    #: Passed to the consumer: how long the broker may hold a fetch with no new data.
    fetch_max_wait_ms = 500

    def _new_transport(self) -> Any:
        return BatchingTransport(self.conf.broker_consumer, self)

    def _new_conductor(self) -> Any:
        return BatchingConductor(app=self, beacon=None)
