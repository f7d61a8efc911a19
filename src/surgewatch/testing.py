"""Test helpers that ship with the package: polling with a deadline and reading topics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from surgewatch.processes import wait_for

__all__ = ["read_topic", "read_topic_sync", "wait_for"]


async def reader_from_start(bootstrap: str, topic: str) -> Any:
    """A started consumer of ``topic`` from its first record, outside any consumer group."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    return consumer


async def read_topic(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    timeout_seconds: float,
) -> list[Any]:
    """Read ``topic`` from the beginning (no consumer group) until ``done(records)`` or the deadline."""
    consumer = await reader_from_start(bootstrap, topic)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_seconds
        while not done(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {len(records)} records, condition not met")
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()


def read_topic_sync(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout_seconds: float
) -> list[Any]:
    """:func:`read_topic` for synchronous tests."""
    return asyncio.run(read_topic(bootstrap, topic, done, timeout_seconds))
