"""A routed partial that the broker acknowledged and lost, on the real broker: the counting agent
notices the gap in its source's input offsets, reads those input records back and counts them.

The embedded broker can lose one of two writes that reach a partition at the same moment (seen in
the crash-recovery test: one worker's batch of partials took the offsets another worker's batch
was given). Here the test plays the sender of input partition 0, so the loss is certain: it
produces the posts, counts them with the package's own ingest code into partials, and writes those
partials to the partials topic with one batch left out. The worker starts with its group's input
offsets committed at the end, so it does not read the posts itself: every count it publishes comes
from the partials it receives or from reading the input back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import Settings, load_settings
from surgewatch.ingest import StreamIngest
from surgewatch.processes import WorkerProcess
from surgewatch.scrape import sample, scrape
from surgewatch.testing import read_topic_sync
from surgewatch.worker.topics import ensure_topics

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 60
GRACE_SECONDS = 5
T0 = 1_737_000_000.0
TAGS = ["rednote", "tiktokrefugee", "cats", "food", "travel"]
#: Input offsets of the sender's batches; the second one's partials are lost.
BATCHES = [(0, 39), (40, 69), (70, 100)]


def posts() -> tuple[list[bytes], Counter[str]]:
    """100 posts in the window at ``T0`` and one that closes it; the window's truth."""
    rnd = random.Random(5)
    values: list[bytes] = []
    truth: Counter[str] = Counter()
    for index in range(100):
        tags = rnd.sample(TAGS, rnd.randint(1, 2))
        truth.update(tags)
        values.append(_post(index, T0 + index * 0.5, tags))
    values.append(_post(100, T0 + WINDOW_SECONDS + GRACE_SECONDS + 1, ["closing"]))
    return values, truth


def _post(index: int, ts: float, tags: list[str]) -> bytes:
    event = {"event_id": f"p{index}", "user_id": f"u{index}", "ts": ts, "hashtags": tags}
    return orjson.dumps(event)


async def _play_the_sender(settings: Settings, values: list[bytes]) -> None:
    """Produce the posts, commit the worker group's input offsets at their end, and send the
    partials of every batch but the second to the partials topic."""
    posts_0 = TopicPartition(settings.posts_topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.posts_topic, value, partition=0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.app_id,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            consumer.assign([posts_0])
            await consumer.commit({posts_0: OffsetAndMetadata(len(values), "")})
        finally:
            await consumer.stop()
        sender = StreamIngest("posts", WINDOW_SECONDS, GRACE_SECONDS, 1, 1)
        for number, (first, last) in enumerate(BATCHES):
            _, partials = sender.process(
                0, values[first : last + 1], first, last, None, time.time()
            )
            if number == 1:
                continue  # acknowledged by the broker, and lost
            for _, partial in partials:
                await producer.send_and_wait(settings.partials_topic, partial.encode(), partition=0)
    finally:
        await producer.stop()


def test_a_lost_partial_is_recounted_from_the_input(
    broker: EmbeddedBroker, isolated_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    env = {
        **isolated_env("sw-lost"),
        "SURGEWATCH_PARTITIONS": "1",
        "SURGEWATCH_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SURGEWATCH_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    values, truth = posts()
    asyncio.run(ensure_topics(settings))
    asyncio.run(_play_the_sender(settings, values))
    expected = {f"hashtag_posts|{tag}|{int(T0)}": count for tag, count in truth.items()}

    with WorkerProcess(env, free_port(), tmp_path / "worker.log") as worker:
        records = read_topic_sync(
            broker.bootstrap,
            settings.window_counts_topic,
            lambda got: {r.key.decode() for r in got} >= set(expected),
            timeout_seconds=60,
        )
        samples = scrape(worker.metrics_url)

    published = {r.key.decode(): orjson.loads(r.value)["count"] for r in records}
    assert {key: published.get(key) for key in expected} == expected
    assert sample(samples, "surgewatch_partials_lost_total", outcome="recounted") == 1
    assert sample(samples, "surgewatch_partials_lost_total", outcome="unrecoverable") == 0
    assert sample(samples, "surgewatch_events_received_total", stream="posts") == 0
