"""Archive: reads the input topics' events of an event-time range back into an event file.

The reader joins no consumer group and commits nothing: a group-less aiokafka consumer with manually
assigned partitions, so the workers' group, its offsets and its assignments are untouched. Each
partition is read from where the range can begin up to its end as the first fetch reported it (the
fetch response's high watermark, which is right on the embedded broker too, unlike ``ListOffsets``).

Where to begin: ``offsets_for_times(since - SEEK_SLACK_SECONDS)``, which is exact on Apache Kafka when
producers stamp records with the event time (``replay`` does). The answer is checked against the
records themselves: the record at the returned offset must carry the returned timestamp, at or after
the target, and the record before it must be older than the target. The embedded broker (tansu)
answers with arrival times, which fails that check; then every partition is scanned from its earliest
offset instead, and one log line says so. Either way records stamped before ``since - slack`` are
passed over without decoding, so both paths archive the same events.

What is archived: a value that is a JSON object with a readable ``ts`` in ``[since, until)``, as the
object; a value without a readable ``ts`` (not JSON, not an object, a bad ``ts``) as the raw string,
when its Kafka timestamp is in the range. Null values (tombstones) and values that are not UTF-8
cannot be written to an event file; they are counted and skipped. Partitions are merged on the record
timestamp, so the file is in event-time order within the disorder of the topics themselves.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import IO, Any, Final

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import TopicPartition

from surgewatch.broker import quiet_client_logs
from surgewatch.config import Settings
from surgewatch.eventfile import STDIO_PATH, EventRecord, encode_record, open_output
from surgewatch.events.timestamps import (
    MAX_FUTURE_SECONDS,
    MILLIS_THRESHOLD,
    MIN_TS_SECONDS,
    parse_ts,
)
from surgewatch.progress import track

log = logging.getLogger(__name__)

#: How far before ``since`` reading begins: a producer whose clock runs behind may stamp an event of
#: the range a little earlier than its ``ts``. Records stamped before ``since - slack`` are skipped.
SEEK_SLACK_SECONDS: Final = 300.0
#: How long one ``getmany`` waits for records before the loop looks at positions again.
_POLL_TIMEOUT_MS: Final = 200
#: A partition that neither gives records nor reaches its end for this long is an error.
_STALL_SECONDS: Final = 60.0
#: Lines encoded before they are written in one piece.
_WRITE_CHUNK_LINES: Final = 4096
_STREAMS: Final = ("posts", "signups")


class ArchiveError(RuntimeError):
    """Archive cannot go on; the message is one line saying what is wrong and what to do."""


@dataclass(frozen=True, slots=True)
class ArchiveStats:
    """What an archive wrote."""

    events: int
    by_stream: dict[str, int]
    #: Of ``events``, those written as raw strings (no JSON object with a readable ``ts``).
    raw_values: int
    #: Records read from the topics, in range or not.
    records_read: int
    #: Null or non-UTF-8 values in the range: an event file cannot hold them.
    skipped_values: int
    #: True when the broker's ``offsets_for_times`` could not be trusted and the topics were scanned.
    scanned_from_earliest: bool
    seconds: float
    events_per_s: float
    out_path: str
    partitions: int = 0


@dataclass(slots=True)
class _Span:
    """The offsets of one partition to read: ``[start, end)``."""

    begin: int
    end: int
    start: int = 0


class _Selector:
    """Decides, record by record, what goes into the file: pure, no Kafka."""

    __slots__ = ("_max_ts_s", "_now_s", "_since_s", "_skip_below_ms", "_until_s", "raw", "skipped")

    def __init__(self, since_s: float, until_s: float, now_s: float) -> None:
        self._since_s = since_s
        self._until_s = until_s
        self._now_s = now_s
        self._max_ts_s = now_s + MAX_FUTURE_SECONDS
        self._skip_below_ms = math.floor((since_s - SEEK_SLACK_SECONDS) * 1000)
        self.raw = 0
        self.skipped = 0

    def value_in_range(
        self, value: bytes | None, timestamp_ms: int
    ) -> tuple[bool, dict[str, Any] | str | None]:
        """``(in_range, file_value)``; ``file_value`` is ``None`` for a value a file cannot hold."""
        if 0 <= timestamp_ms < self._skip_below_ms:
            return False, None
        obj: Any = None
        if value is not None:
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError:
                obj = None
        if type(obj) is dict:
            ts = obj.get("ts")
            event_s: float | None
            if type(ts) is int or type(ts) is float:
                # parse_ts's number rule, inline: most events carry a number.
                event_s = ts / 1000.0 if ts > MILLIS_THRESHOLD else ts
                if not MIN_TS_SECONDS <= event_s <= self._max_ts_s:  # also false for NaN
                    event_s = None
            else:
                event_s = parse_ts(ts, self._now_s)
            if event_s is not None:
                return self._since_s <= event_s < self._until_s, obj
        # No readable event time: the Kafka timestamp decides.
        if not self._since_s * 1000 <= timestamp_ms < self._until_s * 1000:
            return False, None
        if value is None:
            self.skipped += 1
            return False, None
        try:
            text = value.decode()
        except UnicodeDecodeError:
            self.skipped += 1
            return False, None
        self.raw += 1
        return True, text


#: A record waiting to be written: (Kafka timestamp, partition rank, offset, record).
Buffered = tuple[int, int, int, EventRecord]


def merge_ready(buffers: Iterable[deque[Buffered]], bound_ms: float) -> list[EventRecord]:
    """Take from each partition's buffer the records up to ``bound_ms`` and merge them on timestamp.

    A buffer is in offset order and is only taken from the front, so each partition keeps its own
    order; ``heapq.merge`` interleaves the partitions by (timestamp, partition, offset), so equal
    timestamps come out in the same order on every run.
    """
    runs: list[list[Buffered]] = []
    for buffer in buffers:
        run: list[Buffered] = []
        while buffer and buffer[0][0] <= bound_ms:
            run.append(buffer.popleft())
        if run:
            runs.append(run)
    if not runs:
        return []
    if len(runs) == 1:
        return [item[3] for item in runs[0]]
    return [item[3] for item in heapq.merge(*runs, key=itemgetter(0, 1, 2))]


class _Writer:
    """Writes encoded lines to the output in chunks; gzip compresses in a helper thread."""

    def __init__(self, out: IO[bytes] | Any, threaded: bool) -> None:
        self._out = out
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="archive-gz") if threaded else None
        )
        self._pending: Future[Any] | None = None
        self._chunk: list[bytes] = []

    def add(self, records: Sequence[EventRecord]) -> None:
        chunk = self._chunk
        chunk.extend(map(encode_record, records))
        if len(chunk) >= _WRITE_CHUNK_LINES:
            self._write()

    def _write(self) -> None:
        data = b"".join(self._chunk)
        self._chunk.clear()
        if self._executor is None:
            self._out.write(data)
            return
        if self._pending is not None:
            self._pending.result()
        self._pending = self._executor.submit(self._out.write, data)

    def close(self) -> None:
        if self._chunk:
            self._write()
        if self._pending is not None:
            self._pending.result()
        if self._executor is not None:
            self._executor.shutdown()


def _utc_seconds(moment: datetime, name: str) -> float:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ArchiveError(f"{name} {moment.isoformat()} has no time zone: add Z or an offset")
    return moment.timestamp()


def _unreachable(settings: Settings) -> ArchiveError:
    return ArchiveError(
        f"no Kafka broker at {settings.broker}: start one (`surgewatch broker`) "
        "or set SURGEWATCH_BROKER"
    )


async def _start_consumer(settings: Settings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**settings.reader_kwargs("archive"))
    try:
        with quiet_client_logs():
            await consumer.start()
    except KafkaConnectionError:
        await consumer.stop()
        raise _unreachable(settings) from None
    except KafkaError as exc:
        await consumer.stop()
        raise ArchiveError(f"cannot read from {settings.broker}: {exc}") from None
    return consumer


async def _partitions(consumer: AIOKafkaConsumer, settings: Settings) -> dict[TopicPartition, str]:
    """Every partition of the input topics with its stream; never creates a topic."""
    existing = await consumer.topics()
    stream_of: dict[TopicPartition, str] = {}
    for stream, topic in (("posts", settings.posts_topic), ("signups", settings.signups_topic)):
        if topic not in existing:
            raise ArchiveError(
                f"topic {topic!r} ({stream}) does not exist at {settings.broker}: check "
                f"SURGEWATCH_{stream.upper()}_TOPIC"
            )
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            stream_of[TopicPartition(topic, partition)] = stream
    return stream_of


async def _first_records(
    consumer: AIOKafkaConsumer, wanted: dict[TopicPartition, int], count: int, deadline: float
) -> dict[TopicPartition, tuple[list[Any], int]]:
    """Seek each partition to its offset and return its first ``count`` records from there (fewer
    at the end of the partition) with the high watermark the fetch response reported."""
    polled_before = {tp: consumer.last_poll_timestamp(tp) for tp in wanted}
    for tp, offset in wanted.items():
        consumer.seek(tp, offset)
    records: dict[TopicPartition, list[Any]] = {tp: [] for tp in wanted}
    found: dict[TopicPartition, tuple[list[Any], int]] = {}
    while len(found) < len(wanted):
        for tp in sorted(set(wanted) - set(found)):
            # One partition a call, as max_records counts over all of them; what is left of the
            # fetch is never decoded. Meanwhile the others' fetches arrive in the background.
            got = await consumer.getmany(
                tp, timeout_ms=_POLL_TIMEOUT_MS, max_records=count - len(records[tp])
            )
            records[tp] += got.get(tp, [])
            highwater = consumer.highwater(tp)
            if highwater is None or consumer.last_poll_timestamp(tp) == polled_before[tp]:
                continue  # no fetch response from the new position yet
            if len(records[tp]) >= count or await consumer.position(tp) >= highwater:
                found[tp] = (records[tp], highwater)
        if len(found) < len(wanted) and time.monotonic() > deadline:
            late = ", ".join(
                f"{tp.topic}[{tp.partition}]" for tp in sorted(set(wanted) - set(found))
            )
            raise ArchiveError(f"no fetch answer for {late} within {_STALL_SECONDS:.0f} s")
    return found


def _check_seek(
    tp: TopicPartition,
    answer: Any,
    span: _Span,
    records: list[Any],
    target_ms: int,
) -> str | None:
    """Why the broker's ``offsets_for_times`` answer contradicts the records, or ``None`` if it holds.

    ``records`` were fetched from ``max(start - 1, begin)``, ``start`` being the answer clipped to
    the partition's end.
    """
    by_offset = {record.offset: record for record in records}
    before = [record for record in records if record.offset < span.start]
    if before and before[-1].timestamp >= target_ms:
        record = before[-1]
        return (
            f"{tp.topic}[{tp.partition}] offset {record.offset} is stamped {record.timestamp}, "
            f"not before the target {target_ms}"
        )
    if answer is None or span.start >= span.end:
        return None
    record = by_offset.get(span.start)
    if record is None:
        return f"{tp.topic}[{tp.partition}] has no record at the answered offset {span.start}"
    if record.timestamp != answer.timestamp or record.timestamp < target_ms:
        return (
            f"{tp.topic}[{tp.partition}] answered offset {span.start} with timestamp "
            f"{answer.timestamp}, but its record is stamped {record.timestamp}"
        )
    return None


async def _plan(
    consumer: AIOKafkaConsumer,
    stream_of: dict[TopicPartition, str],
    target_ms: int,
    settings: Settings,
) -> tuple[dict[TopicPartition, _Span], bool]:
    """Where each partition's reading starts and ends; ``True`` when falling back to a scan."""
    tps = list(stream_of)
    deadline = time.monotonic() + _STALL_SECONDS
    begins = await consumer.beginning_offsets(tps)
    # The end as of now, from a real fetch: ListOffsets can be wrong on the embedded broker.
    heads = await _first_records(consumer, {tp: begins[tp] for tp in tps}, 1, deadline)
    spans = {tp: _Span(begin=begins[tp], end=max(begins[tp], heads[tp][1])) for tp in tps}
    for span in spans.values():
        span.start = span.begin
    readable = [tp for tp in tps if spans[tp].end > spans[tp].begin]
    if not readable:
        return spans, False
    problem: str | None = None
    try:
        answers = await consumer.offsets_for_times(dict.fromkeys(readable, target_ms))
    except KafkaError as exc:
        answers, problem = {}, f"offsets_for_times failed ({exc})"
    if problem is None:
        for tp in readable:
            answer = answers.get(tp)
            span = spans[tp]
            span.start = (
                span.end if answer is None else max(span.begin, min(answer.offset, span.end))
            )
        probes = {tp: max(spans[tp].begin, spans[tp].start - 1) for tp in readable}
        fetched = await _first_records(consumer, probes, 2, deadline)
        for tp in readable:
            problem = _check_seek(tp, answers.get(tp), spans[tp], fetched[tp][0], target_ms)
            if problem is not None:
                break
    if problem is None:
        return spans, False
    topics = " and ".join(dict.fromkeys(tp.topic for tp in tps))
    log.warning(
        "the broker at %s does not answer offsets_for_times by record timestamp (%s): scanning "
        "%s from the earliest offset instead (expected on the embedded broker)",
        settings.broker,
        problem,
        topics,
    )
    for span in spans.values():
        span.start = span.begin
    return spans, True


async def _read(
    consumer: AIOKafkaConsumer,
    spans: dict[TopicPartition, _Span],
    stream_of: dict[TopicPartition, str],
    selector: _Selector,
    emit: Callable[[list[EventRecord]], None],
    progress: Callable[[int], None],
) -> int:
    """Read every span, hand in-range records to ``emit`` merged on timestamp; return records read."""
    active = {tp for tp, span in spans.items() if span.start < span.end}
    for tp in active:
        consumer.seek(tp, spans[tp].start)
    buffers: dict[TopicPartition, deque[Buffered]] = {tp: deque() for tp in active}
    rank = {tp: index for index, tp in enumerate(sorted(spans))}
    tails: dict[TopicPartition, float] = dict.fromkeys(active, -math.inf)
    read = dict.fromkeys(active, 0)
    last_progress = time.monotonic()
    select = selector.value_in_range
    while active:
        wanted = [tp for tp in active if not buffers[tp]] or list(active)
        got = await consumer.getmany(*wanted, timeout_ms=_POLL_TIMEOUT_MS)
        finished: list[TopicPartition] = []
        for tp, records in got.items():
            end = spans[tp].end
            stream = stream_of[tp]
            buffer = buffers[tp]
            tail = tails[tp]
            tp_rank = rank[tp]
            count = 0
            for record in records:
                if record.offset >= end:
                    break
                count += 1
                timestamp = record.timestamp
                if timestamp > tail:
                    tail = timestamp
                keep, value = select(record.value, timestamp)
                if keep and value is not None:
                    key = None if record.key is None else record.key.decode(errors="replace")
                    record_out = EventRecord(stream, key, value)
                    buffer.append((timestamp, tp_rank, record.offset, record_out))
            tails[tp] = tail
            read[tp] += count
            if records and records[-1].offset + 1 >= end:
                finished.append(tp)
        for tp in wanted:
            if tp not in got and await consumer.position(tp) >= spans[tp].end:
                finished.append(tp)
        now = time.monotonic()
        if got or finished:
            last_progress = now
        elif now - last_progress > _STALL_SECONDS:
            stuck = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(active))
            raise ArchiveError(f"no records from {stuck} for {_STALL_SECONDS:.0f} s before its end")
        active.difference_update(finished)
        bound = min((tails[tp] for tp in active), default=math.inf)
        ready = merge_ready(buffers.values(), bound)
        if ready:
            emit(ready)
        progress(sum(read.values()))
    return sum(read.values())


async def _archive_into(
    settings: Settings,
    since_s: float,
    selector: _Selector,
    writer: _Writer,
    by_stream: dict[str, int],
    progress: bool,
) -> tuple[dict[TopicPartition, _Span], bool, int]:
    """Connect, plan and read; returns the spans, whether the topics were scanned, records read."""
    consumer = await _start_consumer(settings)
    try:
        stream_of = await _partitions(consumer, settings)
        consumer.assign(list(stream_of))
        target_ms = math.floor((since_s - SEEK_SLACK_SECONDS) * 1000)
        spans, scanned = await _plan(consumer, stream_of, target_ms, settings)
        total = sum(span.end - span.start for span in spans.values())

        def emit(records: list[EventRecord]) -> None:
            for record in records:
                by_stream[record.stream] += 1
            writer.add(records)

        enabled = None if progress else False  # None: only on a terminal, outside CI
        with track(total or None, "archive", "records", enabled=enabled) as tracker:

            def show(done: int) -> None:
                tracker.update(done, note=f"{sum(by_stream.values()):,} events")

            records_read = await _read(consumer, spans, stream_of, selector, emit, show)
    except KafkaConnectionError:
        raise _unreachable(settings) from None
    except KafkaError as exc:
        raise ArchiveError(f"reading from {settings.broker} failed: {exc}") from None
    finally:
        await consumer.stop()
    return spans, scanned, records_read


async def archive(
    settings: Settings,
    since: datetime,
    until: datetime,
    out_path: str | os.PathLike[str],
    *,
    progress: bool = False,
    wall_seconds: Callable[[], float] = time.time,
) -> ArchiveStats:
    """Write the posts and signups events whose event time is in ``[since, until)`` to ``out_path``.

    ``out_path`` is ``.jsonl``, ``.jsonl.gz`` or ``-`` (stdout); a file is written beside it and
    renamed into place only when complete. ``progress`` shows a bar on a terminal. ``wall_seconds``
    is the "now" that bounds a readable ``ts`` (as the worker's does). Raises :class:`ArchiveError`
    for a bad range, an unwritable file, an unreachable broker or a missing topic.
    """
    since_s = _utc_seconds(since, "--since")
    until_s = _utc_seconds(until, "--until")
    if since_s >= until_s:
        raise ArchiveError(
            f"--since {since.isoformat()} must be before --until {until.isoformat()}"
        )
    name = os.fspath(out_path)
    gzipped = name.endswith(".gz")
    temporary = name if name == STDIO_PATH else f"{name}.partial"
    selector = _Selector(since_s, until_s, wall_seconds())
    started = time.monotonic()
    by_stream = dict.fromkeys(_STREAMS, 0)
    completed = False
    try:
        with contextlib.ExitStack() as stack:
            try:
                out = stack.enter_context(open_output(temporary, gzipped=gzipped))
            except OSError as exc:
                raise ArchiveError(f"cannot write {name}: {exc.strerror or exc}") from None
            writer = _Writer(out, threaded=gzipped)
            stack.callback(writer.close)
            spans, scanned, records_read = await _archive_into(
                settings, since_s, selector, writer, by_stream, progress
            )
        completed = True
    finally:
        if name != STDIO_PATH:
            if completed:
                os.replace(temporary, name)
            else:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
    seconds = time.monotonic() - started
    events = sum(by_stream.values())
    if selector.skipped:
        log.warning(
            "skipped %d value(s) in the range that an event file cannot hold (null or not UTF-8)",
            selector.skipped,
        )
    return ArchiveStats(
        events=events,
        by_stream=by_stream,
        raw_values=selector.raw,
        records_read=records_read,
        skipped_values=selector.skipped,
        scanned_from_earliest=scanned,
        seconds=seconds,
        events_per_s=events / seconds if seconds > 0 else 0.0,
        out_path=name,
        partitions=len(spans),
    )
