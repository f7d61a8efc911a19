"""Window counting store: adds routed partial counts and closes windows once, when the watermark says.

One store serves one downstream partition. Each partial carries the watermark of the input partition
it came from; a window of a stream closes when the smallest watermark over every input partition of
that stream has passed ``end + grace``. Every closed window yields exactly one record per key with a
non-zero count, and the window is forgotten. A partial for a window that has already closed cannot
happen in a steady run (see :mod:`surgewatch.windows.watermark`); if it does (after a reassignment),
it is counted in ``dropped_updates`` rather than silently changing a published count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from surgewatch.windows.tumbling import close_time_seconds, window_end_seconds

NO_TIME = -math.inf


@dataclass(frozen=True, slots=True)
class WindowCount:
    """The final count of one key in one closed window."""

    metric: str
    key: str
    window_start: int
    window_end: int
    count: int
    #: Posts left out of the key's trend count (over the per-account cap); never published.
    discount: int = 0

    @property
    def trend_count(self) -> int:
        """What the surge scorer sees: the count less the posts of accounts over the cap."""
        return self.count - self.discount

    @property
    def kafka_key(self) -> str:
        """``{metric}|{key}|{window_start}``: the record key on the window-counts topic."""
        return f"{self.metric}|{self.key}|{self.window_start}"

    def as_dict(self) -> dict[str, object]:
        """The record value of the contract."""
        return {
            "metric": self.metric,
            "key": self.key,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "count": self.count,
        }


@dataclass(slots=True)
class _MetricState:
    source_watermarks: dict[int, float] = field(default_factory=dict)
    source_partitions: int = 0
    closed_before: float = NO_TIME
    windows: dict[int, dict[str, int]] = field(default_factory=dict)
    discounts: dict[int, dict[str, int]] = field(default_factory=dict)
    origins: dict[int, int] = field(default_factory=dict)
    dropped_updates: int = 0


class WindowStore:
    """Open windows of every metric routed to one partition."""

    def __init__(self, window_seconds: int, grace_seconds: int) -> None:
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self._metrics: dict[str, _MetricState] = {}

    def _state(self, metric: str) -> _MetricState:
        state = self._metrics.get(metric)
        if state is None:
            state = self._metrics[metric] = _MetricState()
        return state

    def apply(
        self,
        metric: str,
        source_partition: int,
        source_partitions: int,
        source_watermark_seconds: float,
        counts: Iterable[tuple[str, int, int]],
        discounts: Iterable[tuple[str, int, int]] = (),
        origin: int | None = None,
    ) -> list[WindowCount]:
        """Add ``(key, window_start, count)`` partials from one input partition; return what closed.

        ``discounts`` (same shape) are subtracted from the trend counts of the closed records;
        ``origin`` is the first window the input partition counted (see :meth:`origin`).
        """
        state = self._state(metric)
        windows = state.windows
        closed_before = state.closed_before
        size = self.window_seconds
        for key, window_start, count in counts:
            if window_start + size <= closed_before:
                state.dropped_updates += count
                continue
            per_key = windows.get(window_start)
            if per_key is None:
                per_key = windows[window_start] = {}
            per_key[key] = per_key.get(key, 0) + count
        for key, window_start, count in discounts:
            if window_start + size > closed_before:
                per_key = state.discounts.setdefault(window_start, {})
                per_key[key] = per_key.get(key, 0) + count
        if origin is not None and origin < state.origins.get(source_partition, origin + 1):
            state.origins[source_partition] = origin
        previous = state.source_watermarks.get(source_partition, NO_TIME)
        if source_watermark_seconds > previous:
            state.source_watermarks[source_partition] = source_watermark_seconds
        if source_partitions > state.source_partitions:
            state.source_partitions = source_partitions
        return self._close(metric, state)

    def watermark_seconds(self, metric: str) -> float:
        """Smallest watermark over all input partitions of ``metric``'s stream (``-inf`` if unknown)."""
        state = self._metrics.get(metric)
        if state is None or state.source_partitions == 0:
            return NO_TIME
        if len(state.source_watermarks) < state.source_partitions:
            return NO_TIME
        return min(state.source_watermarks.get(p, NO_TIME) for p in range(state.source_partitions))

    def closed_before_seconds(self, metric: str) -> float:
        """Every window ending at or before this has closed (``-inf`` before the first close)."""
        state = self._metrics.get(metric)
        return state.closed_before if state else NO_TIME

    def origin(self, metric: str) -> int | None:
        """The earliest window any input partition of ``metric``'s stream counted, if known."""
        state = self._metrics.get(metric)
        return min(state.origins.values()) if state and state.origins else None

    def _close(self, metric: str, state: _MetricState) -> list[WindowCount]:
        watermark = self.watermark_seconds(metric)
        if watermark == NO_TIME or not state.windows:
            if watermark != NO_TIME:
                state.closed_before = max(state.closed_before, watermark - self.grace_seconds)
            return []
        size, grace = self.window_seconds, self.grace_seconds
        ready = sorted(
            start for start in state.windows if close_time_seconds(start, size, grace) <= watermark
        )
        state.closed_before = max(state.closed_before, watermark - grace)
        closed: list[WindowCount] = []
        for start in ready:
            per_key = state.windows.pop(start)
            discount = state.discounts.pop(start, {})
            end = window_end_seconds(start, size)
            if discount:
                closed.extend(
                    WindowCount(metric, key, start, end, count, min(discount.get(key, 0), count))
                    for key, count in sorted(per_key.items())
                    if count
                )
            else:
                closed.extend(
                    WindowCount(metric, key, start, end, count)
                    for key, count in sorted(per_key.items())
                    if count
                )
        for start in [s for s in state.discounts if s + size <= state.closed_before]:
            del state.discounts[start]
        return closed

    def source_watermark_seconds(self, metric: str, source_partition: int) -> float:
        """The largest watermark an input partition of ``metric``'s stream has reported."""
        state = self._metrics.get(metric)
        return state.source_watermarks.get(source_partition, NO_TIME) if state else NO_TIME

    def count_dropped(self, metric: str, count: int) -> None:
        """Record counts refused before they reached a window (see :attr:`dropped_updates`)."""
        self._state(metric).dropped_updates += count

    def export_state(self) -> dict[str, Any]:
        """Everything the store holds, as JSON-ready data (see :meth:`import_state`)."""

        def nested(by_window: dict[int, dict[str, int]]) -> list[Any]:
            return [[start, list(keys), list(keys.values())] for start, keys in by_window.items()]

        return {
            metric: {
                "wm": [[p, w] for p, w in state.source_watermarks.items() if w != NO_TIME],
                "n": state.source_partitions,
                "cb": None if state.closed_before == NO_TIME else state.closed_before,
                "win": nested(state.windows),
                "disc": nested(state.discounts),
                "orig": [[p, o] for p, o in state.origins.items()],
                "drop": state.dropped_updates,
            }
            for metric, state in self._metrics.items()
        }

    def import_state(self, data: dict[str, Any]) -> None:
        """Replace the store's content with what :meth:`export_state` gave."""

        def unnest(rows: list[Any]) -> dict[int, dict[str, int]]:
            return {
                int(start): dict(zip(keys, counts, strict=True)) for start, keys, counts in rows
            }

        self._metrics = {
            metric: _MetricState(
                source_watermarks={int(p): float(w) for p, w in state["wm"]},
                source_partitions=int(state["n"]),
                closed_before=NO_TIME if state["cb"] is None else float(state["cb"]),
                windows=unnest(state["win"]),
                discounts=unnest(state["disc"]),
                origins={int(p): int(o) for p, o in state["orig"]},
                dropped_updates=int(state["drop"]),
            )
            for metric, state in data.items()
        }

    def open_windows(self, metric: str) -> int:
        """How many windows of ``metric`` are open."""
        state = self._metrics.get(metric)
        return len(state.windows) if state else 0

    def open_keys(self) -> int:
        """How many (window, key) counters are held in memory."""
        return sum(len(keys) for s in self._metrics.values() for keys in s.windows.values())

    def dropped_updates(self, metric: str) -> int:
        """Counts that reached a window after it had closed."""
        state = self._metrics.get(metric)
        return state.dropped_updates if state else 0
