"""Broker faults on the real embedded broker: late, never there, gone mid-run, restarted empty.

Each test runs its own broker on a free port, since it starts it late, stops it or restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.processes import WorkerProcess, spawn, terminate
from surgewatch.scrape import sample, sample_sum, scrape
from surgewatch.testing import read_topic_sync, wait_for

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 10
GRACE_SECONDS = 3
T0 = 1_737_000_000  # a window start: a multiple of WINDOW_SECONDS
POSTS = 40
#: Beyond the wait: the watch's probe timeout and interval, and the stop grace it allows Faust.
STOP_MARGIN_SECONDS = 20.0


@pytest.fixture
def make_env(unique_name: Callable[[str], str]) -> Callable[[int, float], dict[str, str]]:
    """Factory of ``SURGEWATCH_*`` environments for a broker on ``port``, with unique names."""

    def make(port: int, wait_seconds: float) -> dict[str, str]:
        return {
            "SURGEWATCH_BROKER": f"kafka://127.0.0.1:{port}",
            "SURGEWATCH_BROKER_WAIT_SECONDS": f"{wait_seconds:g}",
            "SURGEWATCH_APP_ID": unique_name("sw-faults"),
            "SURGEWATCH_POSTS_TOPIC": unique_name("posts"),
            "SURGEWATCH_SIGNUPS_TOPIC": unique_name("signups"),
            "SURGEWATCH_DLQ_TOPIC": unique_name("dlq"),
            "SURGEWATCH_WINDOW_COUNTS_TOPIC": unique_name("window-counts"),
            "SURGEWATCH_SURGES_TOPIC": unique_name("surges"),
            "SURGEWATCH_WINDOW_SECONDS": str(WINDOW_SECONDS),
            "SURGEWATCH_GRACE_SECONDS": str(GRACE_SECONDS),
        }

    return make


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Callable[..., EmbeddedBroker]]:
    """Factory of brokers (not started) that are stopped after the test."""
    made: list[EmbeddedBroker] = []

    def make(port: int | None = None, cluster_id: str | None = None) -> EmbeddedBroker:
        broker = EmbeddedBroker(
            "127.0.0.1", port or free_port(), tmp_path / f"tansu-{len(made)}.log", cluster_id
        )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


async def _produce_posts(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(POSTS):
            body = {"event_id": f"p-{i}", "user_id": f"u-{i}", "ts": T0 + i * 0.05,
                    "hashtags": ["TikTokRefugee"]}  # fmt: skip
            futures.append(await producer.send(topic, orjson.dumps(body), partition=i % 4))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _received(metrics_url: str) -> float:
    return sample_sum(scrape(metrics_url, timeout_seconds=2.0), "surgewatch_events_received_total")


def _log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def _message(line: str) -> str:
    """A log line without Faust's ``[time] [pid] [LEVEL]:`` prefix."""
    return line.split("]: ", 1)[-1].split("] ", 3)[-1].strip()


def _wait_exit(process: subprocess.Popen[bytes], timeout_seconds: float) -> float:
    """Seconds until ``process`` exits; fails the test at the deadline."""
    started = time.monotonic()
    wait_for(lambda: process.poll() is not None, timeout_seconds, what="the worker to exit")
    return time.monotonic() - started


def test_a_worker_started_before_the_broker_waits_then_counts(
    make_env: Callable[[int, float], dict[str, str]],
    own_broker: Callable[..., EmbeddedBroker],
    tmp_path: Path,
) -> None:
    broker = own_broker()
    env = make_env(broker.port, 60)
    web_port = free_port()
    log_path = tmp_path / "worker.log"
    process = spawn(
        [sys.executable, "-m", "surgewatch", "worker", "--loglevel", "warn"],
        log_path,
        {**os.environ, **env, "SURGEWATCH_WEB_PORT": str(web_port)},
    )
    try:
        waiting = f"waiting for the broker at 127.0.0.1:{broker.port} (up to 60 s) ..."
        wait_for(
            lambda: waiting in map(_message, _log_lines(log_path)),
            30,
            what="the waiting line",
        )
        assert process.poll() is None, "\n".join(_log_lines(log_path))

        broker.start()
        connected = (
            f"connected to the broker at 127.0.0.1:{broker.port} (cluster id {broker.cluster_id})"
        )
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        wait_for(lambda: _received(metrics_url) == 0, 60, what="the worker's /metrics")
        messages = [_message(line) for line in _log_lines(log_path)]
        assert messages.count(waiting) == 1
        assert messages.count(connected) == 1
        assert messages.index(waiting) < messages.index(connected)

        asyncio.run(_produce_posts(broker.bootstrap, env["SURGEWATCH_POSTS_TOPIC"]))
        wait_for(lambda: _received(metrics_url) == POSTS, 60, what="every post in /metrics")
        assert sample(scrape(metrics_url), "surgewatch_posts_total") == POSTS
        records = read_topic_sync(
            broker.bootstrap, env["SURGEWATCH_WINDOW_COUNTS_TOPIC"], lambda got: len(got) >= 1, 60
        )
        assert [(r.key.decode(), orjson.loads(r.value)["count"]) for r in records] == [
            (f"hashtag_posts|tiktokrefugee|{T0}", POSTS)
        ]
    finally:
        terminate(process, 20)


def test_a_broker_that_never_appears_stops_the_worker_in_one_line(
    make_env: Callable[[int, float], dict[str, str]],
) -> None:
    port = free_port()
    wait_seconds = 3.0
    env = {**os.environ, **make_env(port, wait_seconds), "SURGEWATCH_WEB_PORT": str(free_port())}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "surgewatch", "worker", "--loglevel", "warn"],
        env=env,
        capture_output=True,
        text=True,
        timeout=wait_seconds + 30,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert wait_seconds <= elapsed < wait_seconds + 15
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert _message(lines[0]) == f"waiting for the broker at 127.0.0.1:{port} (up to 3 s) ..."
    assert lines[1].startswith(
        f"Error: no Kafka broker answered at kafka://127.0.0.1:{port} within 3 s ("
    )
    assert lines[1].endswith(
        ": start one (`surgewatch broker`), set SURGEWATCH_BROKER, or wait longer with "
        "SURGEWATCH_BROKER_WAIT_SECONDS"
    )
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@contextlib.contextmanager
def _running_worker(
    broker: EmbeddedBroker, env: dict[str, str], log_path: Path
) -> Iterator[WorkerProcess]:
    """A worker on ``broker`` that has counted every post produced to it."""
    with WorkerProcess(env, free_port(), log_path) as worker:
        asyncio.run(_produce_posts(broker.bootstrap, env["SURGEWATCH_POSTS_TOPIC"]))
        wait_for(lambda: _received(worker.metrics_url) == POSTS, 60, what="every post counted")
        yield worker


def _exit_line(log_path: Path) -> str:
    errors = [line for line in _log_lines(log_path) if line.startswith("Error: ")]
    assert len(errors) == 1, "\n".join(_log_lines(log_path)[-30:])
    return errors[0]


def test_a_broker_gone_longer_than_the_wait_stops_the_running_worker(
    make_env: Callable[[int, float], dict[str, str]],
    own_broker: Callable[..., EmbeddedBroker],
    tmp_path: Path,
) -> None:
    wait_seconds = 4.0
    broker = own_broker()
    broker.start()
    env = make_env(broker.port, wait_seconds)
    log_path = tmp_path / "worker.log"
    with _running_worker(broker, env, log_path) as worker:
        assert worker.process is not None
        broker.stop()
        elapsed = _wait_exit(worker.process, wait_seconds + STOP_MARGIN_SECONDS + 10)
        assert worker.process.returncode == 1
        assert wait_seconds <= elapsed < wait_seconds + STOP_MARGIN_SECONDS
    line = _exit_line(log_path)
    assert line.startswith(f"Error: lost the broker at {broker.url}: no answer for ")
    assert line.endswith(
        "stopping: start the broker again and restart the worker, or allow longer outages "
        "with SURGEWATCH_BROKER_WAIT_SECONDS"
    )
    critical = [line for line in _log_lines(log_path) if "[CRITICAL]" in line]
    assert [_message(line) for line in critical] == [line.removeprefix("Error: ")]


def test_a_restarted_broker_is_told_by_its_new_cluster_id(
    make_env: Callable[[int, float], dict[str, str]],
    own_broker: Callable[..., EmbeddedBroker],
    tmp_path: Path,
) -> None:
    broker = own_broker()
    broker.start()
    env = make_env(broker.port, 60)
    log_path = tmp_path / "worker.log"
    with _running_worker(broker, env, log_path) as worker:
        assert worker.process is not None
        before = broker.cluster_id
        broker.stop()
        broker.start()
        after = broker.cluster_id
        assert before != after
        _wait_exit(worker.process, 30)
        assert worker.process.returncode == 1
    line = _exit_line(log_path)
    assert line.startswith(
        f"Error: the broker at {broker.url} lost its data: its cluster id changed from "
        f"'{before}' to '{after}'"
    )
    assert "restart the worker to recreate its topics" in line


def test_a_restarted_broker_with_the_same_cluster_id_is_told_by_what_it_lost(
    make_env: Callable[[int, float], dict[str, str]],
    own_broker: Callable[..., EmbeddedBroker],
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    """Without a cluster id to compare, the lost topics or the fallen end offsets give it away."""
    broker = own_broker(cluster_id=unique_name("fixed"))
    broker.start()
    env = make_env(broker.port, 60)
    log_path = tmp_path / "worker.log"
    with _running_worker(broker, env, log_path) as worker:
        assert worker.process is not None
        broker.stop()
        broker.start()
        _wait_exit(worker.process, 60)
        assert worker.process.returncode == 1
    line = _exit_line(log_path)
    assert line.startswith(f"Error: the broker at {broker.url} lost its data: ")
    assert " gone " in line or "the end offset of " in line
    assert "cluster id" not in line


def test_the_quietest_log_level_starts_a_worker_that_logs_only_its_fault(
    make_env: Callable[[int, float], dict[str, str]],
    own_broker: Callable[..., EmbeddedBroker],
    tmp_path: Path,
) -> None:
    """``--loglevel crit`` (a name Faust's logging set-up does not know by itself) still runs a
    worker, and the one line it logs is the critical one."""
    broker = own_broker()
    broker.start()
    env = make_env(broker.port, 60)
    web_port = free_port()
    log_path = tmp_path / "worker.log"
    process = spawn(
        [sys.executable, "-m", "surgewatch", "worker", "--loglevel", "crit"],
        log_path,
        {**os.environ, **env, "SURGEWATCH_WEB_PORT": str(web_port)},
    )
    try:
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        wait_for(lambda: _received(metrics_url) == 0, 60, what="the worker's /metrics")
        broker.stop()
        broker.start()
        _wait_exit(process, 30)
    finally:
        terminate(process, 20)
    assert process.returncode == 1
    # Log lines carry "[pid] [LEVEL]"; at this level Faust's spinner may precede one.
    logged = [line for line in _log_lines(log_path) if re.search(r"\[\d+\] \[[A-Z]+\]", line)]
    assert len(logged) == 1 and f"[{process.pid}] [CRITICAL]" in logged[0], logged
    assert "lost its data: its cluster id changed" in logged[0]
