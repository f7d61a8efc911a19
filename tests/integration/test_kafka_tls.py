"""Every Kafka client of surgewatch speaks TLS with the configured CA and client certificate.

The embedded broker speaks plaintext only, so a proxy terminates TLS in front of it and requires a
client certificate signed by the test CA; the broker advertises the proxy's port, so no client can
reach it in plaintext. The worker (start-up wait, topic set-up, Faust's consumer and producer, the
broker watch), ``replay`` and ``archive`` then have to pass the settings on to work at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError

from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.processes import WorkerProcess
from surgewatch.scrape import sample, sample_sum, scrape
from surgewatch.testing import wait_for
from tests.tls_files import CLIENT_NAME, TlsFiles, make_tls_files, openssl_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not openssl_available(), reason="the openssl command is not installed"),
]

T0 = 1_737_000_000
POSTS = 30
SIGNUPS = 12


class TlsProxy:
    """Accepts TLS with a client certificate on ``port`` and forwards the bytes to ``upstream``."""

    def __init__(self, tls: TlsFiles, port: int, upstream_port: int) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tls.server_cert, tls.server_key)
        self.context.load_verify_locations(tls.ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        #: Accepted connections by the common name of their client certificate.
        self.clients: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        serving = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self._server = serving.result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, ssl=self.context, ssl_handshake_timeout=5
        )

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        certificate = writer.get_extra_info("peercert") or {}
        names = [v for rdn in certificate.get("subject", ()) for k, v in rdn if k == "commonName"]
        self.clients[names[0] if names else "?"] += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, ssl.SSLError):
            pass  # the other side went away: close this side too
        finally:
            with contextlib.suppress(Exception):
                sink.close()


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    folder = tmp_path / "tls"
    folder.mkdir()
    return make_tls_files(folder)


@pytest.fixture
def tls_broker(tls: TlsFiles, tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, TlsProxy]]:
    """The embedded broker behind the TLS proxy; clients only ever learn the proxy's address."""
    proxy_port = free_port()
    broker = EmbeddedBroker(
        "127.0.0.1", free_port(), tmp_path / "tansu.log", advertised_port=proxy_port
    )
    with broker, TlsProxy(tls, proxy_port, broker.port) as proxy:
        yield broker, proxy


async def _plaintext_bootstrap(bootstrap: str) -> None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.bootstrap(), 10)
    finally:
        await client.close()


def _event_file(path: Path) -> list[str]:
    """Posts and signups a second apart; their event ids."""
    ids = []
    with path.open("wb") as out:
        for i in range(POSTS + SIGNUPS):
            stream = "posts" if i < POSTS else "signups"
            value = {"event_id": f"{stream}-{i}", "user_id": f"u{i}", "ts": T0 + i}
            if stream == "posts":
                value["hashtags"] = ["rednote"]
            else:
                value["country"] = "US"
            out.write(orjson.dumps({"stream": stream, "key": f"u{i}", "value": value}) + b"\n")
            ids.append(str(value["event_id"]))
    return ids


def test_worker_replay_and_archive_speak_tls_with_the_client_certificate(
    tls: TlsFiles,
    tls_broker: tuple[EmbeddedBroker, TlsProxy],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    _, proxy = tls_broker
    bootstrap = f"127.0.0.1:{proxy.port}"
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_plaintext_bootstrap(bootstrap))
    assert sum(proxy.clients.values()) == 0

    env = {
        "SURGEWATCH_BROKER": f"kafka://{bootstrap}",
        "SURGEWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
        "SURGEWATCH_KAFKA_SSL_CAFILE": str(tls.ca),
        "SURGEWATCH_KAFKA_SSL_CERTFILE": str(tls.client_cert),
        "SURGEWATCH_KAFKA_SSL_KEYFILE": str(tls.client_key),
        "SURGEWATCH_APP_ID": unique_name("sw-tls"),
        "SURGEWATCH_POSTS_TOPIC": unique_name("posts"),
        "SURGEWATCH_SIGNUPS_TOPIC": unique_name("signups"),
        "SURGEWATCH_DLQ_TOPIC": unique_name("dlq"),
        "SURGEWATCH_WINDOW_COUNTS_TOPIC": unique_name("window-counts"),
        "SURGEWATCH_SURGES_TOPIC": unique_name("surges"),
    }
    events = tmp_path / "events.jsonl"
    ids = _event_file(events)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "surgewatch", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    with WorkerProcess(env, free_port(), tmp_path / "worker.log") as worker:
        worker_connections = sum(proxy.clients.values())
        assert worker_connections > 0
        replayed = run("replay", str(events), "--max-speed")
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {POSTS + SIGNUPS:,} events" in replayed.stdout

        def counted() -> bool:
            samples = scrape(worker.metrics_url)
            return (
                sample(samples, "surgewatch_posts_total") == POSTS
                and sample_sum(samples, "surgewatch_signups_total") == SIGNUPS
            )

        wait_for(counted, 60, what="every replayed event counted by the worker")

    out = tmp_path / "archived.jsonl"
    archived = run("archive", "--since", "2025-01-16T00:00Z", "--until", "2025-01-17T00:00Z",
                   "--out", str(out))  # fmt: skip
    assert archived.returncode == 0, archived.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(r["value"]["event_id"] for r in records) == sorted(ids)
    assert set(proxy.clients) == {CLIENT_NAME}
