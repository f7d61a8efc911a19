"""Hostile records on the real broker: each lands in the dead-letter topic with its reason, the valid
ones are counted exactly, the worker keeps running and its /metrics stays valid and adds up.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.labels import hashtag_label
from surgewatch.processes import WorkerProcess
from surgewatch.scrape import sample, sample_sum, scrape
from surgewatch.testing import read_topic_sync, wait_for
from tests.hostile import LABEL_BREAKING_TAGS, LONG_TAG, OK, corpus

pytestmark = pytest.mark.integration

PROMTOOL = "/usr/bin/promtool"
WINDOW_SECONDS = 10
GRACE_SECONDS = 3
PARTITIONS = 2
#: 2025-01-16T04:00:00Z, a multiple of the window.
T0 = 1_737_000_000.0
#: Tags of the valid posts: label-breaking, very long, CJK and emoji.
TAGS = [*(tag.strip("#").casefold() for tag in LABEL_BREAKING_TAGS), LONG_TAG, "ok"]
METRIC = {"posts": "hashtag_posts", "signups": "signups"}


@dataclass(frozen=True)
class Record:
    stream: str
    partition: int
    key: bytes | None
    value: bytes | None
    verdict: str  # "ok" or the rejection reason
    window: int | None = None  # window start of an accepted event
    keys: tuple[str, ...] = ()  # hashtags, or the signup's country


def records() -> list[Record]:
    """Per stream and partition, in produce order: the hostile corpus at T0 + 5 (its accepted
    values count in the first window), a tombstone, then valid events over three windows."""
    out: list[Record] = []
    for stream in ("posts", "signups"):
        for index, hostile in enumerate(corpus(T0 + 5, prefix=stream)):
            verdict = hostile.post if stream == "posts" else hostile.signup
            keys = hostile.tags if stream == "posts" else ("unknown",)
            key = b"\xff\xfe-not-utf8" if index % 3 == 0 else f"k{index}".encode()
            window = int(T0) if verdict == OK else None
            out.append(
                Record(stream, index % PARTITIONS, key, hostile.value, verdict, window, keys)
            )
        out.append(Record(stream, 0, b"tombstone", None, "invalid_json"))
        for i in range(120):
            ts = T0 + 5 + i * 0.2  # 24 s: the windows T0, T0 + 10 and T0 + 20
            window = int(ts // WINDOW_SECONDS) * WINDOW_SECONDS
            body: dict[str, object] = {"event_id": f"{stream}-v{i}", "user_id": f"u{i}", "ts": ts}
            if stream == "posts":
                tags = (TAGS[i % len(TAGS)], TAGS[(i + 5) % len(TAGS)])
                body["hashtags"] = list(tags)
                keys: tuple[str, ...] = tuple(dict.fromkeys(tags))
            else:
                body["country"] = ("us", "CN", '"}\n', None)[i % 4]
                keys = (("US", "CN", "unknown", "unknown")[i % 4],)
            value = orjson.dumps(body)
            out.append(Record(stream, i % PARTITIONS, f"u{i}".encode(), value, OK, window, keys))
    return out


async def produce(bootstrap: str, topics: dict[str, str], batch: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topics[r.stream], r.value, key=r.key, partition=r.partition)
            for r in batch
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.fixture
def hostile_env(isolated_env: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return {
        **isolated_env("sw-hostile"),
        "SURGEWATCH_PARTITIONS": str(PARTITIONS),
        "SURGEWATCH_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SURGEWATCH_GRACE_SECONDS": str(GRACE_SECONDS),
        "SURGEWATCH_TOP_K": str(len(TAGS) + 5),
    }


@pytest.mark.skipif(
    shutil.which(PROMTOOL) is None,
    reason=f"{PROMTOOL} not installed (Debian package 'prometheus'; `make setup` installs it)",
)
def test_hostile_records_are_dead_lettered_and_valid_ones_counted_exactly(
    broker: EmbeddedBroker, hostile_env: dict[str, str], tmp_path: Path
) -> None:
    produced = records()
    rejected = [r for r in produced if r.verdict != OK]
    expected_counts: Counter[str] = Counter()
    for r in produced:
        if r.verdict == OK:
            for key in r.keys:
                expected_counts[f"{METRIC[r.stream]}|{key}|{r.window}"] += 1
    assert len(rejected) > 80 and {r.verdict for r in rejected} >= {"too_large", "invalid_json"}

    topics = {"posts": hostile_env["SURGEWATCH_POSTS_TOPIC"],
              "signups": hostile_env["SURGEWATCH_SIGNUPS_TOPIC"]}  # fmt: skip
    with WorkerProcess(hostile_env, free_port(), tmp_path / "worker.log") as worker:
        asyncio.run(produce(broker.bootstrap, topics, produced))

        windows = read_topic_sync(
            broker.bootstrap,
            hostile_env["SURGEWATCH_WINDOW_COUNTS_TOPIC"],
            lambda got: len(got) >= len(expected_counts),
            timeout_seconds=90,
        )
        got_counts: dict[str, int] = {}
        for record in windows:
            key = record.key.decode()
            assert key not in got_counts, f"second record for {key!r}"
            value = orjson.loads(record.value)
            assert key == f"{value['metric']}|{value['key']}|{value['window_start']}"
            got_counts[key] = value["count"]
        assert got_counts == dict(expected_counts)

        dead = read_topic_sync(
            broker.bootstrap,
            hostile_env["SURGEWATCH_DLQ_TOPIC"],
            lambda got: len(got) >= len(rejected),
            timeout_seconds=60,
        )
        got_dead = Counter(
            (dict(r.headers)["stream"].decode(), r.key, r.value, dict(r.headers)["reason"].decode())
            for r in dead
        )
        assert got_dead == Counter((r.stream, r.key, r.value, r.verdict) for r in rejected)
        assert all(dict(r.headers)["detail"] for r in dead)
        # Each dead letter sits in the partition numbered like its input partition.
        sources = [int(dict(r.headers)["source_partition"]) for r in dead]
        assert [r.partition for r in dead] == sources
        assert set(sources) == set(range(PARTITIONS))

        # The trend view reaches /metrics with the hostile tags as labels of the last window.
        labels = {hashtag_label(tag) for tag in TAGS}

        def hostile_labels_served() -> str | None:
            with urllib.request.urlopen(worker.metrics_url, timeout=5) as response:
                text: str = response.read().decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            top = families["surgewatch_top_hashtag_posts"].samples
            return text if labels <= {s.labels["hashtag"] for s in top} else None

        exposition = wait_for(hostile_labels_served, 60, what="the hostile tags in the top-K")
        checked = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=exposition.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()

        samples = scrape(worker.metrics_url)
        for stream in ("posts", "signups"):
            mine = [r for r in produced if r.stream == stream]
            received = sample(samples, "surgewatch_events_received_total", stream=stream)
            late = sample(samples, "surgewatch_events_late_total", stream=stream)
            if stream == "posts":
                counted = sample(samples, "surgewatch_posts_total")
            else:
                counted = sample_sum(samples, "surgewatch_signups_total")
            reasons = Counter(r.verdict for r in mine if r.verdict != OK)
            for reason, count in reasons.items():
                labels_ = {"stream": stream, "reason": reason}
                assert sample(samples, "surgewatch_events_rejected_total", **labels_) == count
            rejected_total = sample_sum(samples, "surgewatch_events_rejected_total", stream=stream)
            assert received == len(mine)
            assert (counted, late) == (sum(1 for r in mine if r.verdict == OK), 0)
            assert received == counted + late + rejected_total
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
