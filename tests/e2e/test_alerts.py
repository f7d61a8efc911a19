"""Alerts and dashboards against the real binaries: broker, two workers, Prometheus 2.42 with the
project's rules, Alertmanager with the project's routing, and a webhook receiver, all on loopback.

One worker counts a shortened ``rednote-2025`` wave, the other the ``baseline`` scenario over the
same hours, replayed side by side. ``SignupSurge`` must reach the webhook for the wave's worker with
the right labels, and never fire for the baseline's; every panel query of both dashboards must
return data from that Prometheus while the wave is on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import load_settings
from surgewatch.eventfile import EventRecord, write_events
from surgewatch.monitoring import (
    AlertmanagerProcess,
    PrometheusProcess,
    WebhookReceiver,
    monitoring_available,
)
from surgewatch.processes import WorkerProcess
from surgewatch.replay import replay
from surgewatch.simulate.engine import generate
from surgewatch.simulate.scenarios import DEFAULT_START, get_scenario
from surgewatch.testing import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not monitoring_available(), reason="Prometheus/Alertmanager not installed: make setup"
    ),
]

ONSET_HOURS = 1.0
HOURS = 2.5
SCALE = 0.1
#: Event time plays 30 times faster than wall time once the wave begins: a minute in 2 s.
SPEED = 30.0


def events(name: str) -> list[EventRecord]:
    base = get_scenario(name)
    if base.wave is not None:
        wave = replace(
            base.wave,
            onset_offset_hours=ONSET_HOURS,
            plateau_hours=HOURS,
            counted_hours=HOURS - ONSET_HOURS,
            signups=30_000.0,
        )
        base = replace(base, wave=wave, background_tags=(), background_tag_share=0.0)
    return list(generate(base, seed=11, scale=SCALE, start=DEFAULT_START, hours=HOURS))


def split(
    records: list[EventRecord], at_seconds: float
) -> tuple[list[EventRecord], list[EventRecord]]:
    """Records before and after ``at_seconds`` (the files are in event-time order)."""
    from surgewatch.events.timestamps import parse_ts

    for index, record in enumerate(records):
        value = record.value
        if isinstance(value, dict) and (parse_ts(value.get("ts"), 4e9) or 0) >= at_seconds:
            return records[:index], records[index:]
    return records, []


@pytest.fixture
def stack(
    broker: EmbeddedBroker, isolated_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    wave_env = isolated_env("sw-wave")
    quiet_env = isolated_env("sw-quiet")
    with (
        WebhookReceiver() as webhook,
        AlertmanagerProcess(tmp_path / "am", webhook.url) as alertmanager,
        WorkerProcess(wave_env, free_port(), tmp_path / "wave.log") as wave_worker,
        WorkerProcess(quiet_env, free_port(), tmp_path / "quiet.log") as quiet_worker,
        PrometheusProcess(
            tmp_path / "prom",
            [f"127.0.0.1:{wave_worker.web_port}", f"127.0.0.1:{quiet_worker.web_port}"],
            alertmanager.url,
        ) as prometheus,
    ):
        wait_for(lambda: prometheus.targets_up() == 2, 60, what="both workers scraped")
        yield {
            "webhook": webhook,
            "prometheus": prometheus,
            "wave": (wave_env, wave_worker),
            "quiet": (quiet_env, quiet_worker),
            "tmp": tmp_path,
        }


def replay_file(env: dict[str, str], path: Path, speed: float | None) -> None:
    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    asyncio.run(replay([str(path)], settings, speed=speed, progress=False))


def test_signup_surge_pages_for_the_wave_and_not_for_the_baseline(stack: dict[str, Any]) -> None:
    tmp: Path = stack["tmp"]
    onset = (DEFAULT_START + timedelta(hours=ONSET_HOURS)).timestamp()
    runs = {}
    for name, role in (("rednote-2025", "wave"), ("baseline", "quiet")):
        before, after = split(events(name), onset - 120)
        env, worker = stack[role]
        history, live = tmp / f"{role}-history.jsonl", tmp / f"{role}-live.jsonl"
        write_events(history, before)
        write_events(live, after)
        runs[role] = (env, worker, history, live)

    # The hour before the wave as fast as possible (the baselines), then both paced side by side.
    for env, _, history, _ in runs.values():
        replay_file(env, history, None)
    threads = [
        threading.Thread(target=replay_file, args=(env, live, SPEED), daemon=True)
        for env, _, _, live in runs.values()
    ]
    for thread in threads:
        thread.start()

    webhook: WebhookReceiver = stack["webhook"]
    prometheus: PrometheusProcess = stack["prometheus"]
    wave_instance = f"127.0.0.1:{runs['wave'][1].web_port}"
    quiet_instance = f"127.0.0.1:{runs['quiet'][1].web_port}"

    def us_surge_paged() -> dict[str, Any] | None:
        for alert in webhook.alerts():
            labels = alert["labels"]
            if labels.get("alertname") == "SignupSurge" and labels.get("country") == "US":
                return alert
        return None

    alert = wait_for(us_surge_paged, 240, interval_seconds=0.5, what="SignupSurge at the webhook")
    assert alert["status"] == "firing"
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["instance"] == wave_instance
    assert alert["labels"]["job"] == "surgewatch"
    annotations = alert["annotations"]
    for name in ("summary", "description", "runbook_url", "dashboard_url"):
        assert annotations.get(name), name
    assert "US" in annotations["summary"] + annotations["description"]
    assert "surgewatch-overview" in annotations["dashboard_url"]

    # The baseline ran side by side for longer than any alert's `for:` and never surged.
    never = prometheus.query(
        f'max_over_time(surgewatch_signup_surging{{instance="{quiet_instance}"}}[1h])'
    )
    assert never == []
    assert prometheus.query(f'ALERTS{{instance="{quiet_instance}"}}') == []
    assert not [a for a in webhook.alerts() if a["labels"].get("instance") == quiet_instance]
    # The wave's own series are there, scraped from the worker that owns the trend view.
    surging = prometheus.query(f'surgewatch_signup_surging{{instance="{wave_instance}"}}')
    assert {r["metric"]["country"] for r in surging} >= {"US"}

    check_dashboard_queries(prometheus)


def check_dashboard_queries(prometheus: PrometheusProcess) -> None:
    """Every panel query of both dashboards returns data from this Prometheus."""
    from surgewatch.dashboards import DASHBOARDS, panel_queries
    from surgewatch.dashboards.build import default_dashboards_dir

    empty = []
    checked = 0
    for name in DASHBOARDS:
        for title, expr in panel_queries(default_dashboards_dir() / name, rate_interval="1m"):
            checked += 1
            if not prometheus.query(expr):
                empty.append(f"{name}: {title}: {expr}")
    assert checked >= 20
    assert empty == [], "\n".join(empty)
