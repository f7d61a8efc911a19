"""Snapshots of a downstream partition's counting state, kept in the partials topic itself.

A downstream partition's state (open windows, closed boundary, what was applied from each input
partition) is rebuilt after a takeover from the log, not from a changelog whose end offset would
have to be trusted: every few seconds the owner writes its state, in chunks, into the same partials
partition, and commits the offset the snapshot was taken at (everything before it is in the
snapshot). The next owner starts reading at that committed offset; the records it meets are the
partials written after the snapshot was taken and, among them, the snapshot's chunks. It holds the
partials back until the chunks are complete, restores the state, then applies them. Nothing
depends on a reported end offset, so the embedded broker (whose end offsets can be wrong while
producers batch) recovers exactly too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

#: Record values that start with this are snapshot chunks, not partials (a partial is JSON).
MAGIC = b"\x00snapshot"
_HEADER = struct.Struct(">qII")
#: Payload bytes a chunk (far below Kafka's 1 MiB message limit).
CHUNK_BYTES = 512 * 1024


def is_chunk(value: bytes | None) -> bool:
    """Whether a partials-topic record is a snapshot chunk."""
    return value is not None and value.startswith(MAGIC)


def encode_chunks(offset: int, state: dict[str, Any]) -> list[bytes]:
    """The record values of the snapshot of the state after applying everything below ``offset``."""
    payload = orjson.dumps(state)
    pieces = [payload[i : i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]
    return [
        MAGIC + _HEADER.pack(offset, index, len(pieces)) + piece
        for index, piece in enumerate(pieces)
    ]


def decode_chunk(value: bytes) -> tuple[int, int, int, bytes]:
    """``(offset, index, total, payload)`` of a chunk."""
    start = len(MAGIC)
    offset, index, total = _HEADER.unpack_from(value, start)
    return offset, index, total, value[start + _HEADER.size :]


@dataclass(slots=True)
class Restore:
    """A partition being taken over at ``offset``: its snapshot's chunks and the records after it.

    Normally the snapshot taken at ``offset`` is the first thing read. Should one of its chunks
    never arrive (a broker that lost an acknowledged write), a later snapshot of the same partition
    serves as well: it holds everything applied below its own offset, so the records held from
    before it are dropped and the restore continues from there.
    """

    offset: int
    #: Snapshot offset (at or after ``offset``) -> chunk index -> payload, and chunk counts.
    chunks: dict[int, dict[int, bytes]] = field(default_factory=dict)
    totals: dict[int, int] = field(default_factory=dict)
    #: Records read after ``offset`` that are not snapshot chunks, in order.
    held: list[Any] = field(default_factory=list)
    #: The offset after the last record taken.
    next_offset: int = -1

    def add(self, record: Any) -> None:
        """Take one record (an aiokafka ``ConsumerRecord``) read after the committed offset."""
        self.next_offset = record.offset + 1
        value = record.value
        if is_chunk(value):
            offset, index, total, payload = decode_chunk(value)
            if offset >= self.offset:
                self.chunks.setdefault(offset, {})[index] = payload
                self.totals[offset] = total
            return
        self.held.append(record)

    def state(self) -> dict[str, Any] | None:
        """The earliest snapshot whose chunks have all been read (``offset`` becomes its offset,
        and ``held`` the records from there on), or ``None`` while there is none."""
        complete = [o for o, chunks in self.chunks.items() if len(chunks) >= self.totals[o]]
        if not complete:
            return None
        offset = min(complete)
        chunks = self.chunks[offset]
        data: dict[str, Any] = orjson.loads(b"".join(chunks[i] for i in range(len(chunks))))
        if offset != self.offset:
            self.offset = offset
            self.held = [record for record in self.held if record.offset >= offset]
        return data
