"""Durable surge state on the real broker: a worker killed with SIGKILL in the middle of a surge
and restarted on the same data directory (``SURGEWATCH_STORE=rocksdb://``) ends that surge.

One worker; a paced replay of 45 minutes of posts in which ``#boom`` goes from about one post a
minute to 80 for fifteen minutes and back. Once the surges topic holds boom's ``start``, the worker
gets SIGKILL and is started again on the same directory. Its detectors come back from the local
RocksDB, so the surges topic ends up exactly as the offline computation of the same events says
(identical re-emissions aside): boom's ``start``, then its ``end``. A detector that warmed up again
instead (``memory://``) would learn boom's surge as its normal and never publish the ``end``.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import load_settings
from surgewatch.eventfile import EventRecord, write_events
from surgewatch.offline import compute
from surgewatch.processes import spawn, terminate, wait_for
from surgewatch.scrape import sample, scrape
from surgewatch.testing import read_topic_sync
from tests.integration.group_run import (
    GRACE_SECONDS,
    T0_SECONDS,
    WINDOW_SECONDS,
    GroupWorker,
    read_window_records,
    stop_all,
)

pytestmark = pytest.mark.integration

MINUTES = 45
BURST_MINUTES = range(20, 35)
BURST_POSTS = 80
#: 45 minutes of event time in 30 s.
SPEED = 90.0
PARTITIONS = 3


def workload() -> list[EventRecord]:
    """Ordinary hashtags at a steady rate, ``#boom`` at about one post a minute except during the
    burst; every post from its own account (the per-account cap leaves them all in the trend)."""
    rnd = random.Random(41)
    events: list[tuple[float, str]] = []
    for minute in range(MINUTES):
        start = T0_SECONDS + minute * WINDOW_SECONDS
        boom = BURST_POSTS if minute in BURST_MINUTES else rnd.randrange(3)
        tags = ["boom"] * boom + [f"steady{rnd.randrange(12)}" for _ in range(120)]
        events.extend((start + rnd.uniform(0, WINDOW_SECONDS), tag) for tag in tags)
    events.sort()
    return [
        EventRecord(
            "posts",
            f"user-{index}",
            {"event_id": f"post-{index}", "user_id": f"user-{index}", "ts": ts, "hashtags": [tag]},
        )
        for index, (ts, tag) in enumerate(events)
    ]


@pytest.fixture
def workers() -> Iterator[list[GroupWorker]]:
    started: list[GroupWorker] = []
    yield started
    stop_all(started)


def _surges(bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    records = read_topic_sync(
        bootstrap,
        topic,
        lambda got: done([orjson.loads(r.value) for r in got]),
        timeout_seconds=120,
    )
    return [orjson.loads(r.value) for r in records]


def _has(state: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda got: any(v["key"] == "boom" and v["state"] == state for v in got)


def test_a_surge_open_at_a_kill_ends_after_a_restart_with_rocksdb(
    broker: EmbeddedBroker,
    isolated_env: Callable[[str], dict[str, str]],
    workers: list[GroupWorker],
    tmp_path: Path,
) -> None:
    env = {
        **isolated_env("sw-surge-state"),
        "SURGEWATCH_PARTITIONS": str(PARTITIONS),
        "SURGEWATCH_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SURGEWATCH_GRACE_SECONDS": str(GRACE_SECONDS),
        "SURGEWATCH_STORE": "rocksdb://",
    }
    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    records = workload()
    path = tmp_path / "posts.jsonl"
    write_events(path, records)
    topic = env["SURGEWATCH_SURGES_TOPIC"]

    first = GroupWorker(env, free_port(), tmp_path / "first.log", tmp_path / "worker", "first")
    workers.append(first)
    first.start()
    replay = spawn(
        [sys.executable, "-m", "surgewatch", "replay", str(path), "--speed", str(SPEED)],
        tmp_path / "replay.log",
        first.env,
    )
    try:
        _surges(broker.bootstrap, topic, _has("start"))
        time.sleep(1.0)  # a few more windows scored and stored while boom surges
        first.kill()
        before_restart = _surges(broker.bootstrap, topic, _has("start"))
        assert not _has("end")(before_restart), "boom's surge ended before the kill: too late"
        again = GroupWorker(env, free_port(), tmp_path / "again.log", tmp_path / "worker", "again")
        workers.append(again)
        again.start()
        replay.wait(120)
        assert replay.returncode == 0, (tmp_path / "replay.log").read_text()
    finally:
        terminate(replay, 5)

    last_close = T0_SECONDS + MINUTES * WINDOW_SECONDS + GRACE_SECONDS

    def posts_watermark_past() -> bool:
        samples = scrape(again.metrics_url)
        return sample(samples, "surgewatch_watermark_seconds", stream="posts") >= last_close

    wait_for(posts_watermark_past, 120, what="the posts watermark past the last window")
    samples = scrape(again.metrics_url)
    restored = sample(
        samples, "surgewatch_surge_state_restores_total", metric="hashtag_posts", outcome="restored"
    )
    keys = sample(samples, "surgewatch_surge_state_keys_restored_total", metric="hashtag_posts")

    def order(value: dict[str, Any]) -> tuple[Any, ...]:
        return (value["window_start"], value["metric"], value["key"], value["state"])

    expected = sorted(
        (s.as_dict() for s in compute(records, settings).surges if s.metric == "hashtag_posts"),
        key=order,
    )
    assert [(v["key"], v["state"]) for v in expected] == [("boom", "start"), ("boom", "end")]
    # Everything published, until nothing new has come for a few seconds.
    read = read_window_records(
        broker.bootstrap,
        topic,
        {"hashtag_posts|boom"},
        quiet_seconds=3,
        give_up_quiet_seconds=10,
        timeout_seconds=60,
    )
    published = [value for _, value in read.records]
    # Records published again after the restart are identical ones: compare distinct records.
    distinct = {orjson.dumps(v, option=orjson.OPT_SORT_KEYS): v for v in published}
    got = sorted(distinct.values(), key=order)
    report = (
        f"published {published}\nexpected {expected}\nhashtag detectors restored from local "
        f"state: {restored:.0f} ({keys:.0f} keys)\n{again.log_tail()}"
    )
    assert restored >= 1 and keys >= 1, report
    assert got == expected, report
