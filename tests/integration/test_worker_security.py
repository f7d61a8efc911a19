"""A real worker binds its web server to loopback unless told otherwise, and no credential reaches
its log or any command's output."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.processes import WorkerProcess, spawn, terminate
from surgewatch.scrape import sample_sum, scrape
from surgewatch.testing import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "sasl-canary-5d0c2e7a91"
GRAFANA_TOKEN = "grafana-canary-token-8e41f0c9"
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 prints the address as four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """Every TCP (address, port) the process ``pid`` listens on, from ``/proc/net/tcp{,6}``."""
    inodes = _socket_inodes(pid)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:  # no IPv6 on this machine
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                hex_address, hex_port = local.split(":")
                found.add((_address(hex_address), int(hex_port, 16)))
    return found


@pytest.fixture
def no_web_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine running the tests must not choose the bind address for the default case."""
    monkeypatch.delenv("SURGEWATCH_WEB_HOST", raising=False)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize(("web_host", "bound"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_the_web_server_binds_loopback_unless_configured(
    isolated_env: Callable[[str], dict[str, str]],
    tmp_path: Path,
    no_web_host: None,
    web_host: str | None,
    bound: str,
) -> None:
    env = isolated_env("sw-bind")
    if web_host is not None:
        env["SURGEWATCH_WEB_HOST"] = web_host
    with WorkerProcess(env, free_port(), tmp_path / "worker.log") as worker:
        assert worker.process is not None
        sample_sum(scrape(worker.metrics_url), "surgewatch_events_received_total")
        assert listening_sockets(worker.process.pid) == {(bound, worker.web_port)}


async def _produce(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(5):
            body = {"event_id": f"e{i}", "user_id": "u", "ts": 1_737_000_000 + i, "text": "#x"}
            await producer.send_and_wait(topic, orjson.dumps(body))
        await producer.send_and_wait(topic, b"{not json")
    finally:
        await producer.stop()


def test_no_credential_reaches_the_worker_log(
    broker: EmbeddedBroker, isolated_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    """At debug level, through start-up, counting, a dead letter and shutdown."""
    web_port = free_port()
    env = {
        **os.environ,
        **isolated_env("sw-creds"),
        "SURGEWATCH_WEB_PORT": str(web_port),
        "SURGEWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SURGEWATCH_KAFKA_SASL_USERNAME": "alice",
        "SURGEWATCH_KAFKA_SASL_PASSWORD": PASSWORD,
        "GRAFANA_TOKEN": GRAFANA_TOKEN,
    }
    log_path = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "surgewatch", "worker", "--loglevel", "debug"]
    process = spawn(argv, log_path, env)
    metrics_url = f"http://127.0.0.1:{web_port}/metrics"
    try:

        def received() -> float:
            return sample_sum(scrape(metrics_url), "surgewatch_events_received_total")

        wait_for(lambda: received() == 0, 60, what="the worker's /metrics")
        asyncio.run(_produce(broker.bootstrap, env["SURGEWATCH_POSTS_TOPIC"]))
        wait_for(lambda: received() == 6, 60, what="six events received")
    finally:
        assert terminate(process, 20) == 0
    text = log_path.read_text(errors="replace")
    assert f"connected to the broker at {broker.bootstrap}" in text
    assert "[DEBUG]" in text
    assert PASSWORD not in text
    assert GRAFANA_TOKEN not in text


def _run(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "surgewatch", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_failing_commands_never_show_the_password(
    broker: EmbeddedBroker, isolated_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    """The embedded broker speaks no SASL, so every Kafka command fails: in one line, no secret."""
    env = {
        **isolated_env("sw-sasl"),
        "SURGEWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SURGEWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SURGEWATCH_KAFKA_SASL_USERNAME": "alice",
        "SURGEWATCH_KAFKA_SASL_PASSWORD": PASSWORD,
        "SURGEWATCH_BROKER_WAIT_SECONDS": "2",
        "GRAFANA_TOKEN": GRAFANA_TOKEN,
        "GRAFANA_URL": f"http://127.0.0.1:{free_port()}",
    }
    event = (
        '{"stream": "posts", "key": null, "value": {"event_id": "a", "user_id": "u", "ts": 1}}\n'
    )
    archive = ["--since", "2025-01-01T00:00Z", "--until", "2025-01-02T00:00Z"]
    results = {
        "worker": _run("worker", "--loglevel", "debug", env=env),
        "replay": _run("replay", "-", env=env, stdin=event),
        "archive": _run("archive", *archive, "--out", str(tmp_path / "out.jsonl"), env=env),
        "dashboards push": _run("dashboards", "push", env=env),
    }
    for command, result in results.items():
        assert result.returncode != 0, command
        output = result.stdout + result.stderr
        assert output.strip().splitlines()[-1].startswith("Error: "), (command, output)
        assert PASSWORD not in output, command
        assert GRAFANA_TOKEN not in output, command
        assert "Traceback" not in output, command
    assert (
        f"though {broker.bootstrap} accepts connections: check that the broker expects "
        "SURGEWATCH_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT and these SASL/TLS settings"
    ) in results["worker"].stderr
