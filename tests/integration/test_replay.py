"""Replay against a real broker: every record on the right topic and partition, byte for byte, stamped
with its event time (a record without one, with its neighbour's); bad lines counted and skipped;
``--speed`` pacing holds; the command line's files, stdin, ``--from``/``--until`` and
``--rebase-to-now`` do what they say."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
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
from surgewatch.eventfile import EventRecord, encode_records, read_events, write_events
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


def _stamps_ms(records: list[EventRecord]) -> list[int]:
    """The Kafka timestamp of each record of one file: its own time, else the previous readable
    record's, else (at the start) the first readable one's."""
    own = [_event_ms(record) for record in records]
    first = next(ms for ms in own if ms is not None)
    stamps: list[int] = []
    for ms in own:
        stamps.append(ms if ms is not None else (stamps[-1] if stamps else first))
    return stamps


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

    stats = asyncio.run(replay([str(path), str(plain)], settings, speed=None, progress=False))

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
        stamped = {
            (r.key_bytes(), r.value_bytes()): ms
            for r, ms in zip(expected, _stamps_ms(expected), strict=True)
        }
        for message in got:
            assert message.timestamp == stamped[(message.key, message.value)]
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


def _cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "surgewatch", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {}), "CI": "1"},
        check=False,
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def test_cli_replays_files_and_stdin_cut_to_a_range(
    isolated_env: Callable[[str], dict[str, str]], broker: Any, tmp_path: Path
) -> None:
    t0 = START.timestamp()
    env = isolated_env("sw-replay-range")
    # File A: posts every minute (seconds), a malformed record among them (it takes the time of
    # the post before it, t0 + 240); file B: signups (ISO), with an unreadable line 3; stdin: posts (ms).
    file_a = [
        EventRecord("posts", f"a{i}", {"event_id": f"a{i}", "user_id": f"a{i}", "ts": t0 + 60 * i})
        for i in range(10)
    ]
    file_a.insert(5, EventRecord("posts", "bad", "{malformed"))
    file_b = [
        EventRecord(
            "signups",
            f"b{i}",
            {"event_id": f"b{i}", "user_id": f"b{i}", "ts": _iso(t0 + 30 + 60 * i)},
        )
        for i in range(10)
    ]
    from_stdin = [
        EventRecord(
            "posts",
            None,
            {"event_id": f"c{i}", "user_id": "c", "ts": int((t0 + 15 + 60 * i) * 1000)},
        )
        for i in range(10)
    ]
    path_a, path_b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"
    write_events(path_a, file_a)
    write_events(path_b, file_b)
    lines_b = path_b.read_bytes().splitlines(keepends=True)
    path_b.write_bytes(b"".join([*lines_b[:2], b'{"stream": "posts"\n', *lines_b[2:]]))

    result = _cli(
        "replay",
        str(path_a),
        "-",
        str(path_b),
        "--from",
        _iso(t0 + 120),
        "--until",
        _iso(t0 + 420),
        env=env,
        stdin=encode_records(from_stdin),
    )

    assert result.returncode == 0, result.stderr
    assert f"{path_b}:3: not valid JSON" in result.stderr.decode()
    # In [t0+120, t0+420): a2..a6, the malformed post (t0+240), c2..c6, b2..b6.
    summary = result.stdout.decode().strip().splitlines()[-1]
    assert summary.startswith("replayed 16 events (posts 11, signups 5) in ")
    assert summary.endswith("; 1 unreadable lines skipped; 15 outside --from/--until")
    posts = asyncio.run(_read_exactly(broker.bootstrap, env["SURGEWATCH_POSTS_TOPIC"], 11))
    signups = asyncio.run(_read_exactly(broker.bootstrap, env["SURGEWATCH_SIGNUPS_TOPIC"], 5))
    assert (len(posts), len(signups)) == (11, 5)
    post_ids = sorted(orjson.loads(m.value)["event_id"] for m in posts if m.value != b"{malformed")
    assert post_ids == sorted([f"a{i}" for i in range(2, 7)] + [f"c{i}" for i in range(2, 7)])
    [malformed] = [m for m in posts if m.value == b"{malformed"]
    assert malformed.timestamp == round((t0 + 240) * 1000)
    assert sorted(orjson.loads(m.value)["event_id"] for m in signups) == [
        f"b{i}" for i in range(2, 7)
    ]


def test_cli_rebase_to_now_moves_every_time_and_keeps_each_format(
    isolated_env: Callable[[str], dict[str, str]], broker: Any, tmp_path: Path
) -> None:
    t0 = START.timestamp()
    env = isolated_env("sw-replay-rebase")
    records = [
        EventRecord("posts", "u1", {"event_id": "s", "user_id": "u1", "ts": int(t0)}),
        EventRecord("posts", "u1", "{malformed"),
        EventRecord("posts", "u2", {"event_id": "iso", "user_id": "u2", "ts": _iso(t0 + 1.5)}),
        EventRecord(
            "posts", "u3", {"event_id": "ms", "user_id": "u3", "ts": int(t0 * 1000) + 600_000}
        ),
    ]
    path = tmp_path / "rebase.jsonl"
    write_events(path, records)

    before = time.time()
    result = _cli("replay", str(path), "--rebase-to-now", env=env)
    after = time.time()

    assert result.returncode == 0, result.stderr
    got = asyncio.run(_read_exactly(broker.bootstrap, env["SURGEWATCH_POSTS_TOPIC"], 4))
    by_id = {
        (orjson.loads(m.value)["event_id"] if m.value != b"{malformed" else "bad"): m for m in got
    }
    first = orjson.loads(by_id["s"].value)["ts"]
    assert isinstance(first, int)
    assert before - 1 <= first <= after + 1
    offset = first - int(t0)
    assert f"event times shifted by {offset:+,} s" in result.stdout.decode()
    assert orjson.loads(by_id["iso"].value)["ts"] == _iso(t0 + 1.5 + offset)
    assert orjson.loads(by_id["ms"].value)["ts"] == int(t0 * 1000) + 600_000 + offset * 1000
    assert by_id["bad"].value == b"{malformed"
    for name, seconds in [("s", t0), ("bad", t0), ("iso", t0 + 1.5), ("ms", t0 + 600)]:
        assert by_id[name].timestamp == round((seconds + offset) * 1000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday"], "Error: --from: 'yesterday' is not an ISO-8601 time"),
        (["--until", "2025-01-13T15:00"], "Error: --until: '2025-01-13T15:00' has no time zone"),
        (
            ["--from", "2025-01-13T15:00Z", "--until", "2025-01-13T14:00Z"],
            "Error: --from 2025-01-13T15:00Z must be before --until 2025-01-13T14:00Z",
        ),
        (["-"], "Error: stdin (-) can be read only once: give - once"),
    ],
)
def test_cli_refuses_a_bad_option_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = _cli("replay", "-", *args, env={"SURGEWATCH_BROKER": "kafka://127.0.0.1:1"})
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(message)
