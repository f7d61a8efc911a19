"""Scale-out on the real broker: one, two and three workers of one app count the same events exactly.

Each run has its own app id and topics. Its workers start first, and the test waits until the group
is stable and every worker owns input partitions; then the event file is replayed at full speed. The
union of the window-count records must equal the truth that ``group_run`` computes from the events
(every (metric, key, window) once, with its exact count), so the 2- and 3-worker results equal the
1-worker one. Each worker must have read events of both streams: the split is real.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import load_settings
from surgewatch.processes import wait_for
from surgewatch.replay import replay
from tests.integration.group_run import (
    GroupWorker,
    Workload,
    compare,
    group_env,
    make_workload,
    read_window_records,
    received_total,
    stop_all,
    wait_for_stable_group,
)

pytestmark = pytest.mark.integration

EVENTS = 50_000


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    path = tmp_path_factory.mktemp("scale-out") / "events.jsonl"
    made = make_workload(path, seed=11, events=EVENTS, minutes=30, tags=400)
    # What the test claims to cover: enough keys and windows for every worker to own many.
    assert made.windows == 30
    assert made.countries == 21  # twenty codes and unknown
    assert made.hashtags > 300
    return made


def run_group(
    broker: EmbeddedBroker, env: dict[str, str], workload: Workload, workers: int, logs: Path
) -> dict[str, int]:
    """Start ``workers`` workers, wait for a stable group, replay, check and return the counts."""
    group = [
        GroupWorker(env, free_port(), logs / f"w{i}.log", logs / f"w{i}", f"w{i}")
        for i in range(workers)
    ]
    try:
        for worker in group:
            worker.start()
        owned = wait_for_stable_group(broker.bootstrap, env, group, timeout_seconds=60)

        settings = load_settings(
            **{k.removeprefix("SURGEWATCH_").lower(): v for k, v in env.items()}
        )
        stats = asyncio.run(replay([str(workload.path)], settings, speed=None, progress=False))
        assert stats.events == workload.events
        assert stats.by_stream == workload.by_stream

        wait_for(
            lambda: received_total(group) >= workload.events,
            60,
            what=f"{workload.events} events received by {workers} worker(s)",
        )
        read = read_window_records(
            broker.bootstrap,
            env["SURGEWATCH_WINDOW_COUNTS_TOPIC"],
            set(workload.truth),
            quiet_seconds=2,
            give_up_quiet_seconds=20,
            timeout_seconds=90,
        )
        received = {w.name: (w.received("posts"), w.received("signups")) for w in group}
        late = {w.name: w.late() for w in group}
    finally:
        stop_all(group)

    # Every event read once, by the worker that owns its partition, and none judged late (the
    # events of each partition are in time order).
    assert sum(p + s for p, s in received.values()) == workload.events, received
    for name, (posts, signups) in received.items():
        assert posts > 0 and signups > 0, f"{name} read no events of a stream: {received}"
    assert sum(late.values()) == 0, late

    result = compare(workload.truth, read)
    assert result.ok() and result.identical_reemissions == 0, (
        f"{workers} worker(s), posts partitions {owned}:\n{result.describe()}"
    )
    assert len(read.records) == len(workload.truth)
    return {key: values[0]["count"] for key, values in read.by_key().items()}


def test_one_two_and_three_workers_publish_the_same_exact_counts(
    broker: EmbeddedBroker,
    isolated_env: Callable[[str], dict[str, str]],
    workload: Workload,
    tmp_path: Path,
) -> None:
    results = {}
    for workers in (1, 2, 3):
        logs = tmp_path / f"{workers}-workers"
        logs.mkdir()
        env = group_env(isolated_env(f"sw-scale{workers}"))
        results[workers] = run_group(broker, env, workload, workers, logs)
    assert results[1] == workload.truth
    assert results[2] == results[1]
    assert results[3] == results[1]


def test_worker_help_says_how_partitions_bound_the_workers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "surgewatch", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(result.stdout.split())
    for phrase in (
        "same SURGEWATCH_APP_ID",
        "its own --web-port",
        "{app_id}-window-partials topic have SURGEWATCH_PARTITIONS partitions",
        "workers beyond that number get none and sit idle",
        "{app_id}-trend-summaries topic has 1 partition: one worker merges",
    ):
        assert phrase in text, phrase
