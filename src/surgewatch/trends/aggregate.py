"""The app-wide trend view: merges every downstream partition's window summaries into one.

Each downstream partition owns a disjoint set of keys and sends, per closed window, its exact top-K
hashtags, its top-K surging hashtags and its countries' signups (:class:`SummaryMessage`), along
with how far it has closed. A window is *complete* once every downstream partition has closed past
it; the complete window's global top-K is the top-K of the union of the partitions' (exact, because
keys are disjoint), and its all-signups count is the sum over countries, scored here as key ``"*"``.

One worker holds the aggregator (it reads the single-partition summaries topic), so every trend
series on ``/metrics`` has exactly one owner whatever the number of workers. Windows are processed in
order and only windows that carried data update the view: the result depends on the data alone.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from surgewatch.trends.partition import (
    ALL_KEY,
    HASHTAGS,
    SIGNUPS,
    TREND_METRICS,
    KeyTrend,
    SummaryMessage,
    Surge,
    WindowSummary,
    top_surging,
)
from surgewatch.trends.surge import SurgeDetector, SurgeParams


@dataclass(frozen=True, slots=True)
class TrendView:
    """The latest complete windows, as ``/metrics`` and ``surgewatch top`` show them."""

    hashtag_window: int | None = None
    top_hashtags: tuple[tuple[str, int], ...] = ()
    surging_hashtags: tuple[KeyTrend, ...] = ()
    signup_window: int | None = None
    signups: tuple[KeyTrend, ...] = ()
    all_signups: KeyTrend | None = None

    @property
    def window_start(self) -> int | None:
        """The newest window shown (hashtags and signups complete separately)."""
        known = [w for w in (self.hashtag_window, self.signup_window) if w is not None]
        return max(known) if known else None


@dataclass(slots=True)
class _Pending:
    #: window start -> downstream partition -> its summary (a resent summary replaces the first).
    summaries: dict[int, dict[int, WindowSummary]] = field(default_factory=dict)
    closed_before: dict[int, float] = field(default_factory=dict)
    #: Windows up to and including this one are merged; summaries of them are ignored.
    done_through: float = -math.inf


class TrendAggregator:
    """Completes windows across downstream partitions and keeps the current :class:`TrendView`."""

    def __init__(self, params: SurgeParams, top_k: int) -> None:
        self.params = params
        self.top_k = top_k
        self.partitions = 0
        self._pending = {metric: _Pending() for metric in TREND_METRICS}
        self.all_signups = SurgeDetector(params)
        self.view = TrendView()
        #: Called with ``(metric, view)`` each time a window of ``metric`` completes (offline).
        self.on_window: Callable[[str, TrendView], None] | None = None

    def add(self, message: SummaryMessage) -> list[Surge]:
        """Take one partition's message; return the all-signups surges of windows it completed."""
        self.partitions = max(self.partitions, message.partitions)
        for summary in message.summaries:
            pending = self._pending.get(summary.metric)
            if pending is not None and summary.window_start > pending.done_through:
                by_partition = pending.summaries.setdefault(summary.window_start, {})
                by_partition[message.partition] = summary
        surges: list[Surge] = []
        for metric, closed_before in message.closed_before.items():
            pending = self._pending.get(metric)
            if pending is None:
                continue
            if closed_before > pending.closed_before.get(message.partition, -math.inf):
                pending.closed_before[message.partition] = closed_before
            surges.extend(self._complete(metric, pending))
        return surges

    def complete_before(self, metric: str) -> float:
        """Every window of ``metric`` ending at or before this is complete."""
        closed = self._pending[metric].closed_before
        if not self.partitions or len(closed) < self.partitions:
            return -math.inf
        return min(closed.get(p, -math.inf) for p in range(self.partitions))

    def _complete(self, metric: str, pending: _Pending) -> list[Surge]:
        horizon = self.complete_before(metric)
        size = self.params.window_seconds
        ready = sorted(start for start in pending.summaries if start + size <= horizon)
        surges: list[Surge] = []
        for start in ready:
            parts = [part for _, part in sorted(pending.summaries.pop(start).items())]
            pending.done_through = start
            if metric == HASHTAGS:
                self._hashtags(start, parts)
            else:
                surges.extend(self._signups(start, parts))
            if self.on_window is not None:
                self.on_window(metric, self.view)
        return surges

    def _hashtags(self, start: int, parts: list[WindowSummary]) -> None:
        top = heapq.nsmallest(
            self.top_k,
            (item for part in parts for item in part.top),
            key=lambda item: (-item[1], item[0]),
        )
        surging = top_surging((trend for part in parts for trend in part.keys), self.top_k)
        self._replace(
            hashtag_window=start, top_hashtags=tuple(top), surging_hashtags=tuple(surging)
        )

    def _signups(self, start: int, parts: list[WindowSummary]) -> list[Surge]:
        countries = sorted((t for part in parts for t in part.keys), key=lambda t: t.key)
        total = sum(t.count for t in countries)
        detector = self.all_signups
        last = detector.last_window_start
        if last is not None and start <= last:
            return []
        events = detector.observe_through(start, {ALL_KEY: total})
        scorer = detector.scorer(ALL_KEY)
        seen = scorer.last if scorer is not None else None
        everyone = (
            KeyTrend(ALL_KEY, total, seen.baseline, seen.score, scorer.in_surge)  # type: ignore[union-attr]
            if seen is not None and seen.window_start == start
            else KeyTrend(ALL_KEY, total, 0.0, 0.0, False)
        )
        self._replace(signup_window=start, signups=tuple(countries), all_signups=everyone)
        return [Surge(SIGNUPS, event) for event in events]

    def _replace(self, **changes: Any) -> None:
        # One assignment: a scrape in another thread sees the old view or the new, never half.
        self.view = dataclasses.replace(self.view, **changes)
