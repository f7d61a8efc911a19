"""The embedded broker starts, answers Kafka requests over TCP, refuses a taken port and stops."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from surgewatch.broker import BrokerError, EmbeddedBroker, free_port


async def _roundtrip(bootstrap: str, topic: str) -> list[bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(20):
            while len(got) < 5:
                batch = await consumer.getmany(timeout_ms=500)
                got.extend(record.value for records in batch.values() for record in records)
        return got
    finally:
        await consumer.stop()


def test_produce_and_consume_through_the_embedded_broker(
    broker: EmbeddedBroker, unique_name: object
) -> None:
    topic = unique_name("roundtrip")  # type: ignore[operator]
    assert asyncio.run(_roundtrip(broker.bootstrap, topic)) == [f"m{i}".encode() for i in range(5)]


def test_a_taken_port_is_refused_with_a_clear_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker("127.0.0.1", broker.port).start()


def test_stop_ends_the_process_and_frees_the_port() -> None:
    second = EmbeddedBroker("127.0.0.1", free_port())
    second.start()
    assert second.is_running()
    second.stop()
    assert not second.is_running()
    again = EmbeddedBroker("127.0.0.1", second.port)
    again.start()
    again.stop()
