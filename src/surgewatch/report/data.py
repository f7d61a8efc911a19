"""What a report shows: the window counts and surges of an offline run, condensed for drawing.

:class:`WindowSeries` keeps every closed window count it is fed, two small arrays per key (an
offline run of 72 h has about a million of them), so a run can hand its counts over as it goes.
:func:`build_report_data` then picks what the page draws — the busiest countries and hashtags and
every key that surged — as dense per-window series over the range shown, and pairs each key's
surge start and end records into :class:`SurgeSpan`s with their peak. Pure: no files, no clock.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from surgewatch.offline import StreamTotals
from surgewatch.trends.partition import ALL_KEY, HASHTAGS, SIGNUPS, Surge
from surgewatch.windows.counting import WindowCount

#: Countries drawn as their own line (by total signups); the rest are summed as "other".
TOP_COUNTRIES = 8
#: Hashtags drawn as their own row (by total posts), besides the ones that surged.
TOP_HASHTAGS = 10
#: Most surging keys added to a chart beyond its top ones (by peak); the table lists them all.
MAX_SURGING_EXTRA = 10
OTHER_KEY = "other"


@dataclass(frozen=True, slots=True)
class Series:
    """One key's count in every window of the range shown (zeros included)."""

    key: str
    counts: tuple[int, ...]
    total: int
    surged: bool = False

    @property
    def peak(self) -> int:
        """Its largest window count in the range."""
        return max(self.counts, default=0)


@dataclass(frozen=True, slots=True)
class SurgeSpan:
    """One surge of one key: its start record, its end record (``None`` while still open at the
    end of the input) and its largest window count from start to end.

    ``start_seconds`` and ``end_seconds`` are the windows of the start and end records, as on the
    surges topic; the end record comes with the second calm window.
    """

    metric: str
    key: str
    start_seconds: int
    end_seconds: int | None
    start_count: int
    start_score: float
    baseline: float
    basis: str
    peak_count: int
    peak_seconds: int

    def until_seconds(self, input_end_seconds: int) -> int:
        """Where the surge's span ends on a chart: its end window, or the end of the input."""
        return input_end_seconds if self.end_seconds is None else self.end_seconds


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows; ``windows`` windows of ``window_seconds`` from ``start_seconds``."""

    sources: tuple[str, ...]
    window_seconds: int
    start_seconds: int
    windows: int
    totals: Mapping[str, StreamTotals]
    unreadable_lines: int
    countries: tuple[Series, ...]
    all_signups: Series
    hashtags: tuple[Series, ...]
    distinct_hashtags: int
    distinct_countries: int
    surges: tuple[SurgeSpan, ...]
    settings_note: str

    @property
    def end_seconds(self) -> int:
        """End of the last window shown."""
        return self.start_seconds + self.windows * self.window_seconds


class WindowSeries:
    """Every closed window count fed to it, per (metric, key): window starts and counts."""

    def __init__(self) -> None:
        self._starts: dict[tuple[str, str], array[int]] = {}
        self._counts: dict[tuple[str, str], array[int]] = {}
        self._totals: dict[tuple[str, str], int] = {}
        self.first_seconds: int | None = None
        self.last_seconds: int | None = None

    def add(self, windows: Iterable[WindowCount]) -> None:
        """Take closed window records (any order; each (metric, key, window) once)."""
        starts, counts, totals = self._starts, self._counts, self._totals
        first, last = self.first_seconds, self.last_seconds
        for window in windows:
            slot = (window.metric, window.key)
            column = starts.get(slot)
            if column is None:
                column = starts[slot] = array("q")
                counts[slot] = array("q")
            column.append(window.window_start)
            counts[slot].append(window.count)
            totals[slot] = totals.get(slot, 0) + window.count
            if first is None or window.window_start < first:
                first = window.window_start
            if last is None or window.window_start > last:
                last = window.window_start
        self.first_seconds, self.last_seconds = first, last

    def keys(self, metric: str) -> list[str]:
        """Every key of ``metric`` seen, sorted."""
        return sorted(key for m, key in self._totals if m == metric)

    def counts(self, metric: str, key: str) -> dict[int, int]:
        """The key's count by window start (windows without it left out)."""
        slot = (metric, key)
        if slot not in self._starts:
            return {}
        return dict(zip(self._starts[slot], self._counts[slot], strict=True))

    def totals_between(self, metric: str, start_seconds: int, end_seconds: int) -> dict[str, int]:
        """Each key's count summed over the windows starting in ``[start, end)``."""
        first, last = self.first_seconds, self.last_seconds
        if first is not None and last is not None and start_seconds <= first and last < end_seconds:
            return {key: total for (m, key), total in self._totals.items() if m == metric}
        out: dict[str, int] = {}
        for (m, key), column in self._starts.items():
            if m != metric:
                continue
            out[key] = sum(
                count
                for start, count in zip(column, self._counts[m, key], strict=True)
                if start_seconds <= start < end_seconds
            )
        return out

    def summed(self, metric: str, keys: Iterable[str] | None = None) -> dict[int, int]:
        """The count of ``keys`` (default: all of the metric's) together, by window start."""
        wanted = None if keys is None else set(keys)
        out: dict[int, int] = {}
        for (m, key), column in self._starts.items():
            if m != metric or (wanted is not None and key not in wanted):
                continue
            for start, count in zip(column, self._counts[m, key], strict=True):
                out[start] = out.get(start, 0) + count
        return out


def _dense(
    by_window: Mapping[int, int], start_seconds: int, windows: int, window_seconds: int
) -> tuple[int, ...]:
    out = [0] * windows
    for start, count in by_window.items():
        index = (start - start_seconds) // window_seconds
        if 0 <= index < windows:
            out[index] += count
    return tuple(out)


def pair_surges(
    surges: Iterable[Surge], series: WindowSeries, window_seconds: int
) -> list[SurgeSpan]:
    """Each key's start and end records as spans, ordered by start, metric and key.

    A start without an end is open; an end without a start (none in a run from the beginning of
    the data) is dropped. The peak is the largest window count from the start window to the end
    window (to the last window fed, for an open surge); for ``*`` that of all signups together.
    """
    by_key: dict[tuple[str, str], list[Surge]] = {}
    for surge in surges:
        by_key.setdefault((surge.metric, surge.event.key), []).append(surge)
    spans: list[SurgeSpan] = []
    all_signups: dict[int, int] | None = None
    for (metric, key), records in sorted(by_key.items()):
        if metric == SIGNUPS and key == ALL_KEY:
            if all_signups is None:
                all_signups = series.summed(SIGNUPS)
            counts = all_signups
        else:
            counts = series.counts(metric, key)
        # A key's records arrive in order; the sort is stable, so an end keeps its place.
        records.sort(key=lambda s: s.event.window_start)
        opened: Surge | None = None
        for record in records:
            if record.event.state == "start" and opened is None:
                opened = record
            elif record.event.state == "end" and opened is not None:
                spans.append(_span(opened, record.event.window_start, counts, window_seconds))
                opened = None
        if opened is not None:
            spans.append(_span(opened, None, counts, window_seconds, series.last_seconds))
    spans.sort(key=lambda s: (s.start_seconds, s.metric, s.key))
    return spans


def _span(
    start: Surge,
    end_seconds: int | None,
    counts: Mapping[int, int],
    window_seconds: int,
    last_seconds: int | None = None,
) -> SurgeSpan:
    event = start.event
    stop = end_seconds if end_seconds is not None else (last_seconds or event.window_start)
    peak_count, peak_seconds = event.count, event.window_start
    for window in range(event.window_start, stop + 1, window_seconds):
        count = counts.get(window, 0)
        if count > peak_count:
            peak_count, peak_seconds = count, window
    return SurgeSpan(
        metric=start.metric,
        key=event.key,
        start_seconds=event.window_start,
        end_seconds=end_seconds,
        start_count=event.count,
        start_score=event.score,
        baseline=event.baseline,
        basis=event.basis,
        peak_count=peak_count,
        peak_seconds=peak_seconds,
    )


def _top(keys: Iterable[str], score: Mapping[str, int], n: int) -> list[str]:
    return heapq.nsmallest(n, keys, key=lambda key: (-score[key], key))


def build_report_data(
    series: WindowSeries,
    surges: Sequence[Surge],
    totals: Mapping[str, StreamTotals],
    *,
    window_seconds: int,
    sources: Sequence[str],
    since_seconds: float | None = None,
    until_seconds: float | None = None,
    unreadable_lines: int = 0,
    settings_note: str = "",
) -> ReportData:
    """Condense a run for the page: the windows in ``[since, until)`` (default: all of them).

    Surges are scored on the whole input; those whose span touches the range are shown.
    """
    size = window_seconds
    first = series.first_seconds
    last = series.last_seconds
    if first is None or last is None:
        start, windows = int((since_seconds or 0) // size * size), 0
    else:
        start = first if since_seconds is None else int(since_seconds // size) * size
        stop = last + size if until_seconds is None else -int(-until_seconds // size) * size
        windows = max(0, (stop - start) // size)
    end = start + windows * size

    spans = [
        span
        for span in pair_surges(surges, series, size)
        if span.start_seconds < end and span.until_seconds(end) + size > start
    ]
    surging = {(span.metric, span.key) for span in spans}

    def dense(by_window: Mapping[int, int]) -> tuple[int, ...]:
        return _dense(by_window, start, windows, size)

    def make(metric: str, key: str, by_window: Mapping[int, int] | None = None) -> Series:
        counts = dense(series.counts(metric, key) if by_window is None else by_window)
        return Series(key, counts, sum(counts), (metric, key) in surging)

    country_keys = series.keys(SIGNUPS)
    country_series = {key: make(SIGNUPS, key) for key in country_keys}
    country_totals = {key: s.total for key, s in country_series.items()}
    chosen = _top((k for k in country_keys if country_totals[k]), country_totals, TOP_COUNTRIES)
    peaks = {key: s.peak for key, s in country_series.items()}
    extra = _top(
        (k for k in country_keys if country_series[k].surged and k not in chosen),
        peaks,
        MAX_SURGING_EXTRA,
    )
    shown = sorted(chosen + extra, key=lambda k: (-country_totals[k], k))
    countries = [country_series[key] for key in shown]
    rest = [key for key in country_keys if key not in shown]
    if rest and any(country_totals[key] for key in rest):
        other = dense(series.summed(SIGNUPS, rest))
        countries.append(Series(OTHER_KEY, other, sum(other)))
    everything = dense(series.summed(SIGNUPS))
    all_signups = Series(ALL_KEY, everything, sum(everything), (SIGNUPS, ALL_KEY) in surging)

    tag_totals = series.totals_between(HASHTAGS, start, end)
    tag_keys = sorted(tag_totals)
    top_tags = _top((k for k in tag_keys if tag_totals[k]), tag_totals, TOP_HASHTAGS)
    tag_series = {key: make(HASHTAGS, key) for key in top_tags}
    surged_tags = [key for metric, key in surging if metric == HASHTAGS and key not in top_tags]
    for key in surged_tags:
        tag_series.setdefault(key, make(HASHTAGS, key))
    surged_peaks = {key: tag_series[key].peak for key in surged_tags}
    tags = top_tags + _top(surged_tags, surged_peaks, MAX_SURGING_EXTRA)
    hashtags = sorted((tag_series[key] for key in tags), key=lambda s: (-s.total, s.key))

    return ReportData(
        sources=tuple(sources),
        window_seconds=size,
        start_seconds=start,
        windows=windows,
        totals=dict(totals),
        unreadable_lines=unreadable_lines,
        countries=tuple(countries),
        all_signups=all_signups,
        hashtags=tuple(hashtags),
        distinct_hashtags=sum(1 for total in tag_totals.values() if total),
        distinct_countries=sum(1 for total in country_totals.values() if total),
        surges=tuple(spans),
        settings_note=settings_note,
    )
