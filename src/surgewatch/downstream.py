"""One downstream partition's state: the window counting store and the trends of the keys it owns.

The worker's counting agent and the offline computation (``backfill``, ``report``, tests) drive
the same object: apply routed partials, then score what closed and condense it for the aggregator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from surgewatch.config import Settings
from surgewatch.ingest import Partial
from surgewatch.trends.partition import (
    TREND_METRICS,
    PartitionTrends,
    SummaryMessage,
    Surge,
    WindowSummary,
)
from surgewatch.trends.surge import SurgeParams
from surgewatch.windows.counting import WindowCount, WindowStore


def surge_params(settings: Settings) -> SurgeParams:
    """The surge detectors' parameters from the settings."""
    return SurgeParams(
        window_seconds=settings.window_seconds,
        z_start=settings.surge_z_start,
        z_end=settings.surge_z_end,
        min_count=settings.surge_min_count,
        half_life_windows=settings.surge_half_life_windows,
    )


class Downstream:
    """Window store and trends of downstream partition ``partition`` (of ``partitions``)."""

    def __init__(
        self,
        partition: int,
        partitions: int,
        window_seconds: int,
        grace_seconds: int,
        params: SurgeParams,
        top_k: int,
    ) -> None:
        self.partition = partition
        self.partitions = partitions
        self.window_seconds = window_seconds
        self.store = WindowStore(window_seconds, grace_seconds)
        self.trends = PartitionTrends(params, top_k)
        self._reported: dict[str, float] = {}

    def apply(self, partial: Partial) -> list[WindowCount]:
        """Add one routed partial; return the window records it closed."""
        return self.store.apply(
            partial.metric,
            partial.source_partition,
            partial.source_partitions,
            partial.watermark_seconds,
            partial.counts,
            partial.discounts,
            partial.origin,
        )

    def conclude(self, closed: Iterable[WindowCount]) -> tuple[list[Surge], SummaryMessage | None]:
        """Score the windows that closed; the message for the aggregator when there is news.

        News is a closed window, or the closed boundary crossing a window boundary (so the
        aggregator learns that this partition has nothing for the windows in between).
        """
        by_metric: dict[str, list[WindowCount]] = {}
        for window in closed:
            by_metric.setdefault(window.metric, []).append(window)
        surges: list[Surge] = []
        summaries: list[WindowSummary] = []
        for metric in TREND_METRICS:
            windows = by_metric.get(metric)
            if windows:
                found, condensed = self.trends.close(metric, windows, self.store.origin(metric))
                surges.extend(found)
                summaries.extend(condensed)
        progressed = False
        closed_before: dict[str, float] = {}
        size = self.window_seconds
        for metric in TREND_METRICS:
            boundary = self.store.closed_before_seconds(metric)
            if math.isinf(boundary):
                continue
            closed_before[metric] = boundary
            previous = self._reported.get(metric, -math.inf)
            if math.isinf(previous) or boundary // size > previous // size:
                self._reported[metric] = boundary
                progressed = True
        if not summaries and not progressed:
            return surges, None
        message = SummaryMessage(self.partition, self.partitions, closed_before, tuple(summaries))
        return surges, message
