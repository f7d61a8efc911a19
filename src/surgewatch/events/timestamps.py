"""Event time: reading the ``ts`` field of an event as seconds since the Unix epoch."""

from __future__ import annotations

import math
from datetime import datetime

#: 2000-01-01T00:00:00Z: no event of interest is older.
MIN_TS_SECONDS = 946_684_800.0
#: An event may be stamped at most this far ahead of the processing clock.
MAX_FUTURE_SECONDS = 86_400.0
#: A number above this is read as milliseconds (1e11 seconds is the year 5138).
MILLIS_THRESHOLD = 1e11


def parse_ts(value: object, now_seconds: float) -> float | None:
    """Return the event time in seconds, or ``None`` when ``value`` is not a valid ``ts``.

    Accepts a number of seconds (a value above 1e11 is read as milliseconds) or an ISO-8601 string
    with ``Z`` or an offset. The result must lie between 2000-01-01 and one day after ``now_seconds``.
    """
    seconds: float
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        if seconds > MILLIS_THRESHOLD:
            seconds /= 1000.0
    elif isinstance(value, str):
        if not 10 <= len(value) <= 40:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            return None
        seconds = parsed.timestamp()
    else:
        return None
    if seconds < MIN_TS_SECONDS or seconds > now_seconds + MAX_FUTURE_SECONDS:
        return None
    return seconds
