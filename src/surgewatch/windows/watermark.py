"""Source watermarks: per input partition, the largest event time read, idleness and lateness.

The watermark of a partition is the largest event time read from it. An event is late when its
window has closed for its own partition (``end + grace <= watermark``): that decision depends only on
the order of the partition's own records, so it is the same whichever worker reads the partition and
however fast. The stream's watermark is the minimum over partitions; a partition with nothing left to
read, or silent for ``grace_seconds`` of wall time, stops holding it back: its watermark is raised to
the minimum of the busy partitions (or, when every partition is idle, to the largest event time read,
advancing with wall time once the stream has been quiet for ``grace_seconds``). Once raised, the
partition judges its later events against the raised watermark, so nothing can reach a window that a
downstream partition already closed.

Idleness is only believed on fresh evidence: a partition counts as idle only while a fetch response
has confirmed its end within ``fresh_seconds``. A stalled broker or a paused worker therefore holds
the watermark where it is instead of turning the backlog it has not seen yet into late events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NO_TIME = -math.inf
#: How recent a fetch response must be for its end offset to prove a partition idle, seconds.
FRESH_SECONDS = 2.0


@dataclass(slots=True)
class PartitionClock:
    """What is known about one input partition."""

    max_event_seconds: float = NO_TIME
    watermark_seconds: float = NO_TIME
    last_record_wall_seconds: float = 0.0
    next_offset: int | None = None
    highwater: int | None = None
    #: Wall time of the fetch response that last reported ``highwater``.
    highwater_wall_seconds: float | None = None

    @property
    def last_read_offset(self) -> int:
        """The last offset read from the partition (-1 before the first)."""
        return -1 if self.next_offset is None else self.next_offset - 1

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

    def __init__(
        self, window_seconds: int, grace_seconds: int, fresh_seconds: float = FRESH_SECONDS
    ) -> None:
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.fresh_seconds = fresh_seconds
        self.partitions: dict[int, PartitionClock] = {}
        #: When every partition last became idle together (``None`` while any is busy).
        self._quiet_since: float | None = None

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
        highwater_wall_seconds: float | None = None,
    ) -> None:
        """Record a batch read from ``partition``: largest event time, watermark after it, position.

        ``highwater`` is the end the fetch response at ``highwater_wall_seconds`` reported (by
        default ``now_wall_seconds``); an older report than one already held is ignored.
        """
        clock = self.partitions[partition]
        if max_event_seconds > clock.max_event_seconds:
            clock.max_event_seconds = max_event_seconds
        if watermark_seconds > clock.watermark_seconds:
            clock.watermark_seconds = watermark_seconds
        clock.next_offset = next_offset
        clock.last_record_wall_seconds = now_wall_seconds
        confirmed = now_wall_seconds if highwater_wall_seconds is None else highwater_wall_seconds
        self.set_highwater(partition, highwater, confirmed)

    def set_highwater(
        self, partition: int, highwater: int | None, confirmed_wall_seconds: float | None
    ) -> None:
        """End of ``partition`` as a fetch response at ``confirmed_wall_seconds`` reported it."""
        clock = self.partitions.get(partition)
        if clock is None or highwater is None or confirmed_wall_seconds is None:
            return
        if clock.highwater_wall_seconds is None or confirmed_wall_seconds >= (
            clock.highwater_wall_seconds
        ):
            clock.highwater = highwater
            clock.highwater_wall_seconds = confirmed_wall_seconds

    def is_fresh(self, clock: PartitionClock, now_wall_seconds: float) -> bool:
        """A fetch response confirmed the partition's end within ``fresh_seconds``."""
        confirmed = clock.highwater_wall_seconds
        return confirmed is not None and now_wall_seconds - confirmed <= self.fresh_seconds

    def is_idle(self, clock: PartitionClock, now_wall_seconds: float) -> bool:
        """On fresh evidence: nothing left to read and no record for ``fresh_seconds``, or silent
        for ``grace_seconds`` with no backlog.

        Caught up alone is not idle: a partition of a steady stream is caught up between two of its
        batches, and records written since its last fetch may be older than the busy partitions'
        watermark (in a replay many times faster than real time, by minutes); raising its
        watermark to theirs would make them late.
        """
        if not self.is_fresh(clock, now_wall_seconds):
            return False
        silent = now_wall_seconds - clock.last_record_wall_seconds
        if clock.caught_up():
            return silent >= self.fresh_seconds
        return silent >= self.grace_seconds and not clock.known_behind()

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
            self._quiet_since = None
            target = min(self.partitions[partition].watermark_seconds for partition in busy)
        else:
            if self._quiet_since is None:
                self._quiet_since = now_wall_seconds
            target = max(c.max_event_seconds for c in self.partitions.values())
            last_record = max(c.last_record_wall_seconds for c in self.partitions.values())
            quiet_seconds = now_wall_seconds - max(self._quiet_since, last_record)
            if target != NO_TIME and quiet_seconds >= self.grace_seconds:
                target += quiet_seconds
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
