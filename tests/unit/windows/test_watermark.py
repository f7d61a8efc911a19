"""Source watermarks: per-partition lateness, idleness on fresh fetch evidence and an injected wall
clock, never backwards."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from surgewatch.windows.tumbling import is_late
from surgewatch.windows.watermark import FRESH_SECONDS, NO_TIME, PartitionClock, SourceWatermarks

WINDOW = 60
GRACE = 30
#: Event time of the tests, a multiple of 60.
T0 = 1_700_000_040.0
#: Wall clock of the tests (any origin works: only differences matter).
WALL = 5_000.0


def make(*partitions: int, now: float = WALL) -> SourceWatermarks:
    """A tracker of ``partitions``, all assigned at wall time ``now``."""
    marks = SourceWatermarks(WINDOW, GRACE)
    for partition in partitions:
        marks.assign(partition, now)
    return marks


def read(
    marks: SourceWatermarks,
    partition: int,
    event_seconds: float,
    now: float,
    next_offset: int = 10,
    highwater: int | None = 100,
) -> None:
    """A batch whose largest event time is ``event_seconds``; by default with backlog left."""
    marks.update_read(partition, event_seconds, event_seconds, next_offset, highwater, now)


def watermarks(marks: SourceWatermarks) -> dict[int, float]:
    return {p: c.watermark_seconds for p, c in marks.partitions.items()}


def confirm(marks: SourceWatermarks, now: float) -> None:
    """A fetch response at ``now`` confirms every partition's last known end (the worker's tick)."""
    for partition, clock in marks.partitions.items():
        marks.set_highwater(partition, clock.highwater, now)


# --- bookkeeping -------------------------------------------------------------------------------


def test_new_partition_has_no_time() -> None:
    marks = make(0)
    clock = marks.partitions[0]
    assert clock.watermark_seconds == NO_TIME
    assert clock.max_event_seconds == NO_TIME
    assert clock.last_record_wall_seconds == WALL
    assert marks.late_before_seconds(0) == NO_TIME
    assert marks.stream_watermark_seconds() == NO_TIME


def test_no_partitions_means_no_watermark_and_nothing_moves() -> None:
    marks = SourceWatermarks(WINDOW, GRACE)
    assert marks.stream_watermark_seconds() == NO_TIME
    assert marks.advance_idle(WALL + 1_000) == []


def test_assign_is_idempotent_and_keeps_state() -> None:
    marks = make(0)
    read(marks, 0, T0, now=WALL + 1)
    again = marks.assign(0, WALL + 500)
    assert again is marks.partitions[0]
    assert again.watermark_seconds == T0
    assert again.last_record_wall_seconds == WALL + 1


def test_update_read_records_position_and_wall_time() -> None:
    marks = make(0)
    marks.update_read(0, T0 + 5, T0 + 5, 42, 50, WALL + 3)
    # The batch's highwater came with a fetch response: confirmed at the read's wall time.
    assert marks.partitions[0] == PartitionClock(
        max_event_seconds=T0 + 5,
        watermark_seconds=T0 + 5,
        last_record_wall_seconds=WALL + 3,
        next_offset=42,
        highwater=50,
        highwater_wall_seconds=WALL + 3,
    )
    # An unknown highwater keeps the last known one, and its confirmation time too.
    marks.update_read(0, T0 + 6, T0 + 6, 43, None, WALL + 4)
    assert marks.partitions[0] == PartitionClock(
        max_event_seconds=T0 + 6,
        watermark_seconds=T0 + 6,
        last_record_wall_seconds=WALL + 4,
        next_offset=43,
        highwater=50,
        highwater_wall_seconds=WALL + 3,
    )


def test_new_partition_has_no_confirmed_end_and_default_freshness() -> None:
    marks = make(0)
    clock = marks.partitions[0]
    assert FRESH_SECONDS == 2.0
    assert marks.fresh_seconds == FRESH_SECONDS
    assert (clock.highwater, clock.highwater_wall_seconds) == (None, None)
    assert marks.is_fresh(clock, WALL) is False
    assert SourceWatermarks(WINDOW, GRACE, fresh_seconds=7.5).fresh_seconds == 7.5


def test_set_highwater_ignores_none_and_unknown_partitions() -> None:
    marks = make(0)
    marks.set_highwater(0, 7, WALL + 1)
    marks.set_highwater(0, None, WALL + 2)  # no end reported
    marks.set_highwater(0, 8, None)  # no fetch response to date it
    marks.set_highwater(9, 3, WALL + 2)  # not tracked here
    clock = marks.partitions[0]
    assert (clock.highwater, clock.highwater_wall_seconds) == (7, WALL + 1)
    assert 9 not in marks.partitions


def test_set_highwater_ignores_an_older_confirmation() -> None:
    marks = make(0)
    clock = marks.partitions[0]
    marks.set_highwater(0, 7, WALL + 5)
    # A response older than the one already applied is stale news: highwater and time stay.
    marks.set_highwater(0, 9, WALL + 4)
    assert (clock.highwater, clock.highwater_wall_seconds) == (7, WALL + 5)
    # One from the same moment is applied.
    marks.set_highwater(0, 8, WALL + 5)
    assert (clock.highwater, clock.highwater_wall_seconds) == (8, WALL + 5)
    # A read confirms at its own wall time; an older response cannot move that back either.
    marks.update_read(0, T0, T0, 8, 10, WALL + 6)
    marks.set_highwater(0, 12, WALL + 5.5)
    assert (clock.highwater, clock.highwater_wall_seconds) == (10, WALL + 6)
    marks.set_highwater(0, 12, WALL + 6.5)
    assert (clock.highwater, clock.highwater_wall_seconds) == (12, WALL + 6.5)


def test_revoke_forgets_partition_and_stream_watermark_follows_the_rest() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 1_000, now=WALL)
    read(marks, 1, T0, now=WALL)
    assert marks.stream_watermark_seconds() == T0
    marks.revoke(1)
    assert set(marks.partitions) == {0}
    assert marks.stream_watermark_seconds() == T0 + 1_000
    marks.revoke(1)  # revoking twice is harmless
    marks.revoke(0)
    assert marks.stream_watermark_seconds() == NO_TIME


def test_reassigned_partition_starts_over() -> None:
    marks = make(0)
    read(marks, 0, T0, now=WALL)
    marks.revoke(0)
    marks.assign(0, WALL + 10)
    assert marks.partitions[0].watermark_seconds == NO_TIME
    assert marks.partitions[0].last_record_wall_seconds == WALL + 10


# --- lateness per partition --------------------------------------------------------------------


def test_partition_far_ahead_does_not_make_others_late() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 3_600, now=WALL)  # partition 0 is an hour ahead (catch-up / replay)
    read(marks, 1, T0 + 50, now=WALL)
    assert marks.late_before_seconds(0) == T0 + 3_600
    assert marks.late_before_seconds(1) == T0 + 50
    assert marks.stream_watermark_seconds() == T0 + 50
    # An event of the first window is late on partition 0 but not on partition 1.
    event = T0 + 10
    assert is_late(event, marks.late_before_seconds(0), WINDOW, GRACE) is True
    assert is_late(event, marks.late_before_seconds(1), WINDOW, GRACE) is False
    # Partition 1's own watermark reaching end + grace makes it late there too, not before.
    read(marks, 1, T0 + 89.999, now=WALL)
    assert is_late(event, marks.late_before_seconds(1), WINDOW, GRACE) is False
    read(marks, 1, T0 + 90, now=WALL)
    assert is_late(event, marks.late_before_seconds(1), WINDOW, GRACE) is True


def test_watermark_never_decreases_on_read() -> None:
    marks = make(0)
    read(marks, 0, T0 + 100, now=WALL)
    read(marks, 0, T0 + 20, now=WALL + 1)
    clock = marks.partitions[0]
    assert clock.watermark_seconds == T0 + 100
    assert clock.max_event_seconds == T0 + 100
    assert clock.last_record_wall_seconds == WALL + 1


# --- idleness ----------------------------------------------------------------------------------


def test_caught_up_partition_is_raised_to_min_of_busy() -> None:
    marks = make(0, 1, 2)
    read(marks, 0, T0 + 500, now=WALL)
    read(marks, 1, T0 + 300, now=WALL)
    # Partition 2 read everything there is: next offset == highwater.
    read(marks, 2, T0 + 10, now=WALL, next_offset=5, highwater=5)
    # Not at once: records may have been written since that fetch.
    assert marks.is_idle(marks.partitions[2], WALL) is False
    later = WALL + FRESH_SECONDS
    marks.set_highwater(2, 5, later - 0.5)  # still nothing new
    assert marks.is_idle(marks.partitions[2], later - 0.001) is False
    assert marks.is_idle(marks.partitions[2], later) is True
    assert marks.is_idle(marks.partitions[0], later) is False
    assert marks.advance_idle(later) == [2]
    assert watermarks(marks) == {0: T0 + 500, 1: T0 + 300, 2: T0 + 300}
    assert marks.stream_watermark_seconds() == T0 + 300
    # Its own event-time maximum is not touched by the raise.
    assert marks.partitions[2].max_event_seconds == T0 + 10


def test_next_offset_beyond_highwater_counts_as_caught_up() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 200, now=WALL)
    read(marks, 1, T0, now=WALL, next_offset=8, highwater=5)
    assert marks.partitions[1].caught_up() is True
    assert marks.advance_idle(WALL) == []
    marks.set_highwater(1, 5, WALL + FRESH_SECONDS)
    assert marks.advance_idle(WALL + FRESH_SECONDS) == [1]
    assert marks.partitions[1].watermark_seconds == T0 + 200


def test_empty_partition_is_idle_once_nothing_came_for_a_while() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 120, now=WALL)
    marks.set_highwater(1, 0, WALL)  # nothing was ever written to partition 1
    assert marks.partitions[1].caught_up() is True
    assert marks.advance_idle(WALL) == []
    marks.set_highwater(1, 0, WALL + FRESH_SECONDS)
    assert marks.advance_idle(WALL + FRESH_SECONDS) == [1]
    assert marks.partitions[1].watermark_seconds == T0 + 120
    assert marks.stream_watermark_seconds() == T0 + 120


def test_partition_with_unknown_end_is_never_idle_however_silent() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 120, now=WALL, next_offset=10, highwater=10)
    clock = marks.partitions[1]  # assigned at WALL, never read, no fetch response for it yet
    assert clock.caught_up() is False
    assert clock.known_behind() is False
    much_later = WALL + 100 * GRACE
    assert marks.is_idle(clock, much_later) is False
    confirm(marks, much_later)  # partition 0 is confirmed caught up; partition 1 has nothing
    assert marks.is_idle(marks.partitions[0], much_later) is True
    assert marks.advance_idle(much_later) == []
    assert watermarks(marks) == {0: T0 + 120, 1: NO_TIME}
    assert marks.stream_watermark_seconds() == NO_TIME


def test_unread_partition_with_a_fresh_end_is_busy_until_silent_for_grace() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 120, now=WALL)  # backlog: partition 0 stays busy
    clock = marks.partitions[1]  # assigned at WALL, never read
    marks.set_highwater(1, 4, WALL + GRACE - 1)  # e.g. its committed offset is already the end
    assert clock.caught_up() is False
    assert clock.known_behind() is False
    assert marks.is_idle(clock, WALL + GRACE - 0.001) is False
    assert marks.advance_idle(WALL + GRACE - 0.001) == []
    assert marks.stream_watermark_seconds() == NO_TIME
    assert marks.is_idle(clock, WALL + GRACE) is True
    assert marks.advance_idle(WALL + GRACE) == [1]
    assert watermarks(marks) == {0: T0 + 120, 1: T0 + 120}
    # The confirmation from WALL + GRACE - 1 is stale FRESH_SECONDS later: busy again.
    assert marks.is_idle(clock, WALL + GRACE - 1 + FRESH_SECONDS) is True
    assert marks.is_idle(clock, WALL + GRACE - 1 + FRESH_SECONDS + 0.001) is False


def test_silent_for_grace_without_backlog_is_idle() -> None:
    marks = make(0, 1)
    # Partition 0 keeps reading; partition 1 was never read, and every tick's fetch response
    # confirms its end without a position to compare it with (no known backlog).
    marks.set_highwater(1, 3, WALL)
    read(marks, 0, T0 + 100, now=WALL + GRACE)
    marks.set_highwater(1, 3, WALL + GRACE - 0.001)
    assert marks.advance_idle(WALL + GRACE - 0.001) == []
    assert marks.partitions[1].watermark_seconds == NO_TIME
    marks.set_highwater(1, 3, WALL + GRACE)
    assert marks.advance_idle(WALL + GRACE) == [1]
    assert watermarks(marks) == {0: T0 + 100, 1: T0 + 100}


def test_read_partition_without_a_confirmed_end_stays_busy_until_one_arrives() -> None:
    marks = make(0, 1)
    # Partition 1 read up to offset 3 but no fetch response ever said where its end is.
    read(marks, 1, T0 + 10, now=WALL, next_offset=3, highwater=None)
    read(marks, 0, T0 + 100, now=WALL + 10 * GRACE)
    assert marks.is_idle(marks.partitions[1], WALL + 10 * GRACE) is False
    assert marks.advance_idle(WALL + 10 * GRACE) == []
    assert watermarks(marks) == {0: T0 + 100, 1: T0 + 10}
    # A fresh response puts the end at the position: caught up, and silent for long enough.
    marks.set_highwater(1, 3, WALL + 10 * GRACE)
    assert marks.advance_idle(WALL + 10 * GRACE) == [1]
    assert watermarks(marks) == {0: T0 + 100, 1: T0 + 100}


def test_partition_with_known_backlog_is_never_idle() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 900, now=WALL, next_offset=10, highwater=10)
    read(marks, 1, T0 + 10, now=WALL, next_offset=10, highwater=11)
    clock = marks.partitions[1]
    assert clock.known_behind() is True
    much_later = WALL + 100 * GRACE
    confirm(marks, much_later)  # fresh evidence, still one record behind
    assert marks.is_idle(marks.partitions[0], much_later) is True
    assert marks.is_idle(clock, much_later) is False
    assert marks.advance_idle(much_later) == []
    # Partition 0 is caught up but busy partition 1 holds it where it is (target below it).
    assert watermarks(marks) == {0: T0 + 900, 1: T0 + 10}
    assert marks.stream_watermark_seconds() == T0 + 10


def test_backlog_reported_by_fetch_keeps_partition_busy() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 400, now=WALL, next_offset=10, highwater=10)
    read(marks, 1, T0, now=WALL, next_offset=10, highwater=10)
    confirm(marks, WALL + 10 * GRACE)
    marks.set_highwater(1, 12, WALL + 10 * GRACE)  # more arrived since the last read
    assert marks.partitions[1].known_behind() is True
    assert marks.is_idle(marks.partitions[0], WALL + 10 * GRACE) is True
    assert marks.is_idle(marks.partitions[1], WALL + 10 * GRACE) is False
    assert marks.advance_idle(WALL + 10 * GRACE) == []
    assert watermarks(marks) == {0: T0 + 400, 1: T0}


def test_busy_partition_without_events_holds_everyone_back() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 400, now=WALL, next_offset=10, highwater=10)
    marks.set_highwater(1, 4, WALL + 1_000)  # partition 1 has records but none was read yet
    marks.partitions[1].next_offset = 0
    confirm(marks, WALL + 1_000)
    assert marks.is_idle(marks.partitions[0], WALL + 1_000) is True
    assert marks.advance_idle(WALL + 1_000) == []
    assert watermarks(marks) == {0: T0 + 400, 1: NO_TIME}
    assert marks.stream_watermark_seconds() == NO_TIME


def test_all_idle_raises_to_max_event_time() -> None:
    marks = make(0, 1, 2)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL, next_offset=6, highwater=6)
    read(marks, 2, T0 + 100, now=WALL, next_offset=1, highwater=1)
    confirm(marks, WALL + GRACE - 1)
    # The first all-idle tick starts the quiet clock: no wall-clock advance yet.
    assert sorted(marks.advance_idle(WALL + GRACE - 1)) == [0, 2]
    assert watermarks(marks) == {0: T0 + 250, 1: T0 + 250, 2: T0 + 250}
    confirm(marks, WALL + 2 * GRACE - 1.001)
    assert marks.advance_idle(WALL + 2 * GRACE - 1.001) == []
    assert watermarks(marks) == {0: T0 + 250, 1: T0 + 250, 2: T0 + 250}


def test_all_idle_advances_with_wall_time_once_quiet_for_grace() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL + 2, next_offset=6, highwater=6)
    # Partition 0 idle at WALL + 2 (nothing for FRESH_SECONDS), raised to the busy one.
    confirm(marks, WALL + 2)
    assert marks.advance_idle(WALL + 2) == [0]
    assert watermarks(marks) == {0: T0 + 250, 1: T0 + 250}
    # All idle first FRESH_SECONDS after the latest read: quiet from there.
    quiet = WALL + 2 + FRESH_SECONDS
    confirm(marks, quiet)
    assert marks.advance_idle(quiet) == []
    confirm(marks, quiet + GRACE - 0.5)
    assert marks.advance_idle(quiet + GRACE - 0.5) == []
    assert marks.stream_watermark_seconds() == T0 + 250
    confirm(marks, quiet + GRACE)
    assert sorted(marks.advance_idle(quiet + GRACE)) == [0, 1]
    assert watermarks(marks) == {0: T0 + 250 + GRACE, 1: T0 + 250 + GRACE}
    confirm(marks, quiet + 100)
    assert sorted(marks.advance_idle(quiet + 100)) == [0, 1]
    assert watermarks(marks) == {0: T0 + 350, 1: T0 + 350}
    assert marks.stream_watermark_seconds() == T0 + 350
    # Still quiet, same wall time: nothing moves again.
    assert marks.advance_idle(quiet + 100) == []


def test_quiet_clock_starts_at_the_first_all_idle_tick_not_at_the_last_record() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL, next_offset=6, highwater=6)
    # No fetch response for 100 s (a stalled broker): nothing is idle, nothing moves.
    assert marks.advance_idle(WALL + 100) == []
    assert watermarks(marks) == {0: T0 + 50, 1: T0 + 250}
    # Fetching resumes, both caught up: the stream has been quiet for 0 s, not for 100 s.
    confirm(marks, WALL + 100)
    assert marks.advance_idle(WALL + 100) == [0]
    assert watermarks(marks) == {0: T0 + 250, 1: T0 + 250}
    confirm(marks, WALL + 100 + GRACE - 0.5)
    assert marks.advance_idle(WALL + 100 + GRACE - 0.5) == []
    confirm(marks, WALL + 100 + GRACE)
    assert sorted(marks.advance_idle(WALL + 100 + GRACE)) == [0, 1]
    assert watermarks(marks) == {0: T0 + 250 + GRACE, 1: T0 + 250 + GRACE}


def test_a_busy_tick_restarts_the_quiet_clock() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL, next_offset=6, highwater=6)
    confirm(marks, WALL + FRESH_SECONDS)
    assert marks.advance_idle(WALL + FRESH_SECONDS) == [0]  # quiet since then
    # A tick without fresh evidence for partition 1: busy, the quiet clock stops.
    marks.set_highwater(0, 4, WALL + 10)  # partition 1's last response is still the one above
    assert marks.is_idle(marks.partitions[1], WALL + 10) is False
    assert marks.advance_idle(WALL + 10) == []
    # All idle again from WALL + 20: quiet for grace only at WALL + 20 + GRACE, not WALL + 1 + GRACE.
    confirm(marks, WALL + 20)
    assert marks.advance_idle(WALL + 20) == []
    confirm(marks, WALL + 20 + GRACE - 0.5)
    assert marks.advance_idle(WALL + 20 + GRACE - 0.5) == []
    assert watermarks(marks) == {0: T0 + 250, 1: T0 + 250}
    confirm(marks, WALL + 20 + GRACE)
    assert sorted(marks.advance_idle(WALL + 20 + GRACE)) == [0, 1]
    assert watermarks(marks) == {0: T0 + 250 + GRACE, 1: T0 + 250 + GRACE}


def test_a_record_after_the_quiet_clock_started_restarts_the_quiet_time() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL, next_offset=6, highwater=6)
    confirm(marks, WALL + FRESH_SECONDS)
    assert marks.advance_idle(WALL + FRESH_SECONDS) == [0]  # quiet since then
    # Partition 0 reads one more record at WALL + 20 and is caught up again at once.
    read(marks, 0, T0 + 260, now=WALL + 20, next_offset=5, highwater=5)
    confirm(marks, WALL + 20 + GRACE - 0.5)
    assert marks.advance_idle(WALL + 20 + GRACE - 0.5) == [1]
    assert watermarks(marks) == {0: T0 + 260, 1: T0 + 260}
    confirm(marks, WALL + 20 + GRACE)
    assert sorted(marks.advance_idle(WALL + 20 + GRACE)) == [0, 1]
    assert watermarks(marks) == {0: T0 + 260 + GRACE, 1: T0 + 260 + GRACE}


def test_all_idle_before_any_event_keeps_no_time() -> None:
    marks = make(0, 1)
    marks.set_highwater(0, 0, WALL + 1_000)
    marks.set_highwater(1, 0, WALL + 1_000)
    assert marks.is_idle(marks.partitions[0], WALL + 1_000) is True
    assert marks.is_idle(marks.partitions[1], WALL + 1_000) is True
    assert marks.advance_idle(WALL + 1_000) == []
    assert marks.stream_watermark_seconds() == NO_TIME


def test_raised_watermark_is_what_later_events_are_judged_against() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 600, now=WALL)
    read(marks, 1, T0, now=WALL, next_offset=2, highwater=2)
    marks.advance_idle(WALL + FRESH_SECONDS)
    assert marks.late_before_seconds(1) == T0 + 600
    assert is_late(T0 + 5, marks.late_before_seconds(1), WINDOW, GRACE) is True


def test_idle_raise_never_lowers_a_watermark() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 100, now=WALL)
    read(marks, 1, T0 + 700, now=WALL, next_offset=3, highwater=3)
    assert marks.advance_idle(WALL + 1) == []
    assert watermarks(marks) == {0: T0 + 100, 1: T0 + 700}


# --- fresh evidence ------------------------------------------------------------------------------


def test_caught_up_is_idle_only_while_the_confirmation_is_fresh() -> None:
    marks = make(0)
    read(marks, 0, T0, now=WALL, next_offset=5, highwater=5)
    clock = marks.partitions[0]
    assert clock.caught_up() is True
    assert marks.is_fresh(clock, WALL + FRESH_SECONDS) is True
    assert marks.is_idle(clock, WALL + FRESH_SECONDS) is True
    assert marks.is_fresh(clock, WALL + FRESH_SECONDS + 0.001) is False
    assert marks.is_idle(clock, WALL + FRESH_SECONDS + 0.001) is False


def test_fresh_seconds_is_configurable() -> None:
    marks = SourceWatermarks(WINDOW, GRACE, fresh_seconds=10.0)
    marks.assign(0, WALL)
    read(marks, 0, T0, now=WALL, next_offset=5, highwater=5)
    clock = marks.partitions[0]
    assert marks.is_idle(clock, WALL + 10) is True
    assert marks.is_idle(clock, WALL + 10.001) is False


def test_stale_evidence_holds_the_watermark() -> None:
    """A stalled broker: both partitions caught up at the last response, then no response at all."""
    marks = make(0, 1)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL, next_offset=6, highwater=6)
    # Fresh, and nothing for FRESH_SECONDS: all idle, raised to the largest event.
    assert marks.advance_idle(WALL + FRESH_SECONDS) == [0]
    for later in (WALL + FRESH_SECONDS + 0.001, WALL + GRACE, WALL + 100 * GRACE):
        assert marks.is_idle(marks.partitions[0], later) is False
        assert marks.is_idle(marks.partitions[1], later) is False
        assert marks.advance_idle(later) == []
        assert watermarks(marks) == {0: T0 + 250, 1: T0 + 250}
    # No wall-clock advance either, however long the stall: the backlog it hides stays on time.
    assert marks.stream_watermark_seconds() == T0 + 250
    assert is_late(T0 + 250, marks.late_before_seconds(1), WINDOW, GRACE) is False


def test_stale_partition_is_busy_and_holds_the_fresh_ones() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 500, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 100, now=WALL, next_offset=6, highwater=6)
    # Only partition 0 is confirmed again: partition 1 is stale, so busy, and its watermark is the
    # most partition 0 may be raised to (here below it: nothing moves).
    marks.set_highwater(0, 4, WALL + 60)
    assert marks.advance_idle(WALL + 60) == []
    assert watermarks(marks) == {0: T0 + 500, 1: T0 + 100}
    marks.set_highwater(1, 6, WALL + 60)
    assert marks.advance_idle(WALL + 60) == [1]
    assert watermarks(marks) == {0: T0 + 500, 1: T0 + 500}


def test_freshness_recovers_when_set_highwater_confirms_again() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 400, now=WALL)  # backlog: busy
    read(marks, 1, T0 + 100, now=WALL, next_offset=6, highwater=6)
    clock = marks.partitions[1]
    stale = WALL + 10
    assert marks.is_fresh(clock, stale) is False
    assert marks.advance_idle(stale) == []
    marks.set_highwater(1, 6, stale - FRESH_SECONDS)  # confirmed exactly FRESH_SECONDS ago
    assert marks.is_fresh(clock, stale) is True
    assert clock.highwater_wall_seconds == stale - FRESH_SECONDS
    assert marks.advance_idle(stale) == [1]
    assert watermarks(marks) == {0: T0 + 400, 1: T0 + 400}


@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),  # partition
            st.one_of(st.none(), st.floats(min_value=0, max_value=600)),  # event offset, or tick
            st.booleans(),  # caught up after the read; on a tick, fresh responses first
            st.floats(min_value=0, max_value=40),  # wall time step
        ),
        max_size=40,
    )
)
def test_watermarks_never_decrease(
    steps: list[tuple[int, float | None, bool, float]],
) -> None:
    marks = make(0, 1, 2)
    now = WALL
    offsets = {0: 0, 1: 0, 2: 0}
    before = watermarks(marks)
    stream_before = marks.stream_watermark_seconds()
    for partition, event, caught_up, step in steps:
        now += step
        if event is None:
            if caught_up:
                confirm(marks, now)
            marks.advance_idle(now)
        else:
            offsets[partition] += 1
            next_offset = offsets[partition]
            highwater = next_offset if caught_up else next_offset + 1
            read(marks, partition, T0 + event, now, next_offset, highwater)
        after = watermarks(marks)
        for p, value in after.items():
            assert value >= before[p]
        stream_after = marks.stream_watermark_seconds()
        assert stream_after >= stream_before
        assert stream_after == min(after.values())
        assert not math.isnan(stream_after)
        before, stream_before = after, stream_after
