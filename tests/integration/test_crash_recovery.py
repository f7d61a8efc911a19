"""Crash recovery on the real broker: a worker killed with SIGKILL mid-replay loses no count.

Two workers of one app split the partitions; a paced replay of 200k events runs for about 20 s.
Once worker B has read about 30 % of its share, B gets SIGKILL (the worker process itself: no
clean shutdown, no last commit). In the takeover case the survivor A must take over B's partitions;
in the restart case B comes back at once on the same app id and data directory (RocksDB store).
When the window-count topic has stopped growing, every (metric, key, window) of the truth computed
from the events must be there with its exact count, and a key may be published again only with
the same value (identical re-emissions are counted and reported, two different values fail).

Run alone with ``pytest tests/integration/test_crash_recovery.py`` (or ``-k crash``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.processes import spawn, terminate, wait_for
from surgewatch.scrape import sample, sample_sum, scrape
from tests.integration.group_run import (
    GRACE_SECONDS,
    WINDOW_SECONDS,
    GroupWorker,
    WindowRecords,
    Workload,
    compare,
    group_env,
    make_workload,
    read_window_records,
    stop_all,
    wait_for_stable_group,
    watermarks_past,
)

pytestmark = pytest.mark.integration

EVENTS = 200_000
MINUTES = 60
#: One hour of event time in about 20 s of wall time.
SPEED = 180.0
#: B is killed once it has read this share of its half of the events.
KILL_AFTER_SHARE = 0.3


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    path = tmp_path_factory.mktemp("crash") / "events.jsonl"
    made = make_workload(path, seed=23, events=EVENTS, minutes=MINUTES, tags=400)
    assert made.windows == MINUTES
    return made


@dataclass
class Outcome:
    """What a crash run observed, for the assertions and the failure message."""

    killed_at_received: float
    survivors: dict[str, dict[str, float]]
    read: WindowRecords


@pytest.fixture
def workers() -> Iterator[list[GroupWorker]]:
    """Every worker a test starts; all stopped at the end, whatever happened."""
    started: list[GroupWorker] = []
    yield started
    stop_all(started)


def _metrics_of(worker: GroupWorker) -> dict[str, float]:
    samples = scrape(worker.metrics_url)
    return {
        "received": sample_sum(samples, "surgewatch_events_received_total"),
        "late": sample_sum(samples, "surgewatch_events_late_total"),
        "reread_skipped": sample_sum(samples, "surgewatch_events_reread_skipped_total"),
        "updates_dropped": sample_sum(samples, "surgewatch_window_updates_dropped_total"),
        "window_records": sample_sum(samples, "surgewatch_window_records_total"),
        "posts_watermark": sample(samples, "surgewatch_watermark_seconds", stream="posts"),
        "snapshot_restores": sample_sum(samples, "surgewatch_partition_restores_total"),
        # rocksdb:// only: detectors that came back from local state, and those that could not.
        **{
            f"surge_state_{outcome}": sample_sum(
                samples, "surgewatch_surge_state_restores_total", outcome=outcome
            )
            for outcome in ("restored", "none", "stale", "unreadable")
        },
    }


def crash_run(
    broker: EmbeddedBroker,
    env: dict[str, str],
    workload: Workload,
    workers: list[GroupWorker],
    logs: Path,
    restart: bool,
) -> Outcome:
    """Two workers, a paced replay, SIGKILL of B at ~30 % of its share, takeover or restart."""

    def worker(name: str, data_dir: str) -> GroupWorker:
        made = GroupWorker(env, free_port(), logs / f"{name}.log", logs / data_dir, name)
        workers.append(made)
        return made

    a, b = worker("a", "a"), worker("b", "b")
    a.start()
    b.start()
    wait_for_stable_group(broker.bootstrap, env, [a, b], timeout_seconds=60)

    replay = spawn(
        [sys.executable, "-m", "surgewatch", "replay", str(workload.path), "--speed", str(SPEED)],
        logs / "replay.log",
        {**a.env},
    )
    try:
        threshold = KILL_AFTER_SHARE * workload.events / 2

        def b_has_read_enough() -> float | None:
            got = b.received()
            return got if got >= threshold else None

        seen: float = wait_for(
            b_has_read_enough,
            60,
            interval_seconds=0.1,
            what=f"worker b to read {threshold:.0f} events",
        )
        # Some but not all: the replay is still producing, B has read well under its half.
        assert replay.poll() is None, "the replay ended before b was killed: not mid-replay"
        assert seen < workload.events / 2
        b.kill()
        survivors = [a]
        if restart:
            again = worker("b-restarted", "b")  # b's data directory: its RocksDB state, if any
            again.start()
            survivors.append(again)
        # The survivors own every partition between them (b's old membership has expired).
        wait_for_stable_group(broker.bootstrap, env, survivors, timeout_seconds=60)
        replay.wait(120)
        assert replay.returncode == 0, (logs / "replay.log").read_text()
    finally:
        terminate(replay, 5)

    # Everything read and the watermarks past the last window's end + grace on every survivor.
    last_close = (workload.last_event_seconds // WINDOW_SECONDS + 1) * WINDOW_SECONDS
    wait_for(
        lambda: all(watermarks_past(w, last_close + GRACE_SECONDS) for w in survivors),
        120,
        what="the survivors' watermarks past the last window",
    )
    read = read_window_records(
        broker.bootstrap,
        env["SURGEWATCH_WINDOW_COUNTS_TOPIC"],
        set(workload.truth),
        quiet_seconds=5,
        give_up_quiet_seconds=15,
        timeout_seconds=120,
    )
    return Outcome(seen, {w.name: _metrics_of(w) for w in survivors}, read)


def _check(workload: Workload, outcome: Outcome) -> None:
    read = outcome.read
    result = compare(workload.truth, read)
    report = (
        f"b killed after reading {outcome.killed_at_received:.0f} events; the survivors' metrics: "
        f"{outcome.survivors}\n{len(read.records)} records read in {read.seconds:.0f} s for "
        f"{len(workload.truth)} expected keys ({'all' if read.complete else 'not all'} present)\n"
        + result.describe()
    )
    print(report)
    assert result.ok(), report


def test_crash_survivor_takes_over_and_counts_stay_exact(
    broker: EmbeddedBroker,
    isolated_env: Callable[[str], dict[str, str]],
    workload: Workload,
    workers: list[GroupWorker],
    tmp_path: Path,
) -> None:
    env = group_env(isolated_env("sw-crash"))
    outcome = crash_run(broker, env, workload, workers, tmp_path, restart=False)
    _check(workload, outcome)


def test_crash_and_restart_with_rocksdb_keeps_counts_exact(
    broker: EmbeddedBroker,
    isolated_env: Callable[[str], dict[str, str]],
    workload: Workload,
    workers: list[GroupWorker],
    tmp_path: Path,
) -> None:
    env = {**group_env(isolated_env("sw-restart")), "SURGEWATCH_STORE": "rocksdb://"}
    outcome = crash_run(broker, env, workload, workers, tmp_path, restart=True)
    _check(workload, outcome)
