"""Replay: produces recorded event files into the input topics, each message stamped with its event time.

At ``speed=None`` records go out as fast as the broker takes them: they are packed straight into
per-partition record batches (the partition chosen as Kafka's default partitioner does, murmur2 of the
key) instead of one ``send()`` per record, which is several times faster in Python. With ``speed=X``
the replay is paced on event time: the first event's time ``t0`` maps to the wall clock ``w0`` and an
event of time ``t`` is produced no earlier than ``w0 + (t - t0) / X``. Bad file lines are counted,
named in a warning and skipped.

Every record gets a time: its own ``ts``, or for a record without a readable one (malformed, bad
``ts``; still produced, the worker rejects it) the time of the readable event before it in the same
file (at the start of a file, of the first one after it). That time is its Kafka timestamp, so a
malformed record sits among its neighbours in time and ``archive`` finds it there; ``since``/``until``
cut on it, and ``rebase_to_now`` shifts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from surgewatch.config import Settings
from surgewatch.eventfile import STDIO_PATH, EventFileError, EventReader, EventRecord
from surgewatch.events.timestamps import MILLIS_THRESHOLD, parse_ts
from surgewatch.partitioner import KafkaPartitioner
from surgewatch.progress import BYTES, track
from surgewatch.worker.topics import BrokerUnreachable, ensure_topics

log = logging.getLogger(__name__)

#: Producer batch size: big batches are what makes a Python producer fast.
MAX_BATCH_BYTES: Final = 512 * 1024
LINGER_MS: Final = 10
#: Sleep only when this far ahead of the schedule: coarse steps, never one sleep per event.
PACE_STEP_SECONDS: Final = 0.02
#: Events between progress updates and refreshes of the "now" used to validate ``ts``.
_CHUNK_EVENTS: Final = 4096
#: Delivery futures collected before waiting on them (each partition has at most one batch queued).
_MAX_PENDING_FUTURES: Final = 64
#: Bad lines named one by one before only counting them.
_MAX_WARNINGS: Final = 20
#: Records without a readable ``ts`` held at the start of a file while waiting for the first time.
_MAX_LEADING_UNTIMED: Final = 10_000
#: An ISO time in the extended format: date, separator, hh:mm[:ss], fraction, zone designator.
_ISO_PARTS: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2})([Tt ])(\d{2}:\d{2}(?::\d{2})?)([.,]\d+)?"
    r"([Zz]|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?)"
)


class ReplayError(RuntimeError):
    """Replay cannot go on; the message is one line saying what is wrong and what to do."""


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """What a replay produced."""

    events: int
    rejected_lines: int
    seconds: float
    events_per_s: float
    by_stream: dict[str, int] = field(default_factory=dict)
    #: Records left out by ``since``/``until``.
    outside_range: int = 0
    #: Seconds added to every event time by ``rebase_to_now`` (0 without it).
    rebase_seconds: int = 0


class _BatchSink:
    """Packs records into one open batch per (topic, partition) and hands full ones to the producer."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, list[int]]) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], Any] = {}
        self._pending: list[asyncio.Future[Any]] = []
        self.partition = KafkaPartitioner(partitions).partition

    async def add(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int) -> None:
        """Queue one record; sends the partition's batch when it is full."""
        partition = self.partition(topic, key)
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=timestamp_ms) is not None:
            return
        if batch.record_count():
            await self._send(slot, batch)
            batch = self._open[slot] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=timestamp_ms) is not None:
                return
        # Larger than a whole batch: the producer's own path (it refuses what the broker would).
        future = await self._producer.send(
            topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms
        )
        self._pending.append(future)

    async def _send(self, slot: tuple[str, int], batch: Any) -> None:
        topic, partition = slot
        self._pending.append(await self._producer.send_batch(batch, topic, partition=partition))
        if len(self._pending) >= _MAX_PENDING_FUTURES:
            await self.wait_delivered()

    async def flush(self) -> None:
        """Send every open batch, however small."""
        open_batches = [(slot, batch) for slot, batch in self._open.items() if batch.record_count()]
        self._open.clear()
        for slot, batch in open_batches:
            await self._send(slot, batch)

    async def wait_delivered(self) -> None:
        """Wait until everything handed to the producer is acknowledged; raises on a failed batch."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)


def _event_seconds(value: dict[str, Any] | str, now_seconds: float) -> float | None:
    """The event time of a record's value, or ``None`` when it has no readable ``ts``."""
    if isinstance(value, str):
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(decoded, dict):
            return None
        value = decoded
    return parse_ts(value.get("ts"), now_seconds)


def _check_files(paths: Sequence[str]) -> None:
    if not paths:
        raise ReplayError("no event file given: pass one or more FILE (or - for stdin)")
    if list(paths).count(STDIO_PATH) > 1:
        raise ReplayError("stdin (-) can be read only once: give - once")
    for path in paths:
        if path != STDIO_PATH and not os.path.isfile(path):
            raise ReplayError(f"no such event file: {path}")


def in_range(event_s: float, since_s: float | None, until_s: float | None) -> bool:
    """Whether ``event_s`` lies in ``[since_s, until_s)``; a missing bound does not limit."""
    return (since_s is None or event_s >= since_s) and (until_s is None or event_s < until_s)


def shift_ts(value: object, offset_seconds: int) -> object:
    """A readable ``ts`` moved by ``offset_seconds``, in its own format.

    Integers stay integers and milliseconds stay milliseconds (a number above 1e11, as
    :func:`~surgewatch.events.timestamps.parse_ts` reads it); an ISO string stays an ISO string with
    the same zone designator (``Z`` or its offset), separator and fraction digits. Anything else is
    returned unchanged.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value + offset_seconds * (1000 if value > MILLIS_THRESHOLD else 1)
    if isinstance(value, str):
        return _shift_iso(value, offset_seconds)
    return value


def _shift_iso(text: str, offset_seconds: int) -> str:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text
    shifted = parsed + timedelta(seconds=offset_seconds)
    parts = _ISO_PARTS.fullmatch(text)
    if parts is None or parsed.tzinfo is None:
        # An unusual spelling (basic format, week date): plain extended ISO with the same offset.
        shifted_text = shifted.isoformat()
        return shifted_text[:-6] + "Z" if text.endswith(("Z", "z")) else shifted_text
    _, separator, _, fraction, zone = parts.groups()
    # A whole-second shift leaves the fraction as it was, digit for digit.
    return f"{shifted:%Y-%m-%d}{separator}{shifted:%H:%M:%S}{fraction or ''}{zone}"


def timed_records(
    items: Iterable[tuple[int, EventRecord | EventFileError]],
    wall_seconds: Callable[[], float],
    on_bad_line: Callable[[EventFileError], None],
) -> Iterator[tuple[EventRecord, float, bool]]:
    """``(record, event_s, has_ts)`` for the records of one file, bad lines going to ``on_bad_line``.

    ``event_s`` is the record's own ``ts`` (``has_ts``), else the time of the readable record before
    it, else (at the start of the file) of the first readable one after it; a file with no readable
    ``ts`` at all falls back to ``wall_seconds()``. ``wall_seconds`` is also the "now" that bounds a
    readable ``ts``, refreshed every few thousand records.
    """
    now_s = wall_seconds()
    last_s: float | None = None
    leading: list[EventRecord] = []
    for count, (_, item) in enumerate(items, 1):
        if isinstance(item, EventFileError):
            on_bad_line(item)
            continue
        if count % _CHUNK_EVENTS == 0:
            now_s = wall_seconds()
        event_s = _event_seconds(item.value, now_s)
        if event_s is None:
            if last_s is not None:
                yield item, last_s, False
                continue
            leading.append(item)
            if len(leading) >= _MAX_LEADING_UNTIMED:
                last_s = wall_seconds()
                for held in leading:
                    yield held, last_s, False
                leading.clear()
            continue
        for held in leading:
            yield held, event_s, False
        leading.clear()
        last_s = event_s
        yield item, event_s, True
    if leading:
        fallback_s = wall_seconds()
        for held in leading:
            yield held, fallback_s, False


def rebased(record: EventRecord, offset_seconds: int, has_ts: bool) -> EventRecord:
    """``record`` with its value's ``ts`` moved by ``offset_seconds`` (a raw string stays verbatim)."""
    value = record.value
    if not has_ts or offset_seconds == 0 or isinstance(value, str):
        return record
    return EventRecord(
        record.stream, record.key, {**value, "ts": shift_ts(value.get("ts"), offset_seconds)}
    )


async def _connect(settings: Settings) -> tuple[AIOKafkaProducer, dict[str, list[int]]]:
    """Create the input topics when missing, start a producer and learn each topic's partitions."""
    topics = [settings.posts_topic, settings.signups_topic]
    try:
        await ensure_topics(settings, topics)
    except (BrokerUnreachable, KafkaConnectionError) as exc:
        raise ReplayError(str(exc) or f"no Kafka broker at {settings.broker}") from None
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks=1,
        enable_idempotence=False,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        compression_type=None,
        **settings.kafka_security_kwargs(),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise ReplayError(
            f"cannot connect to the Kafka broker at {settings.broker} ({exc}): is it running?"
        ) from None
    partitions: dict[str, list[int]] = {}
    for topic in topics:
        found = await producer.partitions_for(topic)
        partitions[topic] = sorted(found) if found else [0]
    return producer, partitions


class _Pacer:
    """Holds a paced replay to its schedule: event time ``t`` is due at ``w0 + (t - t0) / speed``."""

    def __init__(
        self,
        speed: float | None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._speed = speed
        self._clock = clock
        self._sleep = sleep
        self._first_event_s: float | None = None
        self._first_wall = 0.0

    def ahead_seconds(self, event_s: float) -> float:
        """How long before ``event_s`` is due (0 at max speed); the first call starts the schedule."""
        if self._speed is None:
            return 0.0
        if self._first_event_s is None:
            self._first_event_s, self._first_wall = event_s, self._clock()
        due = self._first_wall + (event_s - self._first_event_s) / self._speed
        return due - self._clock()

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)


class _BadLines:
    """Counts unreadable lines and names the first few of them in warnings."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, error: EventFileError) -> None:
        self.count += 1
        if self.count <= _MAX_WARNINGS:
            log.warning("skipping bad line %s", error)
        elif self.count == _MAX_WARNINGS + 1:
            log.warning(
                "more bad lines from %s:%d on: counting them only", error.path, error.line_no
            )


async def replay(
    paths: Sequence[str],
    settings: Settings,
    *,
    speed: float | None,
    progress: bool,
    since: datetime | None = None,
    until: datetime | None = None,
    rebase_to_now: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    wall_seconds: Callable[[], float] = time.time,
) -> ReplayStats:
    """Produce the records of ``paths`` (in order; ``-`` is stdin) to the posts/signups topics.

    ``speed=None`` is as fast as possible; ``speed=60`` plays an hour of event time in a minute.
    ``progress`` shows a bar on a terminal (never in CI or a pipe). ``since``/``until`` keep only the
    records whose time is in ``[since, until)``. ``rebase_to_now`` moves every event time by one
    whole number of seconds so that the first record produced plays as now, rewriting each value's
    ``ts`` in its own format (see :func:`shift_ts`) and the Kafka timestamp: for demos and alert
    tests. ``clock``/``sleep`` pace the replay and ``wall_seconds`` is "now"; tests may inject them.
    Raises :class:`ReplayError` for a missing file, a bad option or an unreachable broker.
    """
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise ReplayError(f"--speed must be a positive number, got {speed}")
    since_s = None if since is None else _aware_seconds(since, "--from")
    until_s = None if until is None else _aware_seconds(until, "--until")
    if since_s is not None and until_s is not None and since_s >= until_s:
        raise ReplayError(f"--from {since} must be before --until {until}")
    _check_files(paths)
    topic_of = {"posts": settings.posts_topic, "signups": settings.signups_topic}
    sizes = [0 if path == STDIO_PATH else os.path.getsize(path) for path in paths]
    producer, partitions = await _connect(settings)
    sink = _BatchSink(producer, partitions)
    pacer = _Pacer(speed, clock, sleep)
    bad_lines = _BadLines()
    by_stream = dict.fromkeys(topic_of, 0)
    events = outside = 0
    offset_s: int | None = None if rebase_to_now else 0
    started = clock()
    try:
        enabled = None if progress else False  # None: only on a terminal, outside CI
        with track(sum(sizes) or None, "replay", BYTES, enabled=enabled) as tracker:
            done_bytes = 0
            for path, size in zip(paths, sizes, strict=True):
                with EventReader(path) as reader:
                    for record, event_s, has_ts in timed_records(
                        reader, wall_seconds, bad_lines.add
                    ):
                        if not in_range(event_s, since_s, until_s):
                            outside += 1
                            continue
                        if offset_s is None:
                            offset_s = round(wall_seconds() - event_s)
                        if offset_s:
                            event_s += offset_s
                            record = rebased(record, offset_s, has_ts)
                        ahead = pacer.ahead_seconds(event_s)
                        if ahead > PACE_STEP_SECONDS:
                            await sink.flush()  # what is due goes out before we wait
                            await pacer.sleep(ahead)
                        await sink.add(
                            topic_of[record.stream],
                            record.key_bytes(),
                            record.value_bytes(),
                            round(event_s * 1000),
                        )
                        events += 1
                        by_stream[record.stream] += 1
                        if events % _CHUNK_EVENTS == 0:
                            position = done_bytes + reader.position_bytes()
                            tracker.update(position, note=f"{events:,} events")
                done_bytes += size
                tracker.update(done_bytes, note=f"{events:,} events")
            await sink.flush()
            await sink.wait_delivered()
            await producer.flush()
    except KafkaError as exc:
        raise ReplayError(f"producing to {settings.broker} failed: {exc}") from None
    except EventFileError as exc:
        raise ReplayError(str(exc)) from None
    finally:
        await producer.stop()
    seconds = clock() - started
    if bad_lines.count:
        log.warning("skipped %d bad line(s) in %s", bad_lines.count, ", ".join(paths))
    return ReplayStats(
        events=events,
        rejected_lines=bad_lines.count,
        seconds=seconds,
        events_per_s=events / seconds if seconds > 0 else 0.0,
        by_stream=by_stream,
        outside_range=outside,
        rebase_seconds=offset_s or 0,
    )


def _aware_seconds(moment: datetime, flag: str) -> float:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ReplayError(f"{flag} {moment.isoformat()} has no time zone: add Z or an offset")
    return moment.timestamp()
