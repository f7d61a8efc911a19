"""The whole pipeline on the real broker: exact window counts, dead letters and metric identities.

The truth is computed here, independently of the package: per input partition, in produce order,
an event is late when its window's end + grace is at or below the largest event time produced to
that partition before it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.processes import WorkerProcess
from surgewatch.scrape import sample, sample_sum, scrape
from surgewatch.testing import read_topic_sync, wait_for

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 10
GRACE_SECONDS = 3
PARTITIONS = 4
T0 = 1_737_000_000.0
FULLWIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
TAGS = ["tiktokrefugee", "cattax", "rednote", "food", "travel", "cats"]


@dataclass
class Produced:
    stream: str
    partition: int
    key: bytes | None
    value: bytes
    ts: float | None  # None for rejected events
    keys: tuple[str, ...]  # hashtags or the normalised country
    reason: str | None


def _variant(tag: str, rnd: random.Random) -> str:
    choice = rnd.randrange(4)
    if choice == 0:
        return tag
    if choice == 1:
        return "#" + tag.upper()
    if choice == 2:
        return tag.title()
    return "＃" + "".join(FULLWIDTH.get(ch, ch) for ch in tag)


BAD_PAYLOADS: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (orjson.dumps({"event_id": "x", "ts": T0}), "missing_field"),
    (orjson.dumps({"event_id": "x", "user_id": "u", "ts": "yesterday"}), "invalid_ts"),
    (orjson.dumps({"event_id": "e" * 129, "user_id": "u", "ts": T0}), "invalid_field"),
    (b"\xff\xfe not utf-8", "invalid_json"),
    (orjson.dumps({"event_id": "x", "user_id": "u", "ts": T0, "pad": "x" * 70_000}), "too_large"),
]


def make_events(seed: int, count: int) -> list[Produced]:
    """Events in time order with jitter within grace, a few late ones and a few bad ones."""
    rnd = random.Random(seed)
    events: list[Produced] = []
    countries = [("US", "US"), ("us", "US"), (" cn ", "CN"), ("GB", "GB"), (None, "unknown"),
                 ("XX", "unknown"), ("usa", "unknown")]  # fmt: skip
    for i in range(count):
        stream = "posts" if i % 3 else "signups"
        partition = rnd.randrange(PARTITIONS)
        ts = T0 + i * 0.01 - rnd.uniform(0.0, 2.0)
        if i % 97 == 0:
            ts -= 60.0  # far behind its partition: late
        event_id = f"{stream}-{i}"
        if i % 71 == 0:
            value, reason = BAD_PAYLOADS[(i // 71) % len(BAD_PAYLOADS)]
            if stream == "posts" and i % 2:
                value = orjson.dumps(
                    {"event_id": event_id, "user_id": "u", "ts": ts, "hashtags": ["a"] * 31}
                )
                reason = "too_many_hashtags"
            events.append(Produced(stream, partition, None, value, None, (), reason))
            continue
        user = f"user-{rnd.randrange(500)}"
        if stream == "posts":
            chosen = rnd.sample(TAGS, rnd.randint(0, 3))
            body: dict[str, object] = {"event_id": event_id, "user_id": user, "ts": ts}
            if rnd.random() < 0.5:
                body["hashtags"] = [_variant(t, rnd) for t in chosen]
            else:
                body["text"] = "hello " + " ".join(
                    "#" + _variant(t, rnd).lstrip("#＃") for t in chosen
                )
            if rnd.random() < 0.2:
                body["ts"] = int(ts * 1000)  # milliseconds
                ts = int(ts * 1000) / 1000
            keys = tuple(chosen)
        else:
            raw_country, country = countries[rnd.randrange(len(countries))]
            body = {"event_id": event_id, "user_id": user, "ts": ts, "platform": "ios"}
            if raw_country is not None:
                body["country"] = raw_country
            keys = (country,)
        events.append(
            Produced(stream, partition, user.encode(), orjson.dumps(body), ts, keys, None)
        )
    return events


def truth(events: list[Produced]) -> tuple[dict[str, int], Counter[tuple[str, str]]]:
    """Expected window-count records by Kafka key, and outcome counts by (stream, outcome)."""
    watermark: dict[tuple[str, int], float] = {}
    counts: Counter[str] = Counter()
    outcomes: Counter[tuple[str, str]] = Counter()
    for event in events:
        if event.reason is not None:
            outcomes[(event.stream, event.reason)] += 1
            continue
        assert event.ts is not None
        start = int(event.ts // WINDOW_SECONDS) * WINDOW_SECONDS
        slot = (event.stream, event.partition)
        if start + WINDOW_SECONDS + GRACE_SECONDS <= watermark.get(slot, float("-inf")):
            outcomes[(event.stream, "late")] += 1
            continue
        watermark[slot] = max(watermark.get(slot, float("-inf")), event.ts)
        outcomes[(event.stream, "counted")] += 1
        metric = "hashtag_posts" if event.stream == "posts" else "signups"
        for key in event.keys:
            counts[f"{metric}|{key}|{start}"] += 1
    return dict(counts), outcomes


async def _produce(bootstrap: str, topics: dict[str, str], events: list[Produced]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topics[e.stream], e.value, key=e.key, partition=e.partition)
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.fixture
def pipeline_env(isolated_env: Callable[[str], dict[str, str]]) -> Iterator[dict[str, str]]:
    yield {
        **isolated_env("sw-it"),
        "SURGEWATCH_PARTITIONS": str(PARTITIONS),
        "SURGEWATCH_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SURGEWATCH_GRACE_SECONDS": str(GRACE_SECONDS),
    }


def _create_topics(env: dict[str, str]) -> None:
    from surgewatch.config import load_settings
    from surgewatch.worker.topics import ensure_topics

    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    asyncio.run(ensure_topics(settings, [settings.posts_topic, settings.signups_topic]))


def _check_everything(
    broker: EmbeddedBroker, env: dict[str, str], worker: WorkerProcess, events: list[Produced]
) -> None:
    expected, outcomes = truth(events)
    assert outcomes[("posts", "late")] > 5 and outcomes[("signups", "late")] > 5
    assert len(expected) > 30

    records = read_topic_sync(
        broker.bootstrap,
        env["SURGEWATCH_WINDOW_COUNTS_TOPIC"],
        lambda got: len(got) >= len(expected),
        timeout_seconds=90,
    )
    got: dict[str, int] = {}
    for record in records:
        key = record.key.decode()
        assert key not in got, f"second record for {key}"
        value = orjson.loads(record.value)
        metric, name, start = key.rsplit("|", 2)
        assert value == {
            "metric": metric,
            "key": name,
            "window_start": int(start),
            "window_end": int(start) + WINDOW_SECONDS,
            "count": value["count"],
        }
        got[key] = value["count"]
    assert got == expected

    bad = [e for e in events if e.reason is not None]
    dead = read_topic_sync(
        broker.bootstrap, env["SURGEWATCH_DLQ_TOPIC"], lambda got: len(got) >= len(bad), 60
    )
    assert sorted((r.value, dict(r.headers)["reason"].decode()) for r in dead) == sorted(
        (e.value, e.reason) for e in bad
    )

    def metrics_settled() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        samples = scrape(worker.metrics_url)
        total = sum(sample(samples, "surgewatch_events_received_total", stream=s)
                    for s in ("posts", "signups"))  # fmt: skip
        return samples if total == len(events) else None

    samples = wait_for(metrics_settled, 30, what="all events in /metrics")
    for stream in ("posts", "signups"):
        received = sample(samples, "surgewatch_events_received_total", stream=stream)
        late = sample(samples, "surgewatch_events_late_total", stream=stream)
        rejected = sample_sum(samples, "surgewatch_events_rejected_total", stream=stream)
        if stream == "posts":
            counted = sample(samples, "surgewatch_posts_total")
        else:
            counted = sample_sum(samples, "surgewatch_signups_total")
        assert received == sum(1 for e in events if e.stream == stream)
        assert counted == outcomes[(stream, "counted")]
        assert late == outcomes[(stream, "late")]
        assert received == counted + late + rejected
        for (s, outcome), n in outcomes.items():
            if s == stream and outcome not in ("counted", "late"):
                labels = {"stream": stream, "reason": outcome}
                assert sample(samples, "surgewatch_events_rejected_total", **labels) == n
    assert sample(samples, "surgewatch_signups_total", country="unknown") > 0
    assert sample(samples, "surgewatch_watermark_seconds", stream="posts") > T0


def test_live_events_are_counted_exactly(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    events = make_events(seed=1, count=4000)
    with WorkerProcess(pipeline_env, free_port(), tmp_path / "worker.log") as worker:
        topics = {"posts": pipeline_env["SURGEWATCH_POSTS_TOPIC"],
                  "signups": pipeline_env["SURGEWATCH_SIGNUPS_TOPIC"]}  # fmt: skip
        asyncio.run(_produce(broker.bootstrap, topics, events))
        _check_everything(broker, pipeline_env, worker, events)


def test_catch_up_from_full_topics_gives_the_same_exact_counts(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    events = make_events(seed=2, count=6000)
    _create_topics(pipeline_env)
    topics = {"posts": pipeline_env["SURGEWATCH_POSTS_TOPIC"],
              "signups": pipeline_env["SURGEWATCH_SIGNUPS_TOPIC"]}  # fmt: skip
    asyncio.run(_produce(broker.bootstrap, topics, events))
    with WorkerProcess(pipeline_env, free_port(), tmp_path / "worker.log") as worker:
        _check_everything(broker, pipeline_env, worker, events)


def test_a_stalled_broker_does_not_make_the_worker_believe_the_stream_is_quiet(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    """While no fetch response arrives (a broker stall, a network cut) the last known end offsets
    prove nothing: the watermark must not advance with wall time, or the events that follow the
    stall would all be late. Idleness is only believed on fresh fetch responses."""
    events = make_events(seed=3, count=4000)
    first, second = events[:2000], events[2000:]
    topics = {"posts": pipeline_env["SURGEWATCH_POSTS_TOPIC"],
              "signups": pipeline_env["SURGEWATCH_SIGNUPS_TOPIC"]}  # fmt: skip
    with WorkerProcess(pipeline_env, free_port(), tmp_path / "worker.log") as worker:
        asyncio.run(_produce(broker.bootstrap, topics, first))

        def all_first_received() -> bool:
            samples = scrape(worker.metrics_url)
            return sample_sum(samples, "surgewatch_events_received_total") == len(first)

        wait_for(all_first_received, 60, what="the first half in /metrics")
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            time.sleep(2 * WINDOW_SECONDS)  # the stall under test, not synchronisation
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        asyncio.run(_produce(broker.bootstrap, topics, second))
        _check_everything(broker, pipeline_env, worker, events)
