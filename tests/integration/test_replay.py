"""Replay against a real broker: every record on the right topic and partition, byte for byte, stamped
with its event time; bad lines counted and skipped; ``--speed`` pacing holds."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2

from surgewatch.config import Settings, load_settings
from surgewatch.eventfile import EventRecord, read_events, write_events
from surgewatch.events.timestamps import parse_ts
from surgewatch.replay import ReplayError, replay
from surgewatch.simulate import simulate
from surgewatch.testing import read_topic

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 13, 14, tzinfo=UTC)
NOW_SECONDS = 2_000_000_000.0
EXTRA = [
    EventRecord("posts", None, {"event_id": "x1", "user_id": "k0", "ts": START.timestamp() + 1}),
    EventRecord("posts", "u-bad", "{not json"),
    EventRecord(
        "signups", "u-iso", {"event_id": "x2", "user_id": "u-iso", "ts": "2025-01-13T14:00:02.250Z"}
    ),
    EventRecord(
        "signups", "u-bad-ts", {"event_id": "x3", "user_id": "u-bad-ts", "ts": "yesterday"}
    ),
]


def _settings(broker: Any, unique_name: Callable[[str], str]) -> Settings:
    return load_settings(
        broker=broker.url,
        posts_topic=unique_name("posts"),
        signups_topic=unique_name("signups"),
        dlq_topic=unique_name("dlq"),
        window_counts_topic=unique_name("counts"),
        surges_topic=unique_name("surges"),
    )


def _event_ms(record: EventRecord) -> int | None:
    value = record.value
    if isinstance(value, str):
        return None
    seconds = parse_ts(value.get("ts"), NOW_SECONDS)
    return None if seconds is None else round(seconds * 1000)


async def _read_exactly(bootstrap: str, topic: str, count: int) -> list[Any]:
    return await read_topic(bootstrap, topic, lambda got: len(got) >= count, timeout_seconds=60)


def test_max_speed_replay_delivers_every_record_exactly(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl.gz"
    records = [*EXTRA, *simulate("rednote-2025", seed=11, scale=0.03, start=START, hours=3)]
    write_events(path, records)
    # A second file with an unreadable line: counted and skipped, not fatal.
    plain = tmp_path / "broken.jsonl"
    plain.write_bytes(b'{"stream": "posts", "key": "u1", "value": {"ts": 1}\n')
    settings = _settings(broker, unique_name)

    wall_before_ms = time.time() * 1000
    stats = asyncio.run(replay([str(path), str(plain)], settings, speed=None, progress=False))
    wall_after_ms = time.time() * 1000

    expected = list(read_events(path))
    assert stats.events == len(expected) > 10_000
    assert stats.rejected_lines == 1
    assert stats.events_per_s > 0
    by_topic = {"posts": settings.posts_topic, "signups": settings.signups_topic}
    for stream, topic in by_topic.items():
        wanted = [record for record in expected if record.stream == stream]
        assert stats.by_stream[stream] == len(wanted)
        got = asyncio.run(_read_exactly(broker.bootstrap, topic, len(wanted)))
        assert len(got) == len(wanted)
        assert Counter((m.key, m.value) for m in got) == Counter(
            (r.key_bytes(), r.value_bytes()) for r in wanted
        )
        stamped = {(r.key_bytes(), r.value_bytes()): _event_ms(r) for r in wanted}
        for message in got:
            event_ms = stamped[(message.key, message.value)]
            if event_ms is None:
                assert wall_before_ms - 1 <= message.timestamp <= wall_after_ms + 1
            else:
                assert message.timestamp == event_ms
            if message.key is not None:
                # Kafka's default partitioner: murmur2 of the key over the topic's 4 partitions.
                assert (
                    message.partition == (murmur2(message.key) & 0x7FFFFFFF) % settings.partitions
                )
        # Per key, messages arrive in file order.
        order_in_file: dict[bytes | None, list[bytes]] = defaultdict(list)
        for record in wanted:
            order_in_file[record.key_bytes()].append(record.value_bytes())
        order_received: dict[bytes | None, list[bytes]] = defaultdict(list)
        for message in sorted(got, key=lambda m: (m.partition, m.offset)):
            order_received[message.key].append(message.value)
        assert order_received == order_in_file


def test_speed_paces_the_replay_on_event_time(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    t0 = START.timestamp()
    # 20 seconds of event time, 10 events a second.
    records = [
        EventRecord(
            "posts",
            f"u{i % 7}",
            {"event_id": f"p{i}", "user_id": f"u{i % 7}", "ts": t0 + i / 10, "hashtags": ["pace"]},
        )
        for i in range(201)
    ]
    path = tmp_path / "paced.jsonl"
    write_events(path, records)
    settings = _settings(broker, unique_name)

    began = time.monotonic()
    stats = asyncio.run(replay([str(path)], settings, speed=10.0, progress=False))
    elapsed = time.monotonic() - began

    assert stats.events == len(records)
    assert elapsed >= 1.9
    assert elapsed < 8.0
    got = asyncio.run(_read_exactly(broker.bootstrap, settings.posts_topic, len(records)))
    assert sorted(orjson.loads(m.value)["event_id"] for m in got) == sorted(
        f"p{i}" for i in range(201)
    )


def test_a_missing_file_is_refused_before_connecting(tmp_path: Path) -> None:
    settings = load_settings(broker="kafka://127.0.0.1:1")
    with pytest.raises(ReplayError, match="no such event file"):
        asyncio.run(replay([str(tmp_path / "nope.jsonl")], settings, speed=None, progress=False))


def test_an_unreachable_broker_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    write_events(path, EXTRA)
    settings = load_settings(broker="kafka://127.0.0.1:1")
    with pytest.raises(ReplayError, match=r"127\.0\.0\.1:1"):
        asyncio.run(replay([str(path)], settings, speed=None, progress=False))
