"""Trends on the real broker: a simulated wave rises and falls, and the surges topic and the trend
series on ``/metrics`` follow it.

The wave is the simulator's ``rednote-2025`` shortened to fit a test: an hour of ordinary traffic,
then an hour-long wave of US signups and #tiktokrefugee posts, then an hour of ordinary traffic.
It is replayed at 600x, so each minute-long window takes a tenth of a second.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import load_settings
from surgewatch.eventfile import write_events
from surgewatch.offline import compute
from surgewatch.processes import WorkerProcess
from surgewatch.replay import replay
from surgewatch.scrape import scrape
from surgewatch.simulate.engine import generate
from surgewatch.simulate.scenarios import DEFAULT_START, get_scenario
from surgewatch.testing import read_topic_sync, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4
TOP_K = 5
SPEED = 600.0
WINDOW = 60
ONSET_HOURS = 1.0
PLATEAU_HOURS = 1.0
HOURS = 3.0
SCALE = 0.1


def short_wave() -> list:  # type: ignore[type-arg]
    base = get_scenario("rednote-2025")
    assert base.wave is not None
    wave = replace(
        base.wave,
        onset_offset_hours=ONSET_HOURS,
        plateau_hours=PLATEAU_HOURS,
        decay_hours=0.05,
        posts_decay_hours=0.05,
        counted_hours=PLATEAU_HOURS,
        signups=30_000.0,
    )
    scenario = replace(base, wave=wave, background_tags=(), background_tag_share=0.0)
    return list(generate(scenario, seed=7, scale=SCALE, start=DEFAULT_START, hours=HOURS))


@dataclass
class Seen:
    """What the trend series showed over the run, window by window."""

    us_surging: set[int] = field(default_factory=set)
    tag_surging: set[int] = field(default_factory=set)
    tag_top: set[int] = field(default_factory=set)
    windows: set[int] = field(default_factory=set)
    most_top_series: int = 0


def watch(url: str, seen: Seen, done: Callable[[], bool]) -> None:
    def step() -> bool:
        samples = scrape(url)
        window = samples.get(("surgewatch_trend_window_start_seconds", frozenset()))
        if window is not None:
            at = int(window)
            seen.windows.add(at)
            names = [name for name, _ in samples]
            seen.most_top_series = max(
                seen.most_top_series, names.count("surgewatch_top_hashtag_posts")
            )
            labels_us = frozenset({("country", "US")})
            if samples.get(("surgewatch_signup_surging", labels_us)) == 1.0:
                seen.us_surging.add(at)
            tag = frozenset({("hashtag", "tiktokrefugee")})
            if ("surgewatch_hashtag_surge_score", tag) in samples:
                seen.tag_surging.add(at)
            if ("surgewatch_top_hashtag_posts", tag) in samples:
                seen.tag_top.add(at)
        return done()

    wait_for(step, 240, interval_seconds=0.05, what="the replay to finish")


def test_surges_and_trend_series_rise_and_fall_with_the_wave(
    broker: EmbeddedBroker, isolated_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    env = {
        **isolated_env("sw-trends"),
        "SURGEWATCH_PARTITIONS": str(PARTITIONS),
        "SURGEWATCH_TOP_K": str(TOP_K),
    }
    settings = load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})
    records = short_wave()
    path = tmp_path / "wave.jsonl"
    write_events(path, records)
    onset = int((DEFAULT_START + timedelta(hours=ONSET_HOURS)).timestamp())
    wave_end = onset + int(PLATEAU_HOURS * 3600)
    last_window = int((DEFAULT_START + timedelta(hours=HOURS)).timestamp()) - WINDOW

    seen = Seen()
    with WorkerProcess(env, free_port(), tmp_path / "worker.log") as worker:
        replayed = threading.Event()

        def run_replay() -> None:
            try:
                asyncio.run(replay([str(path)], settings, speed=SPEED, progress=False))
            finally:
                replayed.set()

        thread = threading.Thread(target=run_replay, daemon=True)
        thread.start()
        # Done once the replay is over and the trend view has reached the stream's last minutes.
        watch(
            worker.metrics_url,
            seen,
            lambda: replayed.is_set() and max(seen.windows, default=0) >= last_window - 5 * WINDOW,
        )
        thread.join(10)

        surges = read_topic_sync(
            broker.bootstrap,
            env["SURGEWATCH_SURGES_TOPIC"],
            lambda got: len(got) >= 6,
            timeout_seconds=60,
        )

    # The surges topic: the offline computation of the same events with the same settings gives
    # exactly the same records (any partitioning, any speed).
    def order(value: dict) -> tuple:  # type: ignore[type-arg]
        return (value["window_start"], value["metric"], value["key"], value["state"])

    got = sorted((orjson.loads(r.value) for r in surges), key=order)
    expected = sorted((s.as_dict() for s in compute(records, settings).surges), key=order)
    assert got == expected, (got, expected)
    by_key: dict[tuple[str, str], list[dict]] = {}  # type: ignore[type-arg]
    for value in sorted(got, key=lambda v: v["window_start"]):
        by_key.setdefault((value["metric"], value["key"]), []).append(value)
    for key in (("signups", "US"), ("signups", "*"), ("hashtag_posts", "tiktokrefugee")):
        states = [(v["state"], v["window_start"]) for v in by_key[key]]
        assert [s for s, _ in states] == ["start", "end"], (key, states)
        started, ended = states[0][1], states[1][1]
        assert onset <= started <= onset + 3 * WINDOW, (key, started - onset)
        assert wave_end <= ended <= wave_end + 15 * WINDOW, (key, ended - wave_end)
        start_record = by_key[key][0]
        assert start_record["count"] > start_record["baseline"] and start_record["score"] >= 6.0

    # /metrics followed the wave: the series appeared during it and were gone after it.
    assert seen.us_surging and seen.tag_surging and seen.tag_top
    assert min(seen.us_surging) >= onset and max(seen.us_surging) < wave_end + 15 * WINDOW
    assert min(seen.tag_surging) >= onset and max(seen.tag_surging) < wave_end + 15 * WINDOW
    after = [w for w in seen.windows if w > wave_end + 20 * WINDOW]
    assert after, "no window after the wave was observed"
    assert not any(w in seen.tag_top for w in after)
    assert 0 < seen.most_top_series <= TOP_K
