"""Soak benchmark: one worker fed live events at a steady rate for minutes; memory, close delay, lag.

Starts the embedded broker and one ``surgewatch worker`` (default window and grace, a unique app id
and topics). A producer process then sends live events (``ts`` = now, so windows close by the
watermark in real time) at ``--rate`` events/s for ``--minutes`` (``liveload.py``): posts of the
baseline scenario's population, with hashtags drawn from the simulator's Zipf vocabulary plus a
steady stream of brand-new tags (about ``--tags-per-hour`` distinct hashtags an hour), and a
``--signup-share`` of signups from the scenario's countries. Every ``--sample-seconds`` the worker's RSS, its
received/counted/rejected/late counters and the events produced are sampled. A plain consumer of the
window-counts topic notes when the first record of each (metric, window) arrives: the window-close
delay is that wall time minus the window's end.

After ``--warmup`` minutes (default 4: the worker's bounded state fills first) it checks that the
worker's RSS stays within ±15 % of its mean, that the close delay's p95 and max stay under the grace
period + 5 s, that the lag at the end is under ``--max-lag`` seconds of input, that no event was
rejected or late, and that the producer held the rate. Prints a table with PASS/FAIL per criterion
and a JSON line last; exits 1 on any FAIL. The producer sends a record batch per partition every
``--tick`` seconds (default 0.25).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from harness import cpu_seconds, rss_mb, worker_env
from liveload import (
    TICK_SECONDS,
    TS_JITTER_SECONDS,
    ProducerCounters,
    Workload,
    run_producer,
)
from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import Settings
from surgewatch.processes import WorkerProcess
from surgewatch.scrape import sample_sum, scrape
from surgewatch.simulate.vocabulary import VOCABULARY_SIZE

WINDOW_SECONDS: int = Settings.model_fields["window_seconds"].default
GRACE_SECONDS: int = Settings.model_fields["grace_seconds"].default
PARTITIONS: int = Settings.model_fields["partitions"].default
#: Pass bands of the checks.
RSS_BAND = 0.15
DELAY_MARGIN_SECONDS = 5.0
MIN_RATE_SHARE = 0.95
#: Minutes left out of the checks. The worker's state is bounded, but it takes minutes to fill: with
#: this workload the ingest's owner cache (100,000 keys) first fills at about 190 s (50,000 vocabulary
#: tags plus 264 new ones a second). The worker's RSS grows fastest until about 3.5 minutes, then
#: slowly; in a twenty-minute run it levelled off at minute 12.
WARMUP_MINUTES = 4.0
#: How long after the last event the worker has to receive everything and close the windows due.
DRAIN_TIMEOUT_SECONDS = 60.0
PROGRESS_EVERY_SECONDS = 30.0
#: Broker memory per event produced, measured: tansu's memory storage keeps every record (the
#: input and the partials and window records derived from it); 10 min at 20k/s took 3.1 GB.
BROKER_BYTES_PER_EVENT = 300


def available_mb() -> float:
    """``MemAvailable`` of this machine, MiB (infinite when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf


# -- watching the worker -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the worker; ``at_seconds`` counts from the first event produced."""

    at_seconds: float
    produced: int
    received: int
    counted: int
    rejected: int
    late: int
    worker_rss_mb: float
    broker_rss_mb: float
    worker_cpu_seconds: float
    broker_cpu_seconds: float
    #: The machine's 1-minute load average: how much else was running.
    load: float
    #: Per stream, how far the worker's input watermark stood behind the wall clock, seconds.
    watermark_behind: dict[str, float] = field(default_factory=dict)


class WindowArrivals:
    """Reads the window-counts topic and notes the wall time the first record of each
    ``(metric, window_start)`` arrives on each partition, from its key ``metric|key|window_start``.

    Each downstream partition closes its share of a window on its own: the earliest of them is when
    the window closed, the latest when all its records were out.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.first_seen: dict[tuple[str, int], dict[int, float]] = {}
        self.vocabulary_tags: set[bytes] = set()
        self.new_tags: set[bytes] = set()
        self.records = 0

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for tp, records in batch.items():
                    self.records += len(records)
                    for record in records:
                        metric, key, start = record.key.split(b"|")
                        window = (metric.decode(), int(start))
                        self.first_seen.setdefault(window, {}).setdefault(tp.partition, now)
                        if window[0] == "hashtag_posts":
                            # Brand-new tags end in their serial number; vocabulary words never do.
                            tags = self.new_tags if key[-1:].isdigit() else self.vocabulary_tags
                            tags.add(key)
        finally:
            await consumer.stop()


@dataclass
class Observations:
    """Everything the soak saw; times are wall-clock Unix seconds."""

    started: float
    finished: float
    samples: list[Sample]
    #: At the last event acknowledged, and once the worker has read everything (or at the timeout).
    final: Sample
    drained: Sample
    drain_seconds: float | None
    first_seen: dict[tuple[str, int], dict[int, float]]
    vocabulary_tags_seen: int
    new_tags_seen: int
    window_records: int
    posts: int
    signups: int
    new_tags: int
    shortfall: int
    producer_cpu_seconds: float
    worker_alive: bool
    notes: list[str] = field(default_factory=list)


def take_sample(worker: WorkerProcess, broker_pid: int, counters: ProducerCounters) -> Sample:
    """Scrape the worker and read the process table (blocking: run it in a thread)."""
    assert worker.process is not None
    pid = worker.process.pid
    produced = counters.produced
    samples = scrape(worker.metrics_url, 10.0)
    now = time.time()
    watermarks = {
        dict(labels).get("stream", ""): value
        for (name, labels), value in samples.items()
        if name == "surgewatch_watermark_seconds"
    }
    return Sample(
        watermark_behind={stream: now - value for stream, value in watermarks.items()},
        at_seconds=now - counters.started.value,
        produced=produced,
        received=int(sample_sum(samples, "surgewatch_events_received_total")),
        counted=int(
            sample_sum(samples, "surgewatch_posts_total")
            + sample_sum(samples, "surgewatch_signups_total")
        ),
        rejected=int(sample_sum(samples, "surgewatch_events_rejected_total")),
        late=int(sample_sum(samples, "surgewatch_events_late_total")),
        worker_rss_mb=rss_mb(pid),
        broker_rss_mb=rss_mb(broker_pid),
        worker_cpu_seconds=cpu_seconds(pid),
        broker_cpu_seconds=cpu_seconds(broker_pid),
        load=os.getloadavg()[0],
    )


def expected_windows(
    started: float, finished: float, warmup_seconds: float, metrics: Sequence[str]
) -> list[tuple[str, int]]:
    """Windows ending after the warm-up that the watermark must have closed before the last event:
    their end + grace lies before the end of production (less the ``ts`` jitter and a second)."""
    first = math.ceil((started + warmup_seconds) / WINDOW_SECONDS) * WINDOW_SECONDS - WINDOW_SECONDS
    last_end = finished - GRACE_SECONDS - TS_JITTER_SECONDS - 1.0
    starts = range(first, int(last_end) - WINDOW_SECONDS + 1, WINDOW_SECONDS)
    return [(metric, start) for start in starts for metric in metrics]


async def watch(
    workload: Workload,
    worker: WorkerProcess,
    broker_pid: int,
    counts_topic: str,
    args: argparse.Namespace,
) -> Observations:
    """Run the producer process and sample until it is done and the worker has drained."""
    ctx = multiprocessing.get_context("spawn")
    counters = ProducerCounters.create(ctx)
    producer = ctx.Process(target=run_producer, args=(workload, counters), daemon=True)
    arrivals = WindowArrivals(workload.bootstrap, counts_topic)
    reader = asyncio.ensure_future(arrivals.run())
    producer.start()
    assert producer.pid is not None and worker.process is not None
    samples: list[Sample] = []
    notes: list[str] = []
    try:
        while not counters.started.value:
            if not producer.is_alive():
                raise RuntimeError(f"the producer exited early (code {producer.exitcode})")
            await asyncio.sleep(0.05)
        started = counters.started.value
        next_sample = started + args.sample_seconds
        next_progress = started + PROGRESS_EVERY_SECONDS
        shown: Sample | None = None  # the sample of the last progress line

        async def look() -> Sample | None:
            try:
                return await asyncio.to_thread(take_sample, worker, broker_pid, counters)
            except OSError as exc:  # the worker is too busy to answer, or gone
                notes.append(f"scrape failed at {time.time() - started:.0f} s: {exc}")
                return None

        while not counters.finished.value:
            if not producer.is_alive():
                raise RuntimeError(f"the producer stopped (code {producer.exitcode})")
            if reader.done():
                reader.result()  # the window-counts reader failed: raise its error
                raise RuntimeError("the window-counts reader stopped")
            if worker.process.poll() is not None:
                notes.append(f"the worker exited with code {worker.process.returncode}")
                producer.terminate()
                break
            if time.time() < next_sample:
                await asyncio.sleep(min(0.1, next_sample - time.time()))
                continue
            next_sample += args.sample_seconds
            if (seen := await look()) is not None:
                if time.time() >= next_progress:
                    next_progress += PROGRESS_EVERY_SECONDS
                    print_progress(seen, shown, len(arrivals.first_seen), args.rate)
                    shown = seen
                samples.append(seen)
        finished = counters.finished.value or time.time()
        worker_alive = worker.process.poll() is None
        final = (await look() if worker_alive else None) or samples[-1]
        drain_seconds = None
        metrics = ["hashtag_posts"] + (["signups"] if args.signup_share > 0 else [])
        due = expected_windows(started, finished, args.warmup * 60, metrics)
        deadline = time.time() + DRAIN_TIMEOUT_SECONDS
        while worker_alive and time.time() < deadline:
            if drain_seconds is None:
                now = await look()
                if now is not None and now.received >= now.produced:
                    drain_seconds = time.time() - finished
            if drain_seconds is not None and all(w in arrivals.first_seen for w in due):
                await asyncio.sleep(DELAY_MARGIN_SECONDS)  # the other partitions' records
                break
            await asyncio.sleep(0.2)
        drained = (await look() if worker.process.poll() is None else None) or final
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        producer.join(10)
        if producer.is_alive():
            producer.terminate()
    return Observations(
        started=started,
        finished=finished,
        samples=samples,
        final=final,
        drained=drained,
        drain_seconds=drain_seconds,
        first_seen=arrivals.first_seen,
        vocabulary_tags_seen=len(arrivals.vocabulary_tags),
        new_tags_seen=len(arrivals.new_tags),
        window_records=arrivals.records,
        posts=int(counters.posts.value),
        signups=int(counters.signups.value),
        new_tags=int(counters.new_tags.value),
        shortfall=int(counters.shortfall.value),
        producer_cpu_seconds=counters.cpu_seconds.value,
        worker_alive=worker_alive,
        notes=notes,
    )


def print_progress(sample: Sample, previous: Sample | None, windows: int, rate: float) -> None:
    """One line on stderr: counts, lag, memory, and CPU (cores) since the previous line."""
    lag = max(0, sample.produced - sample.received)
    cpu = ""
    if previous is not None and sample.at_seconds > previous.at_seconds:
        seconds = sample.at_seconds - previous.at_seconds
        worker = (sample.worker_cpu_seconds - previous.worker_cpu_seconds) / seconds
        broker = (sample.broker_cpu_seconds - previous.broker_cpu_seconds) / seconds
        cpu = f"  CPU worker {worker:.2f} broker {broker:.2f}"
    print(
        f"  {sample.at_seconds:4.0f} s  produced {sample.produced:>11,}  received"
        f" {sample.received:>11,}  lag {lag / rate:5.2f} s  RSS worker"
        f" {sample.worker_rss_mb:6.1f} MB broker {sample.broker_rss_mb:7.1f} MB"
        f"  windows {windows:3}{cpu}  load {sample.load:.1f}",
        file=sys.stderr,
    )


# -- judging -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return 60.0 * cov / var if var else 0.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Rss:
    """The worker's RSS over the samples after the warm-up."""

    min_mb: float
    mean_mb: float
    max_mb: float
    max_deviation_pct: float
    trend_mb_per_min: float
    samples: int

    @classmethod
    def of(cls, steady: Sequence[Sample]) -> Rss:
        values = [s.worker_rss_mb for s in steady]
        if not values:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0)
        mean = sum(values) / len(values)
        deviation = max(abs(v - mean) for v in values) / mean * 100 if mean else 0.0
        trend = slope_per_minute([(s.at_seconds, s.worker_rss_mb) for s in steady])
        return cls(min(values), mean, max(values), deviation, trend, len(values))


@dataclass(frozen=True, slots=True)
class Delays:
    """Window-close delays (arrival minus window end) of the windows due after the warm-up: to
    the first record of a window, and to the first record from its last partition."""

    windows: list[tuple[str, int]]
    first: list[float]
    complete: list[float]
    missing: int

    @classmethod
    def of(cls, obs: Observations, due: Sequence[tuple[str, int]]) -> Delays:
        windows = [window for window in due if obs.first_seen.get(window)]
        ends = [start + WINDOW_SECONDS for _, start in windows]
        first = [
            min(obs.first_seen[w].values()) - end for w, end in zip(windows, ends, strict=True)
        ]
        complete = [
            max(obs.first_seen[w].values()) - end for w, end in zip(windows, ends, strict=True)
        ]
        return cls(windows, first, complete, len(due) - len(windows))

    def text(self, values: Sequence[float]) -> str:
        if not values:
            return "no window"
        return (
            f"p50 {percentile(values, 0.5):.1f} s, p95 {percentile(values, 0.95):.1f} s,"
            f" max {max(values):.1f} s"
        )


def around(obs: Observations, since: float, until: float) -> str:
    """What the producer, the worker and the machine did between two wall times: the slowest
    produce rate between two samples, the largest lag and load average."""
    near = [s for s in obs.samples if since <= obs.started + s.at_seconds <= until + 5]
    if len(near) < 2:
        return "no samples around it"
    rates = [
        (b.produced - a.produced) / (b.at_seconds - a.at_seconds)
        for a, b in itertools.pairwise(near)
        if b.at_seconds > a.at_seconds
    ]
    lag = max(max(0, s.produced - s.received) for s in near)
    behind = {
        stream: max(s.watermark_behind.get(stream, 0.0) for s in near)
        for stream in sorted({stream for s in near for stream in s.watermark_behind})
    }
    watermarks = ", ".join(f"{stream} {seconds:.1f} s" for stream, seconds in behind.items())
    return (
        f"producer min {min(rates):,.0f} events/s, worker lag max {lag:,} events,"
        f" input watermark behind the clock max {watermarks or 'unknown'},"
        f" load average max {max(s.load for s in near):.1f}"
    )


def slow_windows(obs: Observations, delays: Delays, limit: float) -> list[str]:
    """A note per window that closed late, with what happened around its close."""
    notes = []
    for window, delay in zip(delays.windows, delays.first, strict=True):
        if delay >= limit:
            end = window[1] + WINDOW_SECONDS
            due = end + GRACE_SECONDS
            when = time.strftime("%H:%M:%S", time.gmtime(end))
            notes.append(
                f"{window[0]} window ending {when}Z ({end - obs.started:.0f} s into the run)"
                f" closed {delay:.1f} s after its end; around it: {around(obs, due - 5, end + delay)}"
            )
    return notes


def judge(
    obs: Observations, args: argparse.Namespace
) -> tuple[list[tuple[str, str]], list[Check], dict[str, Any]]:
    """The table of figures, the checks and the JSON summary."""
    warmup_s = args.warmup * 60
    seconds = obs.finished - obs.started
    produced = obs.posts + obs.signups
    achieved = produced / seconds
    steady = [s for s in obs.samples if s.at_seconds >= warmup_s]
    interval_rates = [
        (b.produced - a.produced) / (b.at_seconds - a.at_seconds)
        for a, b in itertools.pairwise(steady)
        if b.at_seconds > a.at_seconds
    ]
    rss = Rss.of(steady)
    metrics = ["hashtag_posts"] + (["signups"] if args.signup_share > 0 else [])
    delays = Delays.of(obs, expected_windows(obs.started, obs.finished, warmup_s, metrics))
    delay_limit = GRACE_SECONDS + DELAY_MARGIN_SECONDS
    obs.notes.extend(slow_windows(obs, delays, delay_limit))
    if warmup_s < WINDOW_SECONDS + GRACE_SECONDS:
        obs.notes.append(
            f"the warm-up is shorter than window + grace ({WINDOW_SECONDS + GRACE_SECONDS} s):"
            " the RSS figures include the window state filling up"
        )
    final, drained = obs.final, obs.drained
    # Produced counts acknowledged batches: the worker may have read one before its ack arrived.
    lag_events = max(0, final.produced - final.received)
    lag_s = lag_events / achieved
    max_lag_s = max((max(0, s.produced - s.received) / achieved for s in steady), default=0.0)
    steady_seconds = steady[-1].at_seconds - steady[0].at_seconds if len(steady) >= 2 else 0.0
    worker_cpu = broker_cpu = 0.0
    if steady_seconds:
        worker_cpu = (steady[-1].worker_cpu_seconds - steady[0].worker_cpu_seconds) / steady_seconds
        broker_cpu = (steady[-1].broker_cpu_seconds - steady[0].broker_cpu_seconds) / steady_seconds
    # The vocabulary's tags are nearly all seen within minutes; the brand-new ones scale with time
    # (counted as produced: the windows still open at the end have published none of theirs).
    distinct = obs.vocabulary_tags_seen + obs.new_tags_seen
    per_hour = obs.vocabulary_tags_seen + obs.new_tags * 3600 / seconds
    drained_text = (
        f"all received {obs.drain_seconds:.1f} s after the last event"
        if obs.drain_seconds is not None
        else f"not all received {DRAIN_TIMEOUT_SECONDS:.0f} s after the last event"
    )
    figures = [
        (
            "run",
            f"{seconds:.0f} s of live events, warm-up {warmup_s:.0f} s, window"
            f" {WINDOW_SECONDS} s, grace {GRACE_SECONDS} s, {PARTITIONS} partitions; the producer"
            f" sends a record batch per partition every {args.tick:g} s",
        ),
        (
            "produce rate",
            f"{achieved:,.0f} events/s of {args.rate:,.0f} ({achieved / args.rate:.1%}); per"
            f" {args.sample_seconds:g} s after the warm-up min {min(interval_rates, default=0):,.0f},"
            f" max {max(interval_rates, default=0):,.0f}; {obs.shortfall:,} dropped behind schedule",
        ),
        ("events produced", f"{produced:,} ({obs.posts:,} posts, {obs.signups:,} signups)"),
        (
            "distinct hashtags",
            f"{distinct:,} in window records ({obs.vocabulary_tags_seen:,} of the vocabulary,"
            f" {obs.new_tags_seen:,} brand-new; {obs.new_tags:,} brand-new produced):"
            f" ≈ {per_hour:,.0f} an hour",
        ),
        ("window records", f"{obs.window_records:,}"),
        (
            "worker RSS after warm-up",
            f"min {rss.min_mb:,.1f} MB, mean {rss.mean_mb:,.1f} MB, max {rss.max_mb:,.1f} MB;"
            f" max deviation {rss.max_deviation_pct:.1f}%; trend {rss.trend_mb_per_min:+.2f}"
            f" MB/min ({rss.samples} samples)",
        ),
        (
            "broker RSS at the end",
            f"{final.broker_rss_mb:,.1f} MB (memory storage keeps every record)",
        ),
        (
            "window-close delay",
            f"{delays.text(delays.first)} ({len(delays.first)} windows of {len(metrics)} metrics"
            + (f", {delays.missing} missing" if delays.missing else "")
            + ")",
        ),
        ("  last partition's", delays.text(delays.complete)),
        (
            "lag at the end",
            f"{lag_events:,} events = {lag_s:.2f} s of input; max after the warm-up"
            f" {max_lag_s:.2f} s; {drained_text}",
        ),
        (
            "received / counted",
            f"{drained.received:,} / {drained.counted:,} (at the end of the run)",
        ),
        ("rejected / late", f"{drained.rejected:,} / {drained.late:,}"),
        (
            "CPU (cores)",
            f"after the warm-up worker {worker_cpu:.2f}, broker {broker_cpu:.2f}; producer"
            f" {obs.producer_cpu_seconds / seconds:.2f}; load average mean"
            f" {sum(s.load for s in obs.samples) / len(obs.samples):.2f}, max"
            f" {max(s.load for s in obs.samples):.2f} on {os.cpu_count()} CPUs",
        ),
    ]
    p95 = percentile(delays.first, 0.95) if delays.first else math.inf
    worst = max(delays.first, default=math.inf)
    missing_text = f", {delays.missing} windows missing" if delays.missing else ""
    none_text = "no window closed after the warm-up" + missing_text
    checks = [
        Check(
            f"worker RSS within ±{RSS_BAND:.0%} of its mean",
            rss.samples >= 2 and rss.max_deviation_pct <= RSS_BAND * 100,
            f"{rss.max_deviation_pct:.1f}%"
            if rss.samples >= 2
            else "fewer than 2 samples after the warm-up",
        ),
        Check(
            f"close delay p95 < {delay_limit:g} s",
            p95 < delay_limit and not delays.missing,
            f"{p95:.1f} s{missing_text}" if delays.first else none_text,
        ),
        Check(
            f"close delay max < {delay_limit:g} s",
            worst < delay_limit and not delays.missing,
            f"{worst:.1f} s{missing_text}" if delays.first else none_text,
        ),
        Check(
            f"worker kept up: lag at the end ≤ {args.max_lag:g} s",
            obs.worker_alive and lag_s <= args.max_lag and obs.drain_seconds is not None,
            f"{lag_s:.2f} s" + ("" if obs.worker_alive else ", the worker exited"),
        ),
        Check(
            "no rejected or late events",
            drained.rejected == 0 and drained.late == 0,
            f"{drained.rejected} rejected, {drained.late} late",
        ),
        Check(
            f"producer held ≥ {MIN_RATE_SHARE:.0%} of the rate",
            achieved >= MIN_RATE_SHARE * args.rate,
            f"{achieved / args.rate:.1%}",
        ),
    ]

    def rounded(values: Sequence[float], share: float | None) -> float | None:
        if not values:
            return None
        return round(max(values) if share is None else percentile(values, share), 1)

    summary = {
        "rate_target": args.rate,
        "producer_tick_s": args.tick,
        "rate_achieved": round(achieved),
        "seconds": round(seconds),
        "events": produced,
        "distinct_hashtags_per_hour": round(per_hour),
        "rss_mb_min": round(rss.min_mb, 1),
        "rss_mb_mean": round(rss.mean_mb, 1),
        "rss_mb_max": round(rss.max_mb, 1),
        "rss_max_deviation_pct": round(rss.max_deviation_pct, 1),
        "rss_trend_mb_per_min": round(rss.trend_mb_per_min, 2),
        "close_delay_p50_s": rounded(delays.first, 0.5),
        "close_delay_p95_s": rounded(delays.first, 0.95),
        "close_delay_max_s": rounded(delays.first, None),
        "close_delay_all_partitions_max_s": rounded(delays.complete, None),
        "windows_checked": len(delays.first),
        "windows_missing": delays.missing,
        "lag_end_s": round(lag_s, 2),
        "lag_max_s": round(max_lag_s, 2),
        "rejected": drained.rejected,
        "late": drained.late,
        "worker_cpu": round(worker_cpu, 2),
        "broker_cpu": round(broker_cpu, 2),
        "passed": all(check.passed for check in checks),
    }
    return figures, checks, summary


def print_report(figures: list[tuple[str, str]], checks: list[Check], notes: list[str]) -> None:
    width = max(len(name) for name, _ in figures)
    print()
    for name, value in figures:
        print(f"{name:<{width}}  {value}")
    print()
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name:<{width}}  {check.detail}")
    for note in notes:
        print(f"note: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Exits 1 when a check fails. Quick check: --minutes 2 --warmup 0.5.",
    )
    parser.add_argument("--rate", type=float, default=20_000, help="events/s (default 20000)")
    parser.add_argument(
        "--minutes", type=float, default=10, help="minutes of live events (default 10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_MINUTES,
        help=f"first minutes left out of the checks (default {WARMUP_MINUTES:g})",
    )
    parser.add_argument(
        "--signup-share", type=float, default=0.05, help="share of events that are signups (0.05)"
    )
    parser.add_argument(
        "--tags-per-hour", type=float, default=1e6, help="distinct hashtags an hour (default 1e6)"
    )
    parser.add_argument(
        "--sample-seconds", type=float, default=5, help="seconds between samples (default 5)"
    )
    parser.add_argument(
        "--max-lag", type=float, default=5, help="seconds of input behind at the end (default 5)"
    )
    parser.add_argument("--seed", type=int, default=7, help="of the event generator (default 7)")
    parser.add_argument(
        "--tick",
        type=float,
        default=TICK_SECONDS,
        help=f"seconds between the producer's sends, a record batch per partition each (default"
        f" {TICK_SECONDS:g}); the embedded broker's fetches slow down with every batch it holds",
    )
    args = parser.parse_args()
    if args.rate <= 0 or args.minutes <= 0 or args.sample_seconds <= 0 or args.tick <= 0:
        parser.error("--rate, --minutes, --sample-seconds and --tick must be positive")
    if not 0 <= args.warmup < args.minutes:
        parser.error("--warmup must be at least 0 and less than --minutes")
    if not 0 <= args.signup_share < 1:
        parser.error("--signup-share must be in [0, 1)")
    broker_mb = args.rate * args.minutes * 60 * BROKER_BYTES_PER_EVENT / 2**20
    if broker_mb > 0.8 * available_mb():
        parser.error(
            f"the embedded broker keeps every record in memory: about {broker_mb:,.0f} MB needed,"
            f" {available_mb():,.0f} MB available; lower --rate or --minutes"
        )

    workdir = Path(tempfile.mkdtemp(prefix="surgewatch-soak-"))
    name = f"soak-{uuid.uuid4().hex[:8]}"
    post_rate = args.rate * (1 - args.signup_share)
    # The vocabulary's 50,000 tags all turn up within the hour; the rest are brand new.
    new_tag_rate = max(0.0, args.tags_per_hour - VOCABULARY_SIZE) / 3600
    print(
        f"soak: {args.rate:,.0f} events/s for {args.minutes:g} min (warm-up {args.warmup:g} min),"
        f" {new_tag_rate:,.0f} new hashtags/s; logs in {workdir}",
        file=sys.stderr,
    )
    with EmbeddedBroker("127.0.0.1", free_port(), log_path=workdir / "tansu.log") as broker:
        env = worker_env(
            broker.url,
            name,
            partitions=PARTITIONS,
            window_seconds=WINDOW_SECONDS,
            grace_seconds=GRACE_SECONDS,
        )
        workload = Workload(
            bootstrap=broker.bootstrap,
            posts_topic=env["SURGEWATCH_POSTS_TOPIC"],
            signups_topic=env["SURGEWATCH_SIGNUPS_TOPIC"],
            post_rate=post_rate,
            signup_rate=args.rate - post_rate,
            new_tag_rate=new_tag_rate,
            seconds=args.minutes * 60,
            seed=args.seed,
            run=name.removeprefix("soak-"),
            tick_seconds=args.tick,
        )
        with WorkerProcess(env, free_port(), workdir / "worker.log") as worker:
            counts_topic = env["SURGEWATCH_WINDOW_COUNTS_TOPIC"]
            try:
                obs = asyncio.run(watch(workload, worker, broker.pid or 0, counts_topic, args))
            except RuntimeError as exc:
                print(f"soak: {exc}\nworker log:\n{worker.log_tail()}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                return 130
            if not obs.worker_alive:
                obs.notes.append("worker log:\n" + worker.log_tail())
    figures, checks, summary = judge(obs, args)
    print_report(figures, checks, obs.notes)
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
