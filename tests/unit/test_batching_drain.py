"""The batching fetch loop: a batch delivered across a rebalance leaves the new read floor alone."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from surgewatch.worker.batching import BatchingConsumer, FetchState, RecordBatch

TOPIC = TP("partials", 0)


class _Conductor:
    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def batch_handler_for(self, tp: TP) -> Any:
        return self.handler


def _consumer(handler: Any, fetches: list[list[int]]) -> Any:
    """A stand-in with what ``_drain_messages`` reads; it stops after the listed fetches."""
    stopped = asyncio.Event()
    app = SimpleNamespace(consumer_generation_id=0, monitor=None, should_stop=False)
    app.topics = _Conductor(handler)
    pending = list(fetches)

    async def wait_next_records(timeout: float) -> tuple[dict[TP, list[Any]], None]:
        if not pending:
            stopped.set()
            return {}, None
        offsets = pending.pop(0)
        return {TOPIC: [SimpleNamespace(offset=o, value=b"") for o in offsets]}, None

    return SimpleNamespace(
        app=app,
        transport=SimpleNamespace(app=app),
        callback=None,
        _read_offset=defaultdict(lambda: None),
        _stopped=stopped,
        diag=SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None),
        _wait_next_records=wait_next_records,
        should_stop=False,
        flow_active=True,
        _buffered_partitions=set(),
        fetch_state=lambda tp: FetchState(None, None),
        consumer_stopped_errors=(),
    )


def _drain(consumer: Any) -> None:
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    asyncio.run(BatchingConsumer._drain_messages(consumer, fetcher))


def test_a_batch_delivered_within_one_generation_moves_the_read_floor() -> None:
    delivered: list[RecordBatch] = []

    async def handler(batch: RecordBatch) -> None:
        delivered.append(batch)

    consumer = _consumer(handler, [[10, 11, 12]])
    _drain(consumer)
    assert [r.offset for r in delivered[0].records] == [10, 11, 12]
    assert consumer._read_offset[TOPIC] == 12


def test_a_rebalance_during_delivery_keeps_the_floor_its_seek_set() -> None:
    """The handler waits (the agent's queue is full) while the group rebalances and the seek puts
    the floor back at the committed offset 5; the batch fetched before must not move it to 12,
    or the records 5-11 read again after the seek would be filtered out and never applied."""
    consumer: Any = None

    async def handler(batch: RecordBatch) -> None:
        consumer.app.consumer_generation_id = 1  # the rebalance ...
        consumer._read_offset[TOPIC] = 5  # ... and its seek to the committed offset

    consumer = _consumer(handler, [[10, 11, 12]])
    _drain(consumer)
    assert consumer._read_offset[TOPIC] == 5
