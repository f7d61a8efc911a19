"""``surgewatch demo``: broker, worker and a replayed ``rednote-2025`` wave with a live terminal view."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from surgewatch.broker import EmbeddedBroker, free_port, port_in_use
from surgewatch.config import load_settings
from surgewatch.eventfile import EventRecord, write_events
from surgewatch.events.timestamps import parse_ts
from surgewatch.monitoring import (
    AlertmanagerProcess,
    PrometheusProcess,
    WebhookReceiver,
    monitoring_available,
)
from surgewatch.processes import WorkerProcess
from surgewatch.scrape import sample, sample_sum
from surgewatch.simulate.scenarios import DEFAULT_START, simulate, wave_onset
from surgewatch.top import TopState, fetch, merge, sparkline
from surgewatch.top import render as render_top

HOURS_BEFORE_ONSET = 3.0
#: Rows of each table of the ``surgewatch top`` view inside the demo, so both views fit a terminal.
TOP_ROWS = 5


def demo_events(path: Path, scale: float, hours: float) -> int:
    """Write the demo's slice of ``rednote-2025``: from 3 h before the wave for ``hours``."""
    onset = wave_onset(DEFAULT_START)
    first = onset - timedelta(hours=HOURS_BEFORE_ONSET)
    span = (first - DEFAULT_START).total_seconds() / 3600 + hours
    lower = first.timestamp()
    now = datetime.now(UTC).timestamp()

    def in_slice(record: EventRecord) -> bool:
        ts = parse_ts(record.value.get("ts"), now) if isinstance(record.value, dict) else None
        return ts is None or ts >= lower

    records = simulate("rednote-2025", scale=scale, start=DEFAULT_START, hours=span)
    skipped = (r for r in records if in_slice(r))
    return write_events(path, skipped)


def _minute(window_start: int | None) -> str:
    if window_start is None:
        return "-"
    return datetime.fromtimestamp(window_start, UTC).strftime("%Y-%m-%d %H:%M UTC")


class WindowView:
    """The latest closed windows, fed from the window-counts topic."""

    def __init__(self) -> None:
        self.signups: dict[int, dict[str, int]] = defaultdict(dict)
        self.hashtags: dict[int, dict[str, int]] = defaultdict(dict)

    def add(self, record: dict[str, Any]) -> None:
        target = self.signups if record["metric"] == "signups" else self.hashtags
        target[int(record["window_start"])][str(record["key"])] = int(record["count"])

    def render(self, settled: dict[str, float] | None = None) -> Table:
        """The tables, side by side; with ``settled``, only windows starting before each metric's bound.

        Every counting partition closes a window on its own as the watermarks reach it, so the
        newest window is briefly incomplete; ``settled`` holds it back until all have caught up.
        """
        bounds = settled or {}
        last_signups = max(
            (w for w in self.signups if w < bounds.get("signups", math.inf)), default=None
        )
        last_tags = max(
            (w for w in self.hashtags if w < bounds.get("hashtag_posts", math.inf)), default=None
        )
        timeline = sorted(
            w
            for w in set(self.signups) | set(self.hashtags)
            if last_signups is not None and w <= last_signups
        )[-30:]
        signups = Table(title=f"signups per window, latest {_minute(last_signups)}", expand=True)
        signups.add_column("country")
        signups.add_column("latest", justify="right")
        signups.add_column("last 30 windows")
        totals: dict[str, int] = defaultdict(int)
        for window in timeline:
            for country, count in self.signups.get(window, {}).items():
                totals[country] += count
        for country, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:6]:
            history = [self.signups.get(w, {}).get(country, 0) for w in timeline]
            signups.add_row(country, str(history[-1]), sparkline(history))
        tags = Table(title=f"top hashtags, window {_minute(last_tags)}", expand=True)
        tags.add_column("hashtag")
        tags.add_column("posts", justify="right")
        latest_tags = self.hashtags.get(last_tags, {}) if last_tags is not None else {}
        for tag, count in sorted(latest_tags.items(), key=lambda kv: -kv[1])[:8]:
            tags.add_row("#" + tag, str(count))
        outer = Table.grid(expand=True)
        outer.add_row(signups, tags)
        return outer


def frame(
    view: WindowView,
    top: TopState,
    metrics_url: str,
    replay_state: str,
    settled: dict[str, float] | None = None,
) -> Group:
    """One frame of the demo: the closed windows read from the topic, then ``surgewatch top``'s view."""
    footer = f"{replay_state}   metrics: {metrics_url}   Ctrl-C stops everything"
    return Group(view.render(settled), render_top(top, rows=TOP_ROWS), footer)


async def _follow_counts(bootstrap: str, topic: str, view: WindowView, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    view.add(orjson.loads(record.value))
    finally:
        await consumer.stop()


async def _show(
    env: dict[str, str], worker: WorkerProcess, events_file: Path, speed: float, console: Console
) -> None:
    from surgewatch.replay import replay

    settings = load_settings(broker=env["SURGEWATCH_BROKER"])
    view = WindowView()
    stop = asyncio.Event()
    follower = asyncio.ensure_future(
        _follow_counts(settings.bootstrap_servers, settings.window_counts_topic, view, stop)
    )
    replaying = asyncio.ensure_future(
        replay([str(events_file)], settings, speed=speed, progress=False)
    )
    samples: dict[Any, float] = {}
    top = TopState()
    url = worker.metrics_url

    async def poll() -> None:
        nonlocal samples
        answer = await asyncio.to_thread(fetch, url, 2.0)
        if answer.samples is not None:
            samples = dict(answer.samples)
        top.update(merge([answer]), time.time())

    span = settings.window_seconds + settings.grace_seconds
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while not replaying.done():
            # Windows the watermark had passed a refresh ago have closed on every partition.
            settled = {
                metric: sample(samples, "surgewatch_watermark_seconds", stream=stream) - span
                for metric, stream in (("signups", "signups"), ("hashtag_posts", "posts"))
            }
            await poll()
            live.update(frame(view, top, url, f"replaying at {speed:g}x", settled))
            await asyncio.sleep(1.0)
        stats = replaying.result()
        # The last windows close once event time has passed them: with the stream quiet, that is
        # up to window + grace seconds of wall time after the replay.
        deadline = (
            asyncio.get_running_loop().time()
            + settings.window_seconds
            + 3 * settings.grace_seconds
            + 15
        )
        state = f"replay done: {stats.events:,} events; closing the last windows"
        while asyncio.get_running_loop().time() < deadline:
            await poll()
            live.update(frame(view, top, url, state))
            if sample_sum(samples, "surgewatch_open_windows") == 0:
                break
            await asyncio.sleep(1.0)
        live.update(frame(view, top, url, f"replay done: {stats.events:,} events"))
    console.print()
    stop.set()
    await follower


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start_monitoring(
    stack: contextlib.ExitStack, worker: WorkerProcess, workdir: Path, console: Console
) -> WebhookReceiver | None:
    """Prometheus (with the project's rules) and Alertmanager, when installed; their URLs."""
    if not monitoring_available():
        console.print("Prometheus/Alertmanager not installed (make setup): no alerts in this run")
        return None
    webhook = stack.enter_context(WebhookReceiver())
    alertmanager = stack.enter_context(AlertmanagerProcess(workdir / "alertmanager", webhook.url))
    prometheus = stack.enter_context(
        PrometheusProcess(
            workdir / "prometheus", [f"127.0.0.1:{worker.web_port}"], alertmanager.url
        )
    )
    console.print(
        f"prometheus: {prometheus.url}/classic/alerts (SignupSurge fires a minute after the wave)"
    )
    console.print(f"            {prometheus.url}/classic/graph?g0.expr=surgewatch_signups_window")
    console.print(f"alertmanager: {alertmanager.url}/#/alerts; notifications to {webhook.url}")
    return webhook


def _print_alerts(webhook: WebhookReceiver, console: Console) -> None:
    """The alerts Alertmanager delivered during the run, first notification of each."""
    seen: set[tuple[str, str, str]] = set()
    for alert in webhook.alerts():
        labels = alert.get("labels", {})
        key = (
            str(labels.get("alertname")),
            str(labels.get("country") or labels.get("hashtag") or ""),
            str(alert.get("status")),
        )
        if key in seen:
            continue
        seen.add(key)
        console.print(f"alert {key[2]}: {key[0]} {key[1]} ({labels.get('severity', '')})".rstrip())
    if not seen:
        console.print("no alert reached the webhook")


def run_demo(scale: float, speed: float, hours: float, port: int, workdir: Path) -> int:
    """Run the demo to the end of the replay or Ctrl-C; stops everything it started."""
    # SIGTERM and a closed terminal stop the demo as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    console = Console()
    workdir.mkdir(parents=True, exist_ok=True)
    events_file = workdir / f"rednote-2025-scale{scale:g}-{hours:g}h.jsonl.gz"
    if not events_file.exists():
        console.print(f"simulating the rednote-2025 wave (scale {scale:g}) into {events_file} ...")
        count = demo_events(events_file, scale, hours)
        console.print(f"{count:,} events")
    if port_in_use("127.0.0.1", port):
        port = free_port()
        console.print(f"port 9092 is taken: the broker uses {port}")
    env = {"SURGEWATCH_BROKER": f"kafka://127.0.0.1:{port}"}
    web_port = int(os.environ.get("SURGEWATCH_WEB_PORT", "6066"))
    if port_in_use("127.0.0.1", web_port):
        web_port = free_port()
    try:
        with EmbeddedBroker("127.0.0.1", port, log_path=workdir / "broker.log") as broker:
            console.print(f"broker: {broker.url} (embedded tansu, memory storage)")
            worker = WorkerProcess(env, web_port, workdir / "worker.log")
            with contextlib.ExitStack() as monitoring:
                try:
                    worker.start()
                    console.print(
                        f"worker: metrics at {worker.metrics_url}, log in {workdir / 'worker.log'}"
                    )
                    webhook = _start_monitoring(monitoring, worker, workdir, console)
                    asyncio.run(_show(env, worker, events_file, speed, console))
                    if webhook is not None:
                        _print_alerts(webhook, console)
                finally:
                    monitoring.close()
                    worker.stop()
    except KeyboardInterrupt:
        console.print("interrupted")
    console.print("stopped the worker and the broker (and Prometheus and Alertmanager)")
    return 0
