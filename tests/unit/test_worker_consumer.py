"""The worker's consumer as Faust builds it: how much it fetches and hands over at a time."""

from __future__ import annotations

import asyncio

from surgewatch.config import load_settings
from surgewatch.metrics import Metrics
from surgewatch.worker.app import MAX_FETCH_BYTES_PER_PARTITION, MAX_POLL_RECORDS, create_app
from surgewatch.worker.topics import partitions_of, worker_topics


async def _consumer_settings() -> tuple[int, int, int]:
    """The worker consumer's fetch settings, from the aiokafka client Faust builds (not started)."""
    settings = load_settings(fetch_max_wait_ms=300)
    counts = {name: partitions_of(settings, name) for name in worker_topics(settings)}
    app, _ = create_app(settings, Metrics(), counts)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        # aiokafka keeps them as given; the fetcher it builds at start() reads these attributes.
        return (
            consumer._max_partition_fetch_bytes,
            consumer._max_poll_records,
            consumer._fetch_max_wait_ms,
        )
    finally:
        await consumer.stop()


def test_the_consumer_fetches_a_bounded_share_of_each_partition() -> None:
    fetch_bytes, poll_records, wait_ms = asyncio.run(_consumer_settings())
    assert fetch_bytes == MAX_FETCH_BYTES_PER_PARTITION == 256 * 1024
    assert poll_records == MAX_POLL_RECORDS
    assert wait_ms == 300
