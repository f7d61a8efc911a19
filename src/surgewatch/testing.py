"""Test helpers that ship with the package: worker processes, topic readers, metric scrapes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from surgewatch.broker import die_with_parent


def scrape(
    url: str, timeout_seconds: float = 5.0
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """All samples at a ``/metrics`` URL, keyed by (sample name, label set)."""
    with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0.0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def sample_sum(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def wait_for(
    condition: Callable[[], Any],
    timeout_seconds: float,
    interval_seconds: float = 0.2,
    what: str = "",
) -> Any:
    """Poll ``condition`` until it returns something truthy; raise ``TimeoutError`` at the deadline."""
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as exc:  # the thing polled is not up yet
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval_seconds)
    raise TimeoutError(f"timed out after {timeout_seconds:.0f} s waiting for {what} ({last_error})")


class WorkerProcess:
    """``surgewatch worker`` in a subprocess with the given ``SURGEWATCH_*`` environment."""

    def __init__(self, env: Mapping[str, str], web_port: int, log_path: Path) -> None:
        self.env = {**os.environ, **env, "SURGEWATCH_WEB_PORT": str(web_port)}
        self.web_port = web_port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/metrics"

    def start(self, ready_timeout_seconds: float = 60.0) -> None:
        """Start the worker and wait until ``/metrics`` answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "surgewatch", "worker", "--loglevel", "warn"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        log.close()

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                return True  # exited: reported below
            scrape(self.metrics_url, timeout_seconds=1.0)
            return True

        try:
            wait_for(ready, ready_timeout_seconds, what="the worker's /metrics")
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_seconds: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if needed; returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    timeout_seconds: float,
) -> list[Any]:
    """Read ``topic`` from the beginning (no consumer group) until ``done(records)`` or the deadline."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_seconds
        while not done(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {len(records)} records, condition not met")
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()


def read_topic_sync(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout_seconds: float
) -> list[Any]:
    """:func:`read_topic` for synchronous tests."""
    return asyncio.run(read_topic(bootstrap, topic, done, timeout_seconds))
