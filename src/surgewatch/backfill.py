"""Backfill: the window metrics of an event file, as Prometheus TSDB blocks stamped with event time.

The event file runs through the worker's own pure code (:mod:`surgewatch.offline`). Every series a
worker would have served is written to OpenMetrics text with the *event* time at which the worker
would have served it: a window's trend series at the window's end, and the counters as they stood
then. ``promtool tsdb create-blocks-from openmetrics`` turns that text into blocks; a Prometheus
started on them (or given them in its data directory) answers queries about last January as if it
had been scraping then, so the dashboards show history at its true time.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from surgewatch.config import Settings
from surgewatch.eventfile import EventFileError, EventReader
from surgewatch.ingest import BatchOutcome
from surgewatch.labels import hashtag_label
from surgewatch.offline import OfflinePipeline
from surgewatch.trends.aggregate import TrendView
from surgewatch.trends.partition import HASHTAGS

Labels = tuple[tuple[str, str], ...]


class BackfillError(RuntimeError):
    """The backfill cannot go on; the message is one line saying what to do."""


@dataclass
class _Family:
    kind: str  # "gauge" or "counter"
    help: str
    #: labels -> [(timestamp seconds, value)], in time order.
    series: dict[Labels, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, labels: Labels, timestamp: float, value: float) -> None:
        points = self.series.setdefault(labels, [])
        if points and points[-1][0] >= timestamp:
            # Input partitions stand at different event times: a series never goes back in time.
            points[-1] = (points[-1][0], value)
        else:
            points.append((timestamp, value))


@dataclass(frozen=True, slots=True)
class BackfillStats:
    """What a backfill computed and wrote."""

    events: int
    bad_lines: int
    windows: int
    samples: int
    seconds: float
    events_per_s: float
    openmetrics: Path
    first_seconds: float | None
    last_seconds: float | None


class _Recorder:
    """Collects samples from the offline pipeline's callbacks, in event time."""

    def __init__(self, window_seconds: int) -> None:
        self.window_seconds = window_seconds
        self.families: dict[str, _Family] = {}
        self.windows: set[int] = set()
        self.received: dict[str, float] = defaultdict(float)
        self.rejected: dict[tuple[str, str], float] = defaultdict(float)
        self.late: dict[str, float] = defaultdict(float)
        self.first: float | None = None
        self.last: float | None = None

    def family(self, name: str, kind: str, help_text: str) -> _Family:
        found = self.families.get(name)
        if found is None:
            found = self.families[name] = _Family(kind, help_text)
        return found

    def _seen(self, timestamp: float) -> None:
        self.first = timestamp if self.first is None else min(self.first, timestamp)
        self.last = timestamp if self.last is None else max(self.last, timestamp)

    def on_batch(self, stream: str, outcome: BatchOutcome, watermark: float) -> None:
        """Counters, stamped with the input partition's watermark after the batch."""
        if not math.isfinite(watermark):
            return
        self.received[stream] += outcome.received
        self.late[stream] += outcome.late
        for _, rejection in outcome.rejected:
            self.rejected[(stream, rejection.reason.value)] += 1
        stamp = float(watermark)
        self._seen(stamp)
        received = self.family(
            "surgewatch_events_received", "counter", "Input events read, by stream."
        )
        received.add((("stream", stream),), stamp, self.received[stream])
        late = self.family(
            "surgewatch_events_late", "counter", "Input events whose window had closed."
        )
        late.add((("stream", stream),), stamp, self.late[stream])
        rejected = self.family(
            "surgewatch_events_rejected",
            "counter",
            "Input events rejected to the dead-letter topic, by stream and reason.",
        )
        for (s, reason), total in self.rejected.items():
            if s == stream:
                rejected.add((("stream", stream), ("reason", reason)), stamp, total)

    def on_window(self, metric: str, view: TrendView) -> None:
        """A window completed: the trend series as the worker served them from its end on."""
        size = self.window_seconds
        window = view.hashtag_window if metric == HASHTAGS else view.signup_window
        if window is None:
            return
        stamp = float(window + size)
        self.windows.add(window)
        self._seen(stamp)
        self.family(
            "surgewatch_trend_window_start_seconds",
            "gauge",
            "Start of the newest complete window the trend series describe, Unix seconds.",
        ).add((), stamp, float(view.window_start or window))
        if metric == HASHTAGS:
            top = self.family(
                "surgewatch_top_hashtag_posts", "gauge", "Posts in the last complete window."
            )
            for tag, count in view.top_hashtags:
                top.add((("hashtag", hashtag_label(tag)),), stamp, float(count))
            score = self.family(
                "surgewatch_hashtag_surge_score", "gauge", "Surge score of surging hashtags."
            )
            for trend in view.surging_hashtags:
                score.add((("hashtag", hashtag_label(trend.key)),), stamp, trend.score)
            return
        signups = self.family(
            "surgewatch_signups_window", "gauge", "Signups in the last complete window."
        )
        score = self.family(
            "surgewatch_signup_surge_score", "gauge", "Surge score of the window's signups."
        )
        surging = self.family(
            "surgewatch_signup_surging", "gauge", "1 for each country whose signups surge."
        )
        for trend in view.signups:
            labels = (("country", trend.key),)
            signups.add(labels, stamp, float(trend.count))
            score.add(labels, stamp, trend.score)
            if trend.surging:
                surging.add(labels, stamp, 1.0)
        everyone = view.all_signups
        if everyone is not None:
            self.family(
                "surgewatch_all_signups_window", "gauge", "All signups in the last window."
            ).add((), stamp, float(everyone.count))
            self.family(
                "surgewatch_all_signups_surge_score", "gauge", "Surge score of all signups."
            ).add((), stamp, everyone.score)
            self.family(
                "surgewatch_all_signups_surging", "gauge", "1 while all signups surge."
            ).add((), stamp, 1.0 if everyone.surging else 0.0)

    def write(self, out: IO[str]) -> int:
        """OpenMetrics text: families grouped, each series in time order; returns the samples."""
        samples = 0
        for name in sorted(self.families):
            family = self.families[name]
            out.write(f"# HELP {name} {family.help}\n# TYPE {name} {family.kind}\n")
            sample_name = f"{name}_total" if family.kind == "counter" else name
            for labels in sorted(family.series):
                rendered = _labels(labels)
                for timestamp, value in family.series[labels]:
                    out.write(f"{sample_name}{rendered} {_number(value)} {_number(timestamp)}\n")
                    samples += 1
        out.write("# EOF\n")
        return samples


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels) + "}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def compute_openmetrics(
    paths: Sequence[str],
    settings: Settings,
    out_path: Path,
    *,
    now: Callable[[], float] = time.time,
    on_bad_line: Callable[[EventFileError], None] | None = None,
) -> BackfillStats:
    """Run ``paths`` through the offline pipeline and write the worker's series as OpenMetrics."""
    started = time.monotonic()
    pipeline = OfflinePipeline(settings, now, batch_per_window=True)
    recorder = _Recorder(settings.window_seconds)
    pipeline.on_batch = recorder.on_batch
    pipeline.aggregator.on_window = recorder.on_window
    events = bad = 0
    for path in paths:
        try:
            with EventReader(path) as reader:
                for _, item in reader:
                    if isinstance(item, EventFileError):
                        bad += 1
                        if on_bad_line is not None:
                            on_bad_line(item)
                        continue
                    pipeline.add(item)
                    events += 1
        except OSError as exc:
            raise BackfillError(f"cannot read {path}: {exc.strerror or exc}") from exc
    pipeline.finish()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as out:
        samples = recorder.write(out)
    seconds = time.monotonic() - started
    return BackfillStats(
        events=events,
        bad_lines=bad,
        windows=len(recorder.windows),
        samples=samples,
        seconds=seconds,
        events_per_s=events / seconds if seconds > 0 else 0.0,
        openmetrics=out_path,
        first_seconds=recorder.first,
        last_seconds=recorder.last,
    )


def create_blocks(openmetrics: Path, tsdb_dir: Path, promtool: str | None = None) -> list[Path]:
    """``promtool tsdb create-blocks-from openmetrics``; returns the block directories made."""
    binary = promtool or shutil.which("promtool")
    if binary is None:
        raise BackfillError(
            "promtool is not installed: run `make setup` (Debian package prometheus)"
        )
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in tsdb_dir.iterdir()}
    result = subprocess.run(
        [binary, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(tsdb_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BackfillError(f"promtool could not create blocks: {last[0]}")
    return sorted(p for p in tsdb_dir.iterdir() if p.is_dir() and p.name not in before)


def backfill(
    paths: Iterable[str],
    settings: Settings,
    tsdb_dir: Path,
    *,
    now: Callable[[], float] = time.time,
    keep_openmetrics: Path | None = None,
    on_bad_line: Callable[[EventFileError], None] | None = None,
) -> tuple[BackfillStats, list[Path]]:
    """Event files -> OpenMetrics (event-time stamps) -> TSDB blocks in ``tsdb_dir``."""
    files = list(paths)
    if not files:
        raise BackfillError("no event file given: pass one or more FILE (or - for stdin)")
    for path in files:
        if path != "-" and not Path(path).is_file():
            raise BackfillError(f"no such event file: {path}")
    openmetrics = keep_openmetrics or tsdb_dir / "backfill.om"
    stats = compute_openmetrics(files, settings, openmetrics, now=now, on_bad_line=on_bad_line)
    try:
        blocks = create_blocks(openmetrics, tsdb_dir)
    finally:
        if keep_openmetrics is None:
            openmetrics.unlink(missing_ok=True)
    return stats, blocks
