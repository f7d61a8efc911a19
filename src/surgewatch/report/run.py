"""A report run: read event files, compute their windows and surges offline, write the page.

The events go through :class:`~surgewatch.offline.OfflinePipeline` (the worker's own code) as they
are read; closed window counts are handed to a :class:`~surgewatch.report.data.WindowSeries` chunk
by chunk, so memory holds two small arrays per key rather than a million records. The page is
written to a temporary file beside the output and renamed, so a failed run leaves no half page.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from surgewatch.config import Settings
from surgewatch.eventfile import STDIO_PATH, EventFileError, EventReader, EventRecord
from surgewatch.offline import OfflinePipeline
from surgewatch.progress import BYTES, track
from surgewatch.report.data import ReportData, WindowSeries, build_report_data
from surgewatch.report.page import render_html

log = logging.getLogger(__name__)

#: Records between progress updates and hand-overs of closed window counts.
_CHUNK_EVENTS: Final = 16384
#: Bad lines named one by one before only counting them.
_MAX_WARNINGS: Final = 20


class ReportError(RuntimeError):
    """The report cannot be made; the message is one line saying what is wrong and what to do."""


@dataclass(frozen=True, slots=True)
class ReportStats:
    """What a report run read and wrote."""

    events: int
    unreadable_lines: int
    windows: int
    surges: int
    out: str
    size_bytes: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Events read and computed per second of the whole run."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def settings_note(settings: Settings) -> str:
    """The settings that decide the windows and surges, in one line."""
    return (
        f"window {settings.window_seconds} s, grace {settings.grace_seconds} s, "
        f"surge start score {settings.surge_z_start:g}, end score {settings.surge_z_end:g}, "
        f"min count {settings.surge_min_count}, baseline half-life "
        f"{settings.surge_half_life_windows:g} windows, per-account cap {settings.trend_user_cap}, "
        f"{settings.partitions} partitions"
    )


def check_inputs(paths: Sequence[str]) -> None:
    """Raise :class:`ReportError` unless every path is an existing file (or ``-``)."""
    if not paths:
        raise ReportError("no event file given: pass one or more FILE (or - for stdin)")
    for path in paths:
        if path != STDIO_PATH and not os.path.isfile(path):
            raise ReportError(f"no such event file: {path}")


def check_output(out: str) -> None:
    """Raise :class:`ReportError` unless ``out`` can be written (checked before the long work)."""
    if out == STDIO_PATH:
        return
    if os.path.isdir(out):
        raise ReportError(f"cannot write {out}: it is a directory; give a file name for --out")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ReportError(f"cannot write {out}: no such directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (
        os.path.exists(out) and not os.access(out, os.W_OK)
    ):
        raise ReportError(f"cannot write {out}: permission denied")


class ReportCollector:
    """Feeds records through the offline pipeline, keeping closed window counts compactly."""

    def __init__(self, settings: Settings, now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.pipeline = OfflinePipeline(settings, now)
        self.series = WindowSeries()
        self.events = 0
        self._closed = self.pipeline.result.window_counts

    def add(self, record: EventRecord) -> None:
        """One input record."""
        self.pipeline.add(record)
        self.events += 1
        if self.events % _CHUNK_EVENTS == 0:
            self.series.add(self._closed)
            self._closed.clear()

    def finish(
        self,
        sources: Sequence[str],
        *,
        since_seconds: float | None = None,
        until_seconds: float | None = None,
        unreadable_lines: int = 0,
    ) -> ReportData:
        """Close every window and condense the run for the page (see :func:`build_report_data`)."""
        result = self.pipeline.finish()
        self.series.add(result.window_counts)
        result.window_counts.clear()
        return build_report_data(
            self.series,
            result.surges,
            result.totals,
            window_seconds=self.settings.window_seconds,
            sources=sources,
            since_seconds=since_seconds,
            until_seconds=until_seconds,
            unreadable_lines=unreadable_lines,
            settings_note=settings_note(self.settings),
        )


def report_data(
    records: Iterable[EventRecord],
    settings: Settings,
    sources: Sequence[str],
    *,
    since_seconds: float | None = None,
    until_seconds: float | None = None,
    now: Callable[[], float] = time.time,
) -> ReportData:
    """The report data of in-memory ``records`` (named ``sources`` on the page)."""
    collector = ReportCollector(settings, now)
    for record in records:
        collector.add(record)
    return collector.finish(sources, since_seconds=since_seconds, until_seconds=until_seconds)


def compute_report(
    paths: Sequence[str],
    settings: Settings,
    *,
    since_seconds: float | None = None,
    until_seconds: float | None = None,
    progress: bool = False,
    now: Callable[[], float] = time.time,
) -> tuple[ReportData, int]:
    """The report data of the event files ``paths`` (read in order) and how many events they held.

    ``progress`` shows a bar on a terminal (never in CI or a pipe). Unreadable lines are skipped
    with a warning and counted on the page. Raises :class:`ReportError` for a missing file.
    """
    check_inputs(paths)
    if since_seconds is not None and until_seconds is not None and since_seconds >= until_seconds:
        raise ReportError("--from must be before --until")
    sizes = [0 if path == STDIO_PATH else os.path.getsize(path) for path in paths]
    collector = ReportCollector(settings, now)
    bad_lines = 0
    enabled = None if progress else False  # None: only on a terminal, outside CI
    try:
        with track(sum(sizes) or None, "report", BYTES, enabled=enabled) as tracker:
            done_bytes = 0
            for path, size in zip(paths, sizes, strict=True):
                with EventReader(path) as reader:
                    for _, item in reader:
                        if isinstance(item, EventFileError):
                            bad_lines += 1
                            if bad_lines <= _MAX_WARNINGS:
                                log.warning("skipping bad line %s", item)
                            continue
                        collector.add(item)
                        if collector.events % _CHUNK_EVENTS == 0:
                            position = done_bytes + reader.position_bytes()
                            tracker.update(position, note=f"{collector.events:,} events")
                done_bytes += size
                tracker.update(done_bytes, note=f"{collector.events:,} events")
    except EventFileError as exc:
        raise ReportError(str(exc)) from None
    except OSError as exc:
        raise ReportError(f"cannot read {exc.filename or 'input'}: {exc.strerror}") from None
    if bad_lines > _MAX_WARNINGS:
        log.warning("skipped %d bad line(s) in %s", bad_lines, ", ".join(paths))
    sources = [os.path.basename(path) if path != STDIO_PATH else "stdin" for path in paths]
    data = collector.finish(
        sources,
        since_seconds=since_seconds,
        until_seconds=until_seconds,
        unreadable_lines=bad_lines,
    )
    return data, collector.events


def write_html(out: str, page: str) -> int:
    """Write ``page`` to ``out`` (``-`` = stdout) through a temporary file; the size in bytes."""
    data = page.encode("utf-8")
    if out == STDIO_PATH:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return len(data)
    partial = f"{out}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from None
    return len(data)


def write_report(
    paths: Sequence[str],
    out: str,
    settings: Settings,
    *,
    since_seconds: float | None = None,
    until_seconds: float | None = None,
    progress: bool = False,
    now: Callable[[], float] = time.time,
    clock: Callable[[], float] = time.monotonic,
) -> ReportStats:
    """Compute the report of ``paths`` and write it to ``out``; raises :class:`ReportError`."""
    started = clock()
    check_inputs(paths)
    check_output(out)
    data, events = compute_report(
        paths,
        settings,
        since_seconds=since_seconds,
        until_seconds=until_seconds,
        progress=progress,
        now=now,
    )
    size = write_html(out, render_html(data))
    return ReportStats(
        events=events,
        unreadable_lines=data.unreadable_lines,
        windows=data.windows,
        surges=len(data.surges),
        out=out,
        size_bytes=size,
        seconds=clock() - started,
    )
