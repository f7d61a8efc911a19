"""Tumbling event-time windows aligned to the epoch: ``[start, start + window_seconds)``."""

from __future__ import annotations

import math


def window_start_seconds(ts_seconds: float, window_seconds: int) -> int:
    """Start of the window holding ``ts_seconds``."""
    return math.floor(ts_seconds / window_seconds) * window_seconds


def window_end_seconds(start_seconds: int, window_seconds: int) -> int:
    """Exclusive end of the window starting at ``start_seconds``."""
    return start_seconds + window_seconds


def close_time_seconds(start_seconds: int, window_seconds: int, grace_seconds: int) -> int:
    """The watermark a window needs before it closes: ``end + grace``."""
    return start_seconds + window_seconds + grace_seconds


def is_late(
    ts_seconds: float, watermark_seconds: float, window_seconds: int, grace_seconds: int
) -> bool:
    """True when the window of ``ts_seconds`` has closed at ``watermark_seconds``."""
    start = window_start_seconds(ts_seconds, window_seconds)
    return close_time_seconds(start, window_seconds, grace_seconds) <= watermark_seconds
