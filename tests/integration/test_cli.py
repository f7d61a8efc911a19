"""The command line: help everywhere, one-line errors, and the broker command's lifecycle."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from surgewatch.broker import free_port, port_in_use, wait_until_ready

COMMANDS = [
    "broker", "worker", "simulate", "replay", "archive", "backfill", "report", "top", "demo",
    "dashboards",
]  # fmt: skip


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "surgewatch", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str) -> None:
    result = _run(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: python -m surgewatch {command}")


def test_a_bad_setting_fails_in_one_readable_line() -> None:
    result = _run("worker", env={"SURGEWATCH_WINDOW_SECONDS": "abc"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SURGEWATCH_WINDOW_SECONDS='abc'" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_unreachable_broker_fails_in_one_line() -> None:
    closed = f"kafka://127.0.0.1:{free_port()}"
    result = _run("replay", "-", env={"SURGEWATCH_BROKER": closed})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no Kafka broker at {closed}: start one (`surgewatch broker`) "
        "or set SURGEWATCH_BROKER"
    ]


def test_a_worker_waits_for_an_unreachable_broker_then_fails_in_one_line() -> None:
    port = free_port()
    closed = f"kafka://127.0.0.1:{port}"
    env = {"SURGEWATCH_BROKER": closed, "SURGEWATCH_BROKER_WAIT_SECONDS": "1"}
    result = _run("worker", env=env)
    assert result.returncode == 1
    waiting, error = result.stderr.strip().splitlines()
    assert waiting.endswith(f"waiting for the broker at 127.0.0.1:{port} (up to 1 s) ...")
    assert error.startswith(f"Error: no Kafka broker answered at {closed} within 1 s (")
    assert error.endswith(
        ": start one (`surgewatch broker`), set SURGEWATCH_BROKER, or wait longer with "
        "SURGEWATCH_BROKER_WAIT_SECONDS"
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_broker_command_serves_kafka_and_stops_on_a_signal(signum: int) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "surgewatch", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        asyncio.run(wait_until_ready(f"127.0.0.1:{port}", 30))
        process.send_signal(signum)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert f"broker ready on kafka://127.0.0.1:{port}" in output
    assert not port_in_use("127.0.0.1", port)
