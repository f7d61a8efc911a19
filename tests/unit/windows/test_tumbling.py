"""Tumbling windows: epoch-aligned ``[start, start + size)`` and the ``end + grace`` lateness rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surgewatch.windows.tumbling import (
    close_time_seconds,
    is_late,
    window_end_seconds,
    window_start_seconds,
)

#: 2023-11-14T22:14:00Z, a multiple of 60 (but not of 3600).
T0 = 1_700_000_040


@pytest.mark.parametrize(
    ("ts_seconds", "window_seconds", "expected_start"),
    [
        (0, 60, 0),
        (59, 60, 0),
        (59.999, 60, 0),
        (60, 60, 60),
        (60.0, 60, 60),
        (119.999999, 60, 60),
        (T0, 60, T0),
        (T0 - 0.001, 60, T0 - 60),
        (T0 + 59.999, 60, T0),
        (T0 + 60, 60, T0 + 60),
        (1_700_000_000, 60, 1_699_999_980),
        (1_700_000_000, 3600, 1_699_999_200),
        (1_700_000_000.5, 1, 1_700_000_000),
        (1_700_000_000, 86_400, 1_699_920_000),
        (-1, 60, -60),
    ],
)
def test_window_start_is_epoch_aligned(
    ts_seconds: float, window_seconds: int, expected_start: int
) -> None:
    start = window_start_seconds(ts_seconds, window_seconds)
    assert start == expected_start
    assert type(start) is int


def test_start_is_inclusive_and_end_exclusive() -> None:
    start = window_start_seconds(T0, 60)
    end = window_end_seconds(start, 60)
    assert (start, end) == (T0, T0 + 60)
    # The end belongs to the next window, not to this one.
    assert window_start_seconds(end, 60) == end
    assert window_start_seconds(end - 1e-6, 60) == start


def test_close_time_is_end_plus_grace() -> None:
    assert close_time_seconds(T0, 60, 30) == T0 + 90
    assert close_time_seconds(T0, 60, 0) == T0 + 60
    assert window_end_seconds(T0, 300) == T0 + 300


@given(
    ts_seconds=st.floats(min_value=946_684_800, max_value=4_102_444_800, allow_nan=False),
    window_seconds=st.sampled_from([1, 7, 10, 30, 60, 300, 3600, 86_400]),
)
def test_every_ts_falls_in_exactly_its_window(ts_seconds: float, window_seconds: int) -> None:
    start = window_start_seconds(ts_seconds, window_seconds)
    assert start % window_seconds == 0
    assert start <= ts_seconds < window_end_seconds(start, window_seconds)


@pytest.mark.parametrize(
    ("ts_seconds", "watermark_seconds", "late"),
    [
        # Window [T0, T0 + 60) closes at T0 + 90 with 30 s of grace.
        (T0 + 10, T0 + 90, True),
        (T0 + 10, T0 + 89.999, False),
        (T0 + 10, T0 + 90.001, True),
        (T0, T0 + 90, True),
        (T0, T0 + 89.999, False),
        (T0 + 59.999, T0 + 89.999, False),
        (T0 + 59.999, T0 + 90, True),
        # The event at the end opens the next window, which closes a minute later.
        (T0 + 60, T0 + 90, False),
        (T0 + 60, T0 + 149.999, False),
        (T0 + 60, T0 + 150, True),
        # Nothing is late before the first event.
        (T0, float("-inf"), False),
    ],
)
def test_is_late_boundary(ts_seconds: float, watermark_seconds: float, late: bool) -> None:
    assert is_late(ts_seconds, watermark_seconds, 60, 30) is late


def test_is_late_without_grace_closes_at_end() -> None:
    assert is_late(T0 + 5, T0 + 60, 60, 0) is True
    assert is_late(T0 + 5, T0 + 59.999, 60, 0) is False


@given(
    ts_seconds=st.floats(min_value=946_684_800, max_value=4_102_444_800, allow_nan=False),
    watermark_seconds=st.floats(min_value=946_684_800, max_value=4_102_444_800, allow_nan=False),
    window_seconds=st.sampled_from([1, 10, 60, 3600]),
    grace_seconds=st.sampled_from([0, 5, 30, 600]),
)
def test_is_late_matches_close_time(
    ts_seconds: float, watermark_seconds: float, window_seconds: int, grace_seconds: int
) -> None:
    start = window_start_seconds(ts_seconds, window_seconds)
    expected = start + window_seconds + grace_seconds <= watermark_seconds
    assert is_late(ts_seconds, watermark_seconds, window_seconds, grace_seconds) is expected
