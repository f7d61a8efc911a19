"""Trends of one downstream partition: surge scores of the keys it owns, and a summary per window.

The counting store of a downstream partition closes every window of the keys routed to it with exact
counts. :class:`PartitionTrends` scores those counts (hashtags by their *trend* count, i.e. less the
posts of accounts over the per-account cap) with a :class:`~surgewatch.trends.surge.SurgeDetector`
per metric, reports surge starts and ends, and condenses each closed window into a
:class:`WindowSummary`: the partition's exact top-K hashtags, its top-K surging hashtags by score,
and every country's signups and score. Keys are disjoint across partitions, so the global top-K is
the top-K of the union of the partitions' top-Ks (see :mod:`surgewatch.trends.aggregate`).

Only the sequence of closed windows matters here, never the wall clock: a replay at any speed,
through any number of workers, scores the same.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from surgewatch.labels import hashtag_label
from surgewatch.trends.surge import SurgeDetector, SurgeEvent, SurgeParams
from surgewatch.trends.topk import top_of_window
from surgewatch.windows.counting import WindowCount

HASHTAGS = "hashtag_posts"
SIGNUPS = "signups"
TREND_METRICS = (HASHTAGS, SIGNUPS)
#: The key of all signups together, on the surges topic.
ALL_KEY = "*"


@dataclass(frozen=True, slots=True)
class KeyTrend:
    """One key's count and score in one window."""

    key: str
    count: int
    baseline: float
    score: float
    surging: bool


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """What one downstream partition knows about one closed window.

    ``top``: its exact top-K ``(hashtag, posts)``; ``keys``: for hashtags its top-K surging ones by
    score, for signups every country it scored in the window.
    """

    metric: str
    window_start: int
    top: tuple[tuple[str, int], ...]
    keys: tuple[KeyTrend, ...]


@dataclass(frozen=True, slots=True)
class Surge:
    """A surge start or end of one metric's key: the surges topic's record."""

    metric: str
    event: SurgeEvent

    @property
    def kafka_key(self) -> str:
        """``{metric}|{key}``: a key's starts and ends keep their order on one partition."""
        return f"{self.metric}|{self.event.key}"

    def as_dict(self) -> dict[str, object]:
        """The record value of the contract."""
        return self.event.as_dict(self.metric)


@dataclass(frozen=True, slots=True)
class SummaryMessage:
    """A downstream partition's progress and the windows it closed, sent to the aggregator."""

    partition: int
    partitions: int
    closed_before: dict[str, float]
    summaries: tuple[WindowSummary, ...]

    def encode(self) -> bytes:
        """Wire form (``-inf`` as null)."""
        return orjson.dumps(
            {
                "p": self.partition,
                "n": self.partitions,
                "c": {m: (None if math.isinf(t) else t) for m, t in self.closed_before.items()},
                "s": [
                    [
                        s.metric,
                        s.window_start,
                        [list(item) for item in s.top],
                        [[k.key, k.count, k.baseline, k.score, k.surging] for k in s.keys],
                    ]
                    for s in self.summaries
                ],
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> SummaryMessage:
        """Inverse of :meth:`encode`; raises ``ValueError``/``KeyError``/``TypeError`` on junk."""
        data: dict[str, Any] = orjson.loads(raw)
        return cls(
            partition=int(data["p"]),
            partitions=int(data["n"]),
            closed_before={
                str(m): (-math.inf if t is None else float(t)) for m, t in data["c"].items()
            },
            summaries=tuple(
                WindowSummary(
                    str(metric),
                    int(start),
                    tuple((str(key), int(count)) for key, count in top),
                    tuple(
                        KeyTrend(str(k), int(c), float(b), float(s), bool(on))
                        for k, c, b, s, on in keys
                    ),
                )
                for metric, start, top, keys in data["s"]
            ),
        )


def top_surging(trends: Iterable[KeyTrend], k: int) -> list[KeyTrend]:
    """The ``k`` surging keys with the highest scores (ties by key)."""
    return heapq.nsmallest(
        k, (t for t in trends if t.surging), key=lambda trend: (-trend.score, trend.key)
    )


class PartitionTrends:
    """Surge detectors and window summaries of one downstream partition."""

    def __init__(self, params: SurgeParams, top_k: int) -> None:
        self.top_k = top_k
        self.detectors = {
            HASHTAGS: SurgeDetector(params, relative=True),
            SIGNUPS: SurgeDetector(params),
        }

    def close(
        self, metric: str, closed: Iterable[WindowCount], origin: int | None = None
    ) -> tuple[list[Surge], list[WindowSummary]]:
        """Score closed windows of ``metric`` (in window order) and summarise each.

        ``origin`` is the stream's first window (warm-up is dated from it).
        """
        detector = self.detectors[metric]
        by_window: dict[int, list[WindowCount]] = {}
        for window in closed:
            by_window.setdefault(window.window_start, []).append(window)
        if origin is not None and by_window and detector.last_window_start is None:
            # Date the warm-up from the stream's first window only when this detector starts with
            # the stream; one made mid-stream (a partition that changed owner, a restart) saw no
            # history and warms up on its own windows, instead of judging every key new.
            first = min(by_window)
            if first - origin < detector.params.warmup_windows * detector.params.window_seconds:
                detector.set_origin(origin)
        surges: list[Surge] = []
        summaries: list[WindowSummary] = []
        for start in sorted(by_window):
            last = detector.last_window_start
            if last is not None and start <= last:
                # Already scored: a detector restored from a checkpoint taken after the log
                # snapshot sees those windows close again (never in a steady run).
                continue
            windows = by_window[start]
            events = detector.observe_through(start, {w.key: w.trend_count for w in windows})
            # The record's count is the published window count; the score judged the trend count.
            published = {w.key: w.count for w in windows}
            surges.extend(
                Surge(
                    metric,
                    replace(
                        event,
                        trend_count=event.count,
                        count=published.get(event.key, 0)
                        if event.window_start == start
                        else event.count,
                    ),
                )
                for event in events
            )
            summaries.append(self._summary(metric, start, windows, detector))
        return surges, summaries

    def _summary(
        self, metric: str, start: int, windows: list[WindowCount], detector: SurgeDetector
    ) -> WindowSummary:
        def trend(key: str, count: int) -> KeyTrend:
            scorer = detector.scorer(key)
            seen = scorer.last if scorer is not None else None
            if seen is None or seen.window_start != start:
                return KeyTrend(key, count, 0.0, 0.0, False)
            return KeyTrend(key, count, seen.baseline, seen.score, scorer.in_surge)  # type: ignore[union-attr]

        counts = {w.key: w.count for w in windows}
        if metric == HASHTAGS:
            # Hashtags travel as the label /metrics will show (bounded length), so a summary of
            # TOP_K very long tags stays far below a broker's message limit.
            top = tuple((hashtag_label(k), c) for k, c in top_of_window(counts, self.top_k))
            surging = [
                replace(trend(key, counts.get(key, 0)), key=hashtag_label(key))
                for key in detector.surging
            ]
            return WindowSummary(metric, start, top, tuple(top_surging(surging, self.top_k)))
        keys = set(counts) | detector.surging
        return WindowSummary(
            metric, start, (), tuple(trend(key, counts.get(key, 0)) for key in sorted(keys))
        )
