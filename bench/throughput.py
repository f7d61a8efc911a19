"""Throughput benchmark: surgewatch worker against a raw aiokafka consumer on the same data.

Produces N post events (Zipf hashtags, 1-4 a post) to the embedded broker, then in the same run
measures (a) a raw aiokafka consumer that decodes each event and counts (minute, hashtag) pairs in a
dict and (b) ``surgewatch worker`` from its first event read to the last window-count record. One
closing post per partition, a window and the grace period later, moves every partition's watermark
past the data so every window closes by event time. Prints a JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import cpu_seconds, peak_rss_mb, worker_env
from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.processes import WorkerProcess
from surgewatch.scrape import sample, scrape
from surgewatch.testing import read_topic

PARTITIONS = 4
WINDOW_SECONDS = 60
GRACE_SECONDS = 30
T0 = 1_736_726_400.0  # 2025-01-13T00:00:00Z
EVENTS_PER_EVENT_SECOND = 150.0


def make_values(n: int, seed: int) -> tuple[list[bytes], int, int, float]:
    """Encoded posts, distinct (hashtag, window) pairs, hashtag mentions, largest event time."""
    rnd = random.Random(seed)
    vocabulary = [f"tag{i}" for i in range(100_000)]
    cum_weights = list(
        itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(len(vocabulary)))
    )
    values: list[bytes] = []
    pairs: set[tuple[str, int]] = set()
    mentions = 0
    max_ts = T0
    for i in range(n):
        ts = round(T0 + i / EVENTS_PER_EVENT_SECOND - rnd.uniform(0, 2.0), 3)
        tags = rnd.choices(vocabulary, cum_weights=cum_weights, k=rnd.randint(1, 4))
        event = {"event_id": f"e{i}", "user_id": f"u{rnd.randrange(200_000)}", "ts": ts,
                 "hashtags": tags, "lang": "en"}  # fmt: skip
        values.append(orjson.dumps(event))
        window = int(ts // WINDOW_SECONDS) * WINDOW_SECONDS
        pairs.update((tag, window) for tag in tags)
        mentions += len(set(tags))  # a tag counts once per post
        max_ts = max(max_ts, ts)
    return values, len(pairs), mentions, max_ts


async def produce(bootstrap: str, topic: str, values: list[bytes], closing_ts: float) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        pending = []
        for i, value in enumerate(values):
            pending.append(await producer.send(topic, value, partition=i % PARTITIONS))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        for partition in range(PARTITIONS):
            closing = {"event_id": f"close-{partition}", "user_id": "clock", "ts": closing_ts}
            pending.append(await producer.send(topic, orjson.dumps(closing), partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def raw_consumer(bootstrap: str, topic: str, expected: int) -> float:
    """Events/s of a plain aiokafka consumer that decodes and counts (minute, hashtag) pairs."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)  # fmt: skip
    await consumer.start()
    counts: dict[tuple[int, str], int] = {}
    seen = 0
    started = 0.0
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not started and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    minute = int(event["ts"] // 60)
                    for tag in event.get("hashtags", ()):
                        counts[(minute, tag)] = counts.get((minute, tag), 0) + 1
                seen += len(records)
        return expected / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def watch_worker(
    worker: WorkerProcess, bootstrap: str, counts_topic: str, pairs: int, mentions: int
) -> tuple[float, float, float]:
    """Wall times of the worker's first event read and last window record, and its CPU seconds."""
    assert worker.process is not None
    pid = worker.process.pid
    reader = asyncio.ensure_future(
        read_topic(bootstrap, counts_topic, lambda got: len(got) >= pairs, 300)
    )
    first = 0.0
    while not first:
        try:
            samples = await asyncio.to_thread(scrape, worker.metrics_url, 2.0)
        except OSError:
            samples = {}
        if sample(samples, "surgewatch_events_received_total", stream="posts") > 0:
            first = time.perf_counter()
            cpu_first = cpu_seconds(pid)
        else:
            await asyncio.sleep(0.02)
    records = await reader
    last = time.perf_counter()
    cpu = cpu_seconds(pid) - cpu_first
    if len(records) != pairs:
        raise RuntimeError(f"expected {pairs} window records, got {len(records)}")
    counted = sum(orjson.loads(record.value)["count"] for record in records)
    if counted != mentions:
        raise RuntimeError(f"window counts add up to {counted}, expected {mentions}")
    return first, last, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="surgewatch-bench-"))
    print(f"generating {args.events:,} posts ...", file=sys.stderr)
    values, pairs, mentions, max_ts = make_values(args.events, args.seed)
    closing_ts = max_ts + WINDOW_SECONDS + GRACE_SECONDS + 1
    total = len(values) + PARTITIONS
    with EmbeddedBroker("127.0.0.1", free_port(), log_path=workdir / "tansu.log") as broker:
        suffix = uuid.uuid4().hex[:8]
        topic = f"bench-posts-{suffix}"
        started = time.perf_counter()
        asyncio.run(produce(broker.bootstrap, topic, values, closing_ts))
        print(f"produced {total:,} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        del values

        raw_rate = asyncio.run(raw_consumer(broker.bootstrap, topic, total))
        print(f"raw aiokafka consumer: {raw_rate:,.0f} events/s", file=sys.stderr)

        env = worker_env(
            broker.url,
            f"bench-{suffix}",
            partitions=PARTITIONS,
            window_seconds=WINDOW_SECONDS,
            grace_seconds=GRACE_SECONDS,
            posts_topic=topic,
        )
        worker = WorkerProcess(env, free_port(), workdir / "worker.log")
        worker.start()
        try:
            assert worker.process is not None
            pid = worker.process.pid
            broker_cpu_before = cpu_seconds(broker.pid or 0)
            first, last, cpu = asyncio.run(
                watch_worker(
                    worker, broker.bootstrap, env["SURGEWATCH_WINDOW_COUNTS_TOPIC"], pairs, mentions
                )
            )
            rss = peak_rss_mb(pid)
            broker_cpu = cpu_seconds(broker.pid or 0) - broker_cpu_before
        finally:
            worker.stop()
    rate = total / (last - first)
    result = {
        "events": total,
        "window_records": pairs,
        "events_per_s": round(rate),
        "raw_events_per_s": round(raw_rate),
        "ratio": round(rate / raw_rate, 3),
        "peak_rss_mb": round(rss, 1),
        "worker_cpu_utilisation": round(cpu / (last - first), 2),
        "broker_cpu_utilisation": round(broker_cpu / (last - first), 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
