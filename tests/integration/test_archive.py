"""Archive against a real broker: events replayed over six hours, a middle range archived; the file
holds exactly the events of the range (raw ones byte for byte), in event-time order within a few
seconds; the embedded broker's timestamp lookup is caught and replaced by a scan; the workers'
consumer group is untouched. A broker that answers ``offsets_for_times`` like Apache Kafka is
emulated to check that archive then seeks instead of scanning, with the same result."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, OffsetAndTimestamp, TopicPartition

from surgewatch.archive import ArchiveError, archive, merge_ready
from surgewatch.broker import free_port
from surgewatch.config import load_settings
from surgewatch.eventfile import EventRecord, read_events, write_events
from surgewatch.events.timestamps import parse_ts
from surgewatch.testing import read_topic

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 13, 12, tzinfo=UTC)
SINCE = T0 + timedelta(hours=2)
UNTIL = T0 + timedelta(hours=4)
NOW_SECONDS = 2_000_000_000.0
#: Out-of-order events are at most this far behind their neighbours; "late" ones far more.
JITTER_SECONDS = 3.0
FALLBACK_LINE = "from the earliest offset instead"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _posts(rng: random.Random) -> list[EventRecord]:
    """Six hours of posts every 20 s, shuffled by up to 3 s, in every ``ts`` format, with malformed
    ones, objects with a bad ``ts``, null keys, and two late posts (one of them in the range)."""
    t0 = T0.timestamp()
    records: list[EventRecord] = []
    for i in range(6 * 180):
        ts_s = t0 + 20 * i + rng.uniform(-JITTER_SECONDS, 0)
        ts: object = [ts_s, _iso(ts_s), round(ts_s * 1000), int(ts_s)][i % 4]
        user = f"u{i % 17}"
        records.append(
            EventRecord(
                "posts",
                None if i % 11 == 0 else user,
                {"event_id": f"p{i}", "user_id": user, "ts": ts, "hashtags": ["a", f"t{i % 5}"]},
            )
        )
        if i % 97 == 5:
            records.append(EventRecord("posts", user, f"{{not json {i}"))
        if i % 131 == 7:
            records.append(
                EventRecord(
                    "posts", user, {"event_id": f"bad-ts-{i}", "user_id": user, "ts": "yesterday"}
                )
            )
    # Ten minutes late: sits after events of a later time; its own ts decides.
    for position_s, ts_s, event_id in [
        (UNTIL.timestamp() + 120, UNTIL.timestamp() - 300, "late-in"),
        (SINCE.timestamp() + 120, SINCE.timestamp() - 480, "late-out"),
    ]:
        index = next(
            k
            for k, r in enumerate(records)
            if isinstance(r.value, dict) and (_seconds(r) or 0) > position_s
        )
        records.insert(
            index,
            EventRecord("posts", "late", {"event_id": event_id, "user_id": "late", "ts": ts_s}),
        )
    return records


def _signups(rng: random.Random) -> list[EventRecord]:
    t0 = T0.timestamp()
    records = []
    for i in range(6 * 80):
        ts_s = t0 + 45 * i + rng.uniform(0, 1)
        country = ["US", "CN", "GB", "zz"][i % 4]
        records.append(
            EventRecord(
                "signups",
                f"s{i}",
                {"event_id": f"s{i}", "user_id": f"s{i}", "ts": _iso(ts_s), "country": country},
            )
        )
        if i % 53 == 0:
            records.append(EventRecord("signups", None, f"[{i}, 2]"))
    return records


def _seconds(record: EventRecord) -> float | None:
    if isinstance(record.value, str):
        return None
    return parse_ts(record.value.get("ts"), NOW_SECONDS)


def _is_event(value: bytes) -> bool:
    """A JSON object with a readable ``ts``: archived as an object, the rest as raw strings."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return isinstance(decoded, dict) and parse_ts(decoded.get("ts"), NOW_SECONDS) is not None


def _expected(files: list[list[EventRecord]]) -> Counter[tuple[str, str | None, bytes]]:
    """What an archive of [SINCE, UNTIL) holds: a readable event by its own time, anything else by
    the time replay stamps it with (the readable record before it in its file)."""
    wanted: Counter[tuple[str, str | None, bytes]] = Counter()
    for records in files:
        last_s: float | None = None
        for record in records:
            own_s = _seconds(record)
            stamp_s = own_s if own_s is not None else last_s
            assert stamp_s is not None, "test data: every file starts with a readable event"
            if own_s is not None:
                last_s = own_s
            if SINCE.timestamp() <= stamp_s < UNTIL.timestamp():
                wanted[(record.stream, record.key, record.value_bytes())] += 1
    return wanted


def _archived(path: Path) -> Counter[tuple[str, str | None, bytes]]:
    return Counter((r.stream, r.key, r.value_bytes()) for r in read_events(path))


def _disorder_seconds(path: Path) -> float:
    """How far, at most, an archived event (late ones aside) is behind one written before it."""
    newest = -1.0
    worst = 0.0
    for record in read_events(path):
        seconds = _seconds(record)
        if seconds is None or record.key == "late":
            continue
        worst = max(worst, newest - seconds)
        newest = max(newest, seconds)
    return worst


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "surgewatch", *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env, "CI": "1"},
        check=False,
    )


async def _group_state(
    bootstrap: str, group: str, tps: list[TopicPartition]
) -> tuple[list[Any], dict[TopicPartition, int | None]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        groups = sorted(await admin.list_consumer_groups())
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    return groups, committed


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Stand in for the workers: their group with committed offsets on the input topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Counter[Any]]:
    """Two event files (posts, signups) and what an archive of the middle range must hold."""
    rng = random.Random(7)
    folder = tmp_path_factory.mktemp("archive-source")
    posts, signups = _posts(rng), _signups(rng)
    write_events(folder / "posts.jsonl.gz", posts)
    write_events(folder / "signups.jsonl", signups)
    return folder / "posts.jsonl.gz", folder / "signups.jsonl", _expected([posts, signups])


@pytest.fixture
def replayed(
    source: tuple[Path, Path, Counter[Any]],
    isolated_env: Callable[[str], dict[str, str]],
    broker: Any,
) -> tuple[dict[str, str], list[Any]]:
    """An environment whose input topics hold both files, replayed with ``surgewatch replay``, and
    every record produced (read back, for the topics' partitions and offsets)."""
    posts, signups, _ = source
    env = isolated_env("sw-archive")
    result = _cli("replay", str(posts), str(signups), "--max-speed", env=env)
    assert result.returncode == 0, result.stderr
    total = 0
    records = []
    for path, topic in [
        (posts, env["SURGEWATCH_POSTS_TOPIC"]),
        (signups, env["SURGEWATCH_SIGNUPS_TOPIC"]),
    ]:
        wanted = sum(1 for _ in read_events(path))
        total += wanted
        records += asyncio.run(
            read_topic(broker.bootstrap, topic, lambda got, n=wanted: len(got) >= n, 60)
        )
    assert len(records) == total
    return env, records


def test_cli_archives_exactly_the_range_in_order_without_touching_the_group(
    source: tuple[Path, Path, Counter[Any]],
    replayed: tuple[dict[str, str], list[Any]],
    broker: Any,
    tmp_path: Path,
) -> None:
    _, _, expected = source
    env, records = replayed
    group = env["SURGEWATCH_APP_ID"]
    tps = sorted({TopicPartition(r.topic, r.partition) for r in records})
    asyncio.run(_commit(broker.bootstrap, group, {tp: 3 + tp.partition for tp in tps}))
    before = asyncio.run(_group_state(broker.bootstrap, group, tps))
    out = tmp_path / "range.jsonl.gz"

    result = _cli(
        "archive",
        "--since",
        SINCE.isoformat(),
        "--until",
        UNTIL.isoformat(),
        "--out",
        str(out),
        env=env,
    )

    assert result.returncode == 0, result.stderr
    # The embedded broker answers offsets_for_times by arrival time: caught, said once, scanned.
    fallback = [line for line in result.stderr.splitlines() if FALLBACK_LINE in line]
    assert len(fallback) == 1, result.stderr
    assert "does not answer offsets_for_times by record timestamp" in fallback[0]
    raw = sum(count for (_, _, value), count in expected.items() if not _is_event(value))
    posts = sum(count for (stream, _, _), count in expected.items() if stream == "posts")
    events = sum(expected.values())
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(
        f"archived {events:,} events (posts {posts:,}, signups {events - posts:,}; {raw:,} raw) to {out} in "
    )
    assert summary.endswith(f"; read {len(records):,} records")
    assert not Path(f"{out}.partial").exists()

    got = _archived(out)
    assert got == expected
    ids = {orjson.loads(value)["event_id"] for (_, _, value) in got if _is_event(value)}
    assert "late-in" in ids
    assert "late-out" not in ids
    assert raw >= 4  # malformed posts, non-object signups and bad-ts objects are all in the range
    assert _disorder_seconds(out) <= JITTER_SECONDS + 1

    assert asyncio.run(_group_state(broker.bootstrap, group, tps)) == before


def test_api_seeks_when_the_broker_answers_by_record_timestamp(
    source: tuple[Path, Path, Counter[Any]],
    replayed: tuple[dict[str, str], list[Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, expected = source
    env, records = replayed
    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    by_tp: dict[TopicPartition, list[Any]] = {}
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        by_tp.setdefault(TopicPartition(record.topic, record.partition), []).append(record)

    async def like_kafka(
        self: Any, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Any]:
        """The first record stamped at or after the target, as Apache Kafka answers."""
        answers: dict[TopicPartition, Any] = {}
        for tp, target in timestamps.items():
            found = next((r for r in by_tp.get(tp, []) if r.timestamp >= target), None)
            answers[tp] = (
                None if found is None else OffsetAndTimestamp(found.offset, found.timestamp)
            )
        return answers

    monkeypatch.setattr(AIOKafkaConsumer, "offsets_for_times", like_kafka)
    out = tmp_path / "seek.jsonl"
    with caplog.at_level(logging.WARNING, logger="surgewatch.archive"):
        stats = asyncio.run(archive(settings, SINCE, UNTIL, out))

    assert not stats.scanned_from_earliest
    assert FALLBACK_LINE not in caplog.text
    assert _archived(out) == expected
    assert stats.events == sum(expected.values())
    # Seeking skipped everything stamped before the range (less the five-minute slack).
    assert stats.records_read < len(records) * 0.7
    assert _disorder_seconds(out) <= JITTER_SECONDS + 1

    # An answer one record too late loses events: the record before it is in the range. Caught.
    async def too_late(
        self: Any, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Any]:
        answers = await like_kafka(self, timestamps)
        for tp, answer in answers.items():
            if answer is not None:
                later = next(r for r in by_tp[tp] if r.offset > answer.offset)
                answers[tp] = OffsetAndTimestamp(later.offset, later.timestamp)
        return answers

    monkeypatch.setattr(AIOKafkaConsumer, "offsets_for_times", too_late)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="surgewatch.archive"):
        stats = asyncio.run(archive(settings, SINCE, UNTIL, tmp_path / "late.jsonl"))
    assert stats.scanned_from_earliest
    assert "not before the target" in caplog.text
    assert _archived(tmp_path / "late.jsonl") == expected


def test_an_empty_range_writes_an_empty_file(
    replayed: tuple[dict[str, str], list[Any]], tmp_path: Path
) -> None:
    env, records = replayed
    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    out = tmp_path / "none.jsonl"
    stats = asyncio.run(archive(settings, T0 - timedelta(days=2), T0 - timedelta(days=1), out))
    assert stats.events == 0
    assert stats.records_read == len(records)
    assert out.read_bytes() == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "noon", "--until", "2025-01-13T15:00Z"],
            "Error: --since: 'noon' is not an ISO-8601 time",
        ),
        (
            ["--since", "2025-01-13T15:00Z", "--until", "2025-01-13T16:00"],
            "Error: --until: '2025-01-13T16:00' has no time zone",
        ),
        (
            ["--since", "2025-01-13T15:00Z", "--until", "2025-01-13T15:00Z"],
            "Error: --since 2025-01-13T15:00Z must be before --until 2025-01-13T15:00Z",
        ),
    ],
)
def test_cli_refuses_a_bad_range_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = _cli("archive", *args, "--out", str(tmp_path / "x.jsonl"), env={})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    closed = f"kafka://127.0.0.1:{free_port()}"
    out = tmp_path / "x.jsonl"
    result = _cli(
        "archive",
        "--since",
        SINCE.isoformat(),
        "--until",
        UNTIL.isoformat(),
        "--out",
        str(out),
        env={"SURGEWATCH_BROKER": closed},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no Kafka broker at {closed}: start one (`surgewatch broker`) or set SURGEWATCH_BROKER"
    ]
    assert not out.exists()
    assert not Path(f"{out}.partial").exists()


def test_a_missing_topic_is_one_clear_error(
    isolated_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    env = isolated_env("sw-archive-missing")
    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    with pytest.raises(ArchiveError, match=r"topic '.*' \(posts\) does not exist"):
        asyncio.run(archive(settings, SINCE, UNTIL, tmp_path / "x.jsonl"))


def test_merge_keeps_each_partition_in_order_and_interleaves_on_timestamp() -> None:
    def record(name: str) -> EventRecord:
        return EventRecord("posts", None, name)

    first = deque([(10, 0, 0, record("a10")), (35, 0, 1, record("a35")), (20, 0, 2, record("a20"))])
    second = deque([(15, 1, 0, record("b15")), (40, 1, 1, record("b40"))])
    assert [r.value for r in merge_ready([first, second], bound_ms=30)] == ["a10", "b15"]
    # a20 (out of order) stays behind a35 in its partition; b40 waited for the bound.
    rest = merge_ready([first, second], bound_ms=float("inf"))
    assert [r.value for r in rest] == ["a35", "a20", "b40"]
    assert not first and not second


def test_cli_archive_explains_itself() -> None:
    result = _cli("archive", "--help", env={})
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: python -m surgewatch archive")
    assert "--since" in result.stdout and "--until" in result.stdout and "--out" in result.stdout
