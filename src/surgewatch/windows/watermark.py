"""Source watermarks: per input partition, the largest event time read, idleness and lateness.

The watermark of a partition is the largest event time read from it. An event is late when its
window has closed for its own partition (``end + grace <= watermark``): that decision depends only on
the order of the partition's own records, so it is the same whichever worker reads the partition and
however fast. The stream's watermark is the minimum over partitions; a partition with nothing left to
read, or silent for ``grace_seconds`` of wall time, stops holding it back: its watermark is raised to
the minimum of the busy partitions (or, when every partition is idle, to the largest event time read,
advancing with wall time once the stream has been silent for ``grace_seconds``). Once raised, the
partition judges its later events against the raised watermark, so nothing can reach a window that a
downstream partition already closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NO_TIME = -math.inf


@dataclass(slots=True)
class PartitionClock:
    """What is known about one input partition."""

    max_event_seconds: float = NO_TIME
    watermark_seconds: float = NO_TIME
    last_record_wall_seconds: float = 0.0
    next_offset: int | None = None
    highwater: int | None = None

    def caught_up(self) -> bool:
        """Nothing left to read, as far as the last fetch told (an empty partition counts)."""
        if self.highwater == 0:
            return True
        return (
            self.next_offset is not None
            and self.highwater is not None
            and self.next_offset >= self.highwater
        )

    def known_behind(self) -> bool:
        """The last fetch said there is more to read."""
        return (
            self.next_offset is not None
            and self.highwater is not None
            and self.next_offset < self.highwater
        )


class SourceWatermarks:
    """Watermarks of the partitions of one input stream that this worker reads."""

    def __init__(self, window_seconds: int, grace_seconds: int) -> None:
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.partitions: dict[int, PartitionClock] = {}

    def assign(self, partition: int, now_wall_seconds: float) -> PartitionClock:
        """Start tracking ``partition`` (idempotent)."""
        clock = self.partitions.get(partition)
        if clock is None:
            clock = self.partitions[partition] = PartitionClock(
                last_record_wall_seconds=now_wall_seconds
            )
        return clock

    def revoke(self, partition: int) -> None:
        """Forget a partition another worker now reads."""
        self.partitions.pop(partition, None)

    def late_before_seconds(self, partition: int) -> float:
        """Smallest window end + grace that is still open for ``partition``."""
        return self.partitions[partition].watermark_seconds

    def update_read(
        self,
        partition: int,
        max_event_seconds: float,
        watermark_seconds: float,
        next_offset: int,
        highwater: int | None,
        now_wall_seconds: float,
    ) -> None:
        """Record a batch read from ``partition``: largest event time, watermark after it, position."""
        clock = self.partitions[partition]
        if max_event_seconds > clock.max_event_seconds:
            clock.max_event_seconds = max_event_seconds
        if watermark_seconds > clock.watermark_seconds:
            clock.watermark_seconds = watermark_seconds
        clock.next_offset = next_offset
        if highwater is not None:
            clock.highwater = highwater
        clock.last_record_wall_seconds = now_wall_seconds

    def set_highwater(self, partition: int, highwater: int | None) -> None:
        """Latest end of ``partition`` as the consumer's last fetch reported it."""
        if highwater is not None and partition in self.partitions:
            self.partitions[partition].highwater = highwater

    def is_idle(self, clock: PartitionClock, now_wall_seconds: float) -> bool:
        """Nothing left to read, or silent for ``grace_seconds`` without known backlog."""
        if clock.caught_up():
            return True
        silent = now_wall_seconds - clock.last_record_wall_seconds >= self.grace_seconds
        return silent and not clock.known_behind()

    def advance_idle(self, now_wall_seconds: float) -> list[int]:
        """Raise the watermarks of idle partitions; returns the partitions whose watermark moved."""
        if not self.partitions:
            return []
        busy = {
            partition
            for partition, clock in self.partitions.items()
            if not self.is_idle(clock, now_wall_seconds)
        }
        if busy:
            target = min(self.partitions[partition].watermark_seconds for partition in busy)
        else:
            target = max(c.max_event_seconds for c in self.partitions.values())
            last_wall = max(c.last_record_wall_seconds for c in self.partitions.values())
            silent_seconds = now_wall_seconds - last_wall
            if target != NO_TIME and silent_seconds >= self.grace_seconds:
                target += silent_seconds
        moved = []
        for partition, clock in self.partitions.items():
            if partition in busy or target <= clock.watermark_seconds:
                continue
            clock.watermark_seconds = target
            moved.append(partition)
        return moved

    def stream_watermark_seconds(self) -> float:
        """Smallest watermark over this worker's partitions (``-inf`` before any event)."""
        if not self.partitions:
            return NO_TIME
        return min(c.watermark_seconds for c in self.partitions.values())
