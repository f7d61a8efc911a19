"""Replay determinism on the real broker: live run -> archive -> replay into a second app id.

The first app counts a simulated wave as it is produced; `archive` writes its input topics back to
an event file; the file is replayed into a second app's topics. Both apps must publish the same
window-count records (every metric, key, window and count) and the same surges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from surgewatch.archive import archive
from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import Settings, load_settings
from surgewatch.eventfile import EventReader, write_events
from surgewatch.offline import compute
from surgewatch.processes import WorkerProcess
from surgewatch.replay import replay
from surgewatch.simulate.engine import generate
from surgewatch.simulate.scenarios import DEFAULT_START, get_scenario
from surgewatch.testing import read_topic_sync

pytestmark = pytest.mark.integration

HOURS = 2.0


def wave() -> list[Any]:
    base = get_scenario("rednote-2025")
    assert base.wave is not None
    short = replace(
        base.wave, onset_offset_hours=1.0, plateau_hours=0.5, decay_hours=0.1, counted_hours=1.0,
        posts_decay_hours=0.1, signups=20_000.0,
    )  # fmt: skip
    scenario = replace(base, wave=short)
    return list(generate(scenario, seed=5, scale=0.05, start=DEFAULT_START, hours=HOURS))


def settings_of(env: dict[str, str]) -> Settings:
    return load_settings(**{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()})


def run_app(
    broker: EmbeddedBroker, env: dict[str, str], path: Path, windows: int, surges: int, log: Path
) -> tuple[dict[str, Any], list[Any]]:
    """Replay ``path`` into the app's topics; its window-count records and surges once all came."""
    settings = settings_of(env)
    with WorkerProcess(env, free_port(), log):
        asyncio.run(replay([str(path)], settings, speed=None, progress=False))
        counts = read_topic_sync(
            broker.bootstrap, settings.window_counts_topic, lambda got: len(got) >= windows, 120
        )
        found = read_topic_sync(
            broker.bootstrap, settings.surges_topic, lambda got: len(got) >= surges, 60
        )
    by_key = {r.key.decode(): orjson.loads(r.value) for r in counts}
    assert len(by_key) == len(counts), "a window was published twice"
    return by_key, sorted((orjson.loads(r.value) for r in found), key=orjson.dumps)


def test_live_archive_replay_gives_the_same_windows_and_surges(
    broker: EmbeddedBroker, isolated_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    records = wave()
    source = tmp_path / "source.jsonl"
    write_events(source, records)
    live_env, replay_env = isolated_env("sw-live"), isolated_env("sw-again")
    expected = compute(records, settings_of(live_env))
    windows, surges = len(expected.window_counts), len(expected.surges)
    assert surges >= 4  # the wave is a surge: US, all signups, its hashtags (start and end)

    live = run_app(broker, live_env, source, windows, surges, tmp_path / "live.log")

    archived = tmp_path / "archived.jsonl.gz"
    since, until = DEFAULT_START, DEFAULT_START + timedelta(hours=HOURS)
    stats = asyncio.run(archive(settings_of(live_env), since, until, archived))
    with EventReader(str(archived)) as reader:
        assert sum(1 for _ in reader) == len(records) == stats.events

    again = run_app(broker, replay_env, archived, windows, surges, tmp_path / "again.log")

    assert live[0] == again[0]
    assert len(live[0]) == windows
    assert live[1] == again[1]
    assert len(live[1]) == surges
