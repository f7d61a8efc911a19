"""Source watermarks: per-partition lateness, idleness on an injected wall clock, never backwards."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from surgewatch.windows.tumbling import is_late
from surgewatch.windows.watermark import NO_TIME, PartitionClock, SourceWatermarks

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
    assert marks.partitions[0] == PartitionClock(
        max_event_seconds=T0 + 5,
        watermark_seconds=T0 + 5,
        last_record_wall_seconds=WALL + 3,
        next_offset=42,
        highwater=50,
    )
    # An unknown highwater keeps the last known one.
    marks.update_read(0, T0 + 6, T0 + 6, 43, None, WALL + 4)
    assert marks.partitions[0].highwater == 50
    assert marks.partitions[0].next_offset == 43


def test_set_highwater_ignores_none_and_unknown_partitions() -> None:
    marks = make(0)
    marks.set_highwater(0, 7)
    marks.set_highwater(0, None)
    marks.set_highwater(9, 3)
    assert marks.partitions[0].highwater == 7
    assert 9 not in marks.partitions


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
    assert marks.is_idle(marks.partitions[2], WALL) is True
    assert marks.is_idle(marks.partitions[0], WALL) is False
    assert marks.advance_idle(WALL) == [2]
    assert watermarks(marks) == {0: T0 + 500, 1: T0 + 300, 2: T0 + 300}
    assert marks.stream_watermark_seconds() == T0 + 300
    # Its own event-time maximum is not touched by the raise.
    assert marks.partitions[2].max_event_seconds == T0 + 10


def test_next_offset_beyond_highwater_counts_as_caught_up() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 200, now=WALL)
    read(marks, 1, T0, now=WALL, next_offset=8, highwater=5)
    assert marks.partitions[1].caught_up() is True
    assert marks.advance_idle(WALL) == [1]
    assert marks.partitions[1].watermark_seconds == T0 + 200


def test_empty_partition_is_idle_at_once() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 120, now=WALL)
    marks.set_highwater(1, 0)  # nothing was ever written to partition 1
    assert marks.partitions[1].caught_up() is True
    assert marks.advance_idle(WALL) == [1]
    assert marks.partitions[1].watermark_seconds == T0 + 120
    assert marks.stream_watermark_seconds() == T0 + 120


def test_partition_with_unknown_position_is_busy_until_silent_for_grace() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 120, now=WALL)
    clock = marks.partitions[1]  # assigned at WALL, never read, highwater unknown
    assert clock.caught_up() is False
    assert clock.known_behind() is False
    assert marks.is_idle(clock, WALL + GRACE - 0.001) is False
    assert marks.advance_idle(WALL + GRACE - 0.001) == []
    assert marks.stream_watermark_seconds() == NO_TIME
    assert marks.is_idle(clock, WALL + GRACE) is True


def test_silent_for_grace_without_backlog_is_idle() -> None:
    marks = make(0, 1)
    # Partition 0 keeps reading; partition 1 read once and its highwater is unknown.
    read(marks, 1, T0 + 10, now=WALL, next_offset=3, highwater=None)
    read(marks, 0, T0 + 100, now=WALL + GRACE)
    assert marks.advance_idle(WALL + GRACE - 0.001) == []
    assert marks.partitions[1].watermark_seconds == T0 + 10
    assert marks.advance_idle(WALL + GRACE) == [1]
    assert watermarks(marks) == {0: T0 + 100, 1: T0 + 100}


def test_partition_with_known_backlog_is_never_idle() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 900, now=WALL, next_offset=10, highwater=10)
    read(marks, 1, T0 + 10, now=WALL, next_offset=10, highwater=11)
    clock = marks.partitions[1]
    assert clock.known_behind() is True
    much_later = WALL + 100 * GRACE
    assert marks.is_idle(clock, much_later) is False
    assert marks.advance_idle(much_later) == []
    # Partition 0 is caught up but busy partition 1 holds it where it is (target below it).
    assert watermarks(marks) == {0: T0 + 900, 1: T0 + 10}
    assert marks.stream_watermark_seconds() == T0 + 10


def test_backlog_reported_by_fetch_keeps_partition_busy() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 400, now=WALL, next_offset=10, highwater=10)
    read(marks, 1, T0, now=WALL, next_offset=10, highwater=10)
    marks.set_highwater(1, 12)  # more arrived since the last read
    assert marks.partitions[1].known_behind() is True
    assert marks.is_idle(marks.partitions[1], WALL + 10 * GRACE) is False
    assert marks.advance_idle(WALL + 10 * GRACE) == []
    assert marks.partitions[1].watermark_seconds == T0


def test_busy_partition_without_events_holds_everyone_back() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 400, now=WALL, next_offset=10, highwater=10)
    marks.set_highwater(1, 4)  # partition 1 has records but none was read yet
    marks.partitions[1].next_offset = 0
    assert marks.advance_idle(WALL + 1_000) == []
    assert marks.stream_watermark_seconds() == NO_TIME


def test_all_idle_raises_to_max_event_time() -> None:
    marks = make(0, 1, 2)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL, next_offset=6, highwater=6)
    read(marks, 2, T0 + 100, now=WALL, next_offset=1, highwater=1)
    assert sorted(marks.advance_idle(WALL + GRACE - 1)) == [0, 2]
    assert watermarks(marks) == {0: T0 + 250, 1: T0 + 250, 2: T0 + 250}


def test_all_idle_advances_with_wall_time_once_silent_for_grace() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 50, now=WALL, next_offset=4, highwater=4)
    read(marks, 1, T0 + 250, now=WALL + 2, next_offset=6, highwater=6)
    # Silence is counted from the latest read of any partition (WALL + 2).
    assert sorted(marks.advance_idle(WALL + 2 + GRACE - 0.5)) == [0]
    assert marks.stream_watermark_seconds() == T0 + 250
    assert sorted(marks.advance_idle(WALL + 2 + GRACE)) == [0, 1]
    assert watermarks(marks) == {0: T0 + 250 + GRACE, 1: T0 + 250 + GRACE}
    assert sorted(marks.advance_idle(WALL + 2 + 100)) == [0, 1]
    assert marks.stream_watermark_seconds() == T0 + 350
    # Still silent, same wall time: nothing moves again.
    assert marks.advance_idle(WALL + 2 + 100) == []


def test_all_idle_before_any_event_keeps_no_time() -> None:
    marks = make(0, 1)
    marks.set_highwater(0, 0)
    marks.set_highwater(1, 0)
    assert marks.advance_idle(WALL + 1_000) == []
    assert marks.stream_watermark_seconds() == NO_TIME


def test_raised_watermark_is_what_later_events_are_judged_against() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 600, now=WALL)
    read(marks, 1, T0, now=WALL, next_offset=2, highwater=2)
    marks.advance_idle(WALL)
    assert marks.late_before_seconds(1) == T0 + 600
    assert is_late(T0 + 5, marks.late_before_seconds(1), WINDOW, GRACE) is True


def test_idle_raise_never_lowers_a_watermark() -> None:
    marks = make(0, 1)
    read(marks, 0, T0 + 100, now=WALL)
    read(marks, 1, T0 + 700, now=WALL, next_offset=3, highwater=3)
    assert marks.advance_idle(WALL + 1) == []
    assert watermarks(marks) == {0: T0 + 100, 1: T0 + 700}


@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),  # partition
            st.one_of(st.none(), st.floats(min_value=0, max_value=600)),  # event offset, or tick
            st.booleans(),  # caught up after the read
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
