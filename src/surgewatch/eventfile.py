"""Event files: reading and writing recorded input events as JSON Lines, optionally gzip-compressed.

One record a line: ``{"stream": "posts"|"signups", "key": str|null, "value": {event}}``. A ``value``
that is a JSON *string* is the raw Kafka message value (UTF-8) verbatim, which is how a file carries
payloads that are not JSON objects (``"{not json"``, ``"[1, 2]"``). A path ending in ``.gz`` is gzip;
``-`` is stdin/stdout. Writing is byte-deterministic: the same records give the same bytes (gzip with
``mtime=0`` and no embedded file name).
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import orjson

STREAMS: Final = ("posts", "signups")
STDIO_PATH: Final = "-"
#: zlib's own default: about 4x faster than gzip's level 9 for a file a few percent larger. Compression
#: runs in a helper thread (zlib releases the GIL), overlapping with encoding.
GZIP_LEVEL: Final = 6
_GZIP_MAGIC: Final = b"\x1f\x8b"
_WRITE_CHUNK_LINES: Final = 4096
_ENCODE_OPTIONS: Final = orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One recorded input message: the stream it belongs to, its Kafka key and its value."""

    stream: str
    key: str | None
    value: dict[str, Any] | str

    def value_bytes(self) -> bytes:
        """The Kafka message value: the object as compact JSON, or a raw string's UTF-8 bytes."""
        if isinstance(self.value, str):
            return self.value.encode()
        return orjson.dumps(self.value)

    def key_bytes(self) -> bytes | None:
        """The Kafka message key as UTF-8, or ``None``."""
        return None if self.key is None else self.key.encode()


class EventFileError(ValueError):
    """A line of an event file is not a valid record; names the file and the 1-based line."""

    def __init__(self, path: str, line_no: int, reason: str) -> None:
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path = path
        self.line_no = line_no
        self.reason = reason


def _is_gzip_path(path: str) -> bool:
    return path.endswith(".gz")


def encode_record(record: EventRecord) -> bytes:
    """One file line (with its newline) for ``record``; keys always in the order stream, key, value."""
    return orjson.dumps(
        {"stream": record.stream, "key": record.key, "value": record.value}, option=_ENCODE_OPTIONS
    )


def write_events(path: str | os.PathLike[str], records: Iterable[EventRecord]) -> int:
    """Write ``records`` to ``path`` (``-`` = stdout, ``*.gz`` = gzip) and return how many were written."""
    name = os.fspath(path)
    gzipped = _is_gzip_path(name) and name != STDIO_PATH
    with open_output(name) as out:
        if not gzipped:
            return _write_lines(out, records)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gzip") as compressor:
            return _write_lines(out, records, compressor)


@contextmanager
def open_output(
    path: str | os.PathLike[str], *, gzipped: bool | None = None
) -> Iterator[IO[bytes] | gzip.GzipFile]:
    """Open an event file for writing bytes: ``-`` is stdout, gzip when ``gzipped`` (by default when
    the name ends in ``.gz``), with a header that holds nothing but the content (same bytes each run).
    """
    name = os.fspath(path)
    if name == STDIO_PATH:
        stdout = sys.stdout.buffer
        yield stdout
        stdout.flush()
        return
    with open(name, "wb") as raw:
        if not (_is_gzip_path(name) if gzipped is None else gzipped):
            yield raw
            return
        # filename="" and mtime=0 keep the header free of anything but the content.
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0
        ) as gz:
            yield gz


def _write_lines(
    out: IO[bytes] | gzip.GzipFile, records: Iterable[EventRecord], writer: Executor | None = None
) -> int:
    """Encode and write ``records``; with ``writer``, each chunk is written there, one in flight."""
    dumps = orjson.dumps
    options = _ENCODE_OPTIONS
    count = 0
    pending: Future[int] | None = None
    chunk: list[bytes] = []
    append = chunk.append
    for record in records:
        append(
            dumps(
                {"stream": record.stream, "key": record.key, "value": record.value}, option=options
            )
        )
        if len(chunk) >= _WRITE_CHUNK_LINES:
            data = b"".join(chunk)
            count += len(chunk)
            chunk.clear()
            if writer is None:
                out.write(data)
            else:
                if pending is not None:
                    pending.result()
                pending = writer.submit(out.write, data)
    if pending is not None:
        pending.result()
    if chunk:
        out.write(b"".join(chunk))
        count += len(chunk)
    return count


def decode_line(line: bytes, path: str, line_no: int) -> EventRecord:
    """Parse one file line into a record; raises :class:`EventFileError` naming ``path:line_no``."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EventFileError(path, line_no, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise EventFileError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
    stream = obj.get("stream")
    if stream not in STREAMS:
        raise EventFileError(
            path, line_no, f"stream must be one of {list(STREAMS)}, got {stream!r}"
        )
    key = obj.get("key")
    if key is not None and not isinstance(key, str):
        raise EventFileError(
            path, line_no, f"key must be a string or null, got {type(key).__name__}"
        )
    if "value" not in obj:
        raise EventFileError(path, line_no, "missing field 'value'")
    value = obj["value"]
    if not isinstance(value, dict | str):
        raise EventFileError(
            path, line_no, f"value must be an object or a string, got {type(value).__name__}"
        )
    return EventRecord(stream, key, value)


class EventReader:
    """Reads an event file line by line and knows how far into it (in bytes on disk) it has got.

    Use as a context manager. Iterating yields ``(line_no, record_or_error)`` so a caller can count and
    skip bad lines; :func:`read_events` is the strict variant. Blank lines are skipped.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._raw: IO[bytes] | None = None
        self._stream: IO[bytes] | gzip.GzipFile | None = None
        self._owns_raw = False

    @property
    def size_bytes(self) -> int | None:
        """The file's size on disk, or ``None`` for stdin."""
        return None if self.path == STDIO_PATH else Path(self.path).stat().st_size

    def position_bytes(self) -> int:
        """How many bytes of the file on disk have been consumed (compressed bytes for gzip)."""
        if self._raw is None or self.path == STDIO_PATH:
            return 0
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def open(self) -> EventReader:
        """Open the file; a missing or unreadable file raises :class:`EventFileError` (line 0)."""
        if self.path == STDIO_PATH:
            raw: IO[bytes] = sys.stdin.buffer
            peek = getattr(raw, "peek", None)
            head = peek(2)[:2] if peek is not None else b""
            gzipped = head == _GZIP_MAGIC
        else:
            try:
                raw = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise EventFileError(self.path, 0, f"cannot open ({exc.strerror})") from None
            self._owns_raw = True
            gzipped = _is_gzip_path(self.path)
        self._raw = raw
        self._stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        return self

    def close(self) -> None:
        """Close the file (never stdin itself)."""
        if self._stream is not None and self._stream is not self._raw:
            self._stream.close()
        if self._raw is not None and self._owns_raw:
            self._raw.close()
        self._raw = self._stream = None

    def __enter__(self) -> EventReader:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[int, EventRecord | EventFileError]]:
        if self._stream is None:
            raise RuntimeError("EventReader must be opened before iterating")
        path = self.path
        line_no = 0
        lines: Iterator[bytes] = iter(self._stream)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                yield line_no + 1, EventFileError(path, line_no + 1, f"unreadable ({exc})")
                return
            line_no += 1
            if not line.strip():
                continue
            try:
                yield line_no, decode_line(line, path, line_no)
            except EventFileError as error:
                yield line_no, error


def iter_events_with_errors(
    path: str | os.PathLike[str],
) -> Iterator[tuple[int, EventRecord | EventFileError]]:
    """Yield ``(line_no, record)`` for good lines and ``(line_no, EventFileError)`` for bad ones."""
    with EventReader(path) as reader:
        yield from reader


def read_events(path: str | os.PathLike[str]) -> Iterator[EventRecord]:
    """Yield the records of an event file in order; raises :class:`EventFileError` at the first bad line."""
    for _, item in iter_events_with_errors(path):
        if isinstance(item, EventFileError):
            raise item
        yield item


def encode_records(records: Iterable[EventRecord]) -> bytes:
    """The whole file content (uncompressed) for ``records``; handy in tests."""
    buffer = io.BytesIO()
    _write_lines(buffer, records)
    return buffer.getvalue()
