"""Broker faults: waiting for the broker at start-up, and stopping the worker when it is lost.

At start-up the worker waits up to ``SURGEWATCH_BROKER_WAIT_SECONDS`` for a broker that is not up
yet, with one log line while it waits and one when it connects. While it runs, a thread of its own
(so a busy event loop cannot delay it) asks the broker for its metadata every second, and stops the
worker with one line that says why when:

- the broker has not answered for ``SURGEWATCH_BROKER_WAIT_SECONDS``;
- the broker answers with another cluster id (the embedded broker gets a fresh one at each start);
- a topic the worker uses is no longer on the broker;
- the end offset of a partition the worker reads stays below one it reported before.

The last three mean the broker lost its data: the embedded broker keeps everything in memory, so a
restart loses every topic, record, committed offset and consumer group. Carrying on would count
against topics that clients recreate empty, with offsets that point past their end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from surgewatch.broker import quiet_client_logs
from surgewatch.config import Settings, SettingsError
from surgewatch.worker.topics import BrokerUnreachable

log = logging.getLogger("surgewatch.worker")

#: How often the running worker asks the broker for its metadata.
WATCH_INTERVAL_SECONDS = 1.0
#: Longest wait for one metadata answer before it counts as no answer.
PROBE_TIMEOUT_SECONDS = 5.0
#: How long an end offset must stay below an earlier one before it counts as lost data. After a
#: leader election the new leader's high watermark can lag the old one's for a moment; lost data
#: stays lost.
END_OFFSET_CONFIRM_SECONDS = 10.0
#: How long a stopping worker may take before the process exits anyway, when the broker answers
#: (it lost its data) and when it does not: Faust's shutdown then waits on commits that cannot
#: complete, so only a moment is left for the agents to stop.
STOP_GRACE_SECONDS = 10.0
UNANSWERED_STOP_GRACE_SECONDS = 3.0

#: Kafka's error code for a topic that does not exist.
UNKNOWN_TOPIC_OR_PARTITION = 3
#: Name of the watch's thread; aiokafka's complaints about its probes are left out of the log.
WATCH_THREAD_NAME = "surgewatch-broker-watch"

#: A partition as ``(topic, partition)``.
Partition = tuple[str, int]


class BrokerLost(BrokerUnreachable):
    """The running worker lost its broker, or the broker lost its data; the message says which."""


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """What one metadata answer says: the cluster's id and the topics on it."""

    cluster_id: str | None
    topics: frozenset[str]


def describe_error(error: BaseException, secret: str | None = None) -> str:
    """An exception as one short line, with ``secret`` (a password) masked if it appears."""
    name, message = type(error).__name__, " ".join(str(error).split())
    if not message:
        text = name
    elif message.startswith(name):  # aiokafka's errors often name themselves already
        text = message
    else:
        text = f"{name}: {message}"
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= 200 else text[:199] + "…"


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """``settings.kafka_security_kwargs()``, checked: :class:`~surgewatch.config.SettingsError` in
    one line when the TLS/SASL settings cannot work, rather than a broker that seems not to answer."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_") and settings.kafka_sasl_mechanism != "GSSAPI":
        missing = [
            f"SURGEWATCH_KAFKA_SASL_{name}"
            for name, value in (
                ("USERNAME", settings.kafka_sasl_username),
                ("PASSWORD", settings.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            raise SettingsError(
                f"invalid setting: SURGEWATCH_KAFKA_SECURITY_PROTOCOL={protocol!r} with "
                f"SASL mechanism {settings.kafka_sasl_mechanism or 'PLAIN'} needs "
                + " and ".join(missing)
            )
    try:
        return settings.kafka_security_kwargs()
    except OSError as exc:  # ssl.SSLError included
        files = {
            "CAFILE": settings.kafka_ssl_cafile,
            "CERTFILE": settings.kafka_ssl_certfile,
            "KEYFILE": settings.kafka_ssl_keyfile,
        }
        given = ", ".join(
            f"SURGEWATCH_KAFKA_SSL_{name}={path!r}" for name, path in files.items() if path
        )
        raise SettingsError(
            f"invalid setting: cannot load the Kafka TLS files ({given or 'none given'}): "
            f"{describe_error(exc, settings.kafka_sasl_password)}"
        ) from None


class BrokerHealth:
    """Judges what the watch sees; pure, so every time is passed in (monotonic seconds).

    Each method returns ``None`` while all is well, else the one-line reason to stop.
    """

    def __init__(
        self,
        broker: str,
        topics: Iterable[str],
        first: BrokerSnapshot,
        wait_seconds: float,
        now_seconds: float,
        confirm_seconds: float = END_OFFSET_CONFIRM_SECONDS,
        secret: str | None = None,
    ) -> None:
        self.broker = broker
        self.secret = secret
        self.topics = frozenset(topics)
        self.cluster_id = first.cluster_id
        self.wait_seconds = wait_seconds
        self.confirm_seconds = confirm_seconds
        self.last_answer_seconds = now_seconds
        self._highest_end: dict[Partition, int] = {}
        self._low_since: dict[Partition, float] = {}

    def answered(self, now_seconds: float, snapshot: BrokerSnapshot) -> str | None:
        """The broker answered: is it still the cluster, with the topics, the worker started on?"""
        self.last_answer_seconds = now_seconds
        if (
            self.cluster_id is not None
            and snapshot.cluster_id is not None
            and snapshot.cluster_id != self.cluster_id
        ):
            return (
                f"the broker at {self.broker} lost its data: its cluster id changed from "
                f"{self.cluster_id!r} to {snapshot.cluster_id!r} (a restart of the embedded "
                "broker, which keeps nothing, or another cluster at that address); stopping: "
                "restart the worker to recreate its topics, and replay what it missed"
            )
        missing = sorted(self.topics - snapshot.topics)
        if missing:
            shown = ", ".join(repr(name) for name in missing[:3])
            if len(missing) > 3:
                shown += f" and {len(missing) - 3} more"
            gone = f"topics {shown} are" if len(missing) > 1 else f"topic {shown} is"
            return (
                f"the broker at {self.broker} lost its data: {gone} gone "
                "(a restart of the embedded broker, which keeps nothing, or a deleted topic); "
                "stopping: restart the worker to recreate its topics, and replay what it missed"
            )
        return None

    def unanswered(self, now_seconds: float, error: BaseException) -> str | None:
        """No answer: fatal once the broker has been silent for the whole wait."""
        silent_seconds = now_seconds - self.last_answer_seconds
        if silent_seconds < self.wait_seconds:
            return None
        return (
            f"lost the broker at {self.broker}: no answer for {silent_seconds:.0f} s "
            f"({describe_error(error, self.secret)}); stopping: start the broker again and restart the worker, "
            "or allow longer outages with SURGEWATCH_BROKER_WAIT_SECONDS"
        )

    def end_offsets(self, now_seconds: float, ends: Mapping[Partition, int]) -> str | None:
        """End offsets the worker's fetches reported: one that stays below an earlier one means
        records are gone."""
        for partition, end in ends.items():
            highest = self._highest_end.get(partition)
            if highest is None or end >= highest:
                self._highest_end[partition] = end
                self._low_since.pop(partition, None)
                continue
            low_since = self._low_since.setdefault(partition, now_seconds)
            if now_seconds - low_since >= self.confirm_seconds:
                topic, number = partition
                return (
                    f"the broker at {self.broker} lost its data: the end offset of {topic}[{number}] "
                    f"fell from {highest} to {end} (a restart of the embedded broker, which keeps "
                    "nothing, or a recreated topic); stopping: restart the worker, and replay "
                    "what it missed"
                )
        return None


class MetadataProbe:
    """One Kafka client, kept between probes and rebuilt after a failure, that fetches metadata.

    It asks only about ``topics``, and never has a topic created by asking.
    """

    def __init__(self, settings: Settings, topics: Iterable[str] = ()) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.security = security_kwargs(settings)
        self._client: Any = None

    async def snapshot(self, timeout_seconds: float) -> BrokerSnapshot:
        """The cluster id and which of ``topics`` exist."""
        try:
            async with asyncio.timeout(timeout_seconds):
                return await self._ask()
        except BaseException:
            await self.close()
            raise

    async def _ask(self) -> BrokerSnapshot:
        from aiokafka.client import AIOKafkaClient
        from aiokafka.protocol.metadata import MetadataRequest

        if self._client is None:
            client = AIOKafkaClient(
                bootstrap_servers=self.settings.bootstrap_servers,
                request_timeout_ms=int(PROBE_TIMEOUT_SECONDS * 1000),
                **self.security,
            )
            self._client = client
            await client.bootstrap()
        node_id = self._client.get_random_node()
        if node_id is None:
            raise ConnectionError("the broker listed no brokers in its metadata")
        request = MetadataRequest(self.topics, allow_auto_topic_creation=False)
        response = await self._client.send(node_id, request)
        cluster_id = getattr(response, "cluster_id", None)
        # Each entry starts (error_code, topic, ...); a topic that does not exist has an error.
        present = frozenset(
            entry[1] for entry in response.topics if entry[0] != UNKNOWN_TOPIC_OR_PARTITION
        )
        return BrokerSnapshot(cluster_id, present)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception as exc:  # closing a broken client must not hide why it broke
                log.debug("closing the metadata client failed: %r", exc)


async def wait_for_broker(
    settings: Settings, clock: Callable[[], float] = time.monotonic
) -> BrokerSnapshot:
    """Wait up to ``settings.broker_wait_seconds`` for the broker to answer a metadata request.

    Logs one line when it starts waiting and one when it connects; raises
    :class:`~surgewatch.worker.topics.BrokerUnreachable` with one line at the deadline.
    """
    wait_seconds = settings.broker_wait_seconds
    deadline = clock() + wait_seconds
    probe = MetadataProbe(settings)
    waited = False
    # Refused connections are the expected answer while the broker starts; nothing else runs yet.
    with quiet_client_logs():
        try:
            while True:
                remaining = deadline - clock()
                try:
                    snapshot = await probe.snapshot(max(0.5, min(PROBE_TIMEOUT_SECONDS, remaining)))
                except Exception as exc:
                    error: Exception = exc
                else:
                    log.log(
                        logging.WARNING if waited else logging.INFO,
                        "connected to the broker at %s (cluster id %s)",
                        settings.bootstrap_servers,
                        snapshot.cluster_id,
                    )
                    return snapshot
                if clock() >= deadline:
                    raise BrokerUnreachable(_no_answer(settings, error))
                if not waited:
                    log.warning(
                        "waiting for the broker at %s (up to %g s) ...",
                        settings.bootstrap_servers,
                        wait_seconds,
                    )
                    waited = True
                await asyncio.sleep(min(WATCH_INTERVAL_SECONDS, max(0.0, deadline - clock())))
        finally:
            await probe.close()


def _no_answer(settings: Settings, error: BaseException) -> str:
    """Why the broker did not answer in time, and what to do, in one line."""
    detail = describe_error(error, settings.kafka_sasl_password)
    listening = [
        address
        for address in settings.bootstrap_servers.split(",")
        if _accepts_connections(address)
    ]
    if listening and settings.kafka_security_protocol != "PLAINTEXT":
        return (
            f"no Kafka broker answered at {settings.broker} within "
            f"{settings.broker_wait_seconds:g} s ({detail}), though {listening[0]} accepts "
            "connections: check that the broker expects SURGEWATCH_KAFKA_SECURITY_PROTOCOL="
            f"{settings.kafka_security_protocol} and these SASL/TLS settings"
        )
    if listening:
        return (
            f"no Kafka broker answered at {settings.broker} within "
            f"{settings.broker_wait_seconds:g} s ({detail}), though {listening[0]} accepts "
            "connections: is SURGEWATCH_BROKER a Kafka broker, and does it want TLS or SASL "
            "(SURGEWATCH_KAFKA_SECURITY_PROTOCOL)?"
        )
    return (
        f"no Kafka broker answered at {settings.broker} within {settings.broker_wait_seconds:g} s "
        f"({detail}): start one (`surgewatch broker`), set SURGEWATCH_BROKER, or wait longer "
        "with SURGEWATCH_BROKER_WAIT_SECONDS"
    )


def _accepts_connections(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def stop_this_process(reason: str, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """Log ``reason``, stop the worker as SIGTERM does, and exit with code 1 anyway if that takes
    longer than ``grace_seconds``."""
    log.critical("%s", reason)

    def exit_now() -> None:
        sys.stderr.write(f"Error: {reason}\n")
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(grace_seconds, exit_now)
    timer.daemon = True
    timer.start()
    os.kill(os.getpid(), signal.SIGTERM)


#: The aiokafka loggers a probe's client writes to.
_CLIENT_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster")


def _not_from_this_thread(record: logging.LogRecord) -> bool:
    return record.threadName != WATCH_THREAD_NAME


class BrokerWatch(threading.Thread):
    """Watches the broker from its own thread and event loop while the worker runs."""

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        first: BrokerSnapshot,
        end_offsets: Callable[[], Mapping[Partition, int]],
        on_failure: Callable[[str, float], None] = stop_this_process,
        clock: Callable[[], float] = time.monotonic,
        interval_seconds: float = WATCH_INTERVAL_SECONDS,
    ) -> None:
        super().__init__(name=WATCH_THREAD_NAME, daemon=True)
        self.settings = settings
        self.topics = list(topics)
        self.health = BrokerHealth(
            settings.broker,
            self.topics,
            first,
            settings.broker_wait_seconds,
            clock(),
            secret=settings.kafka_sasl_password,
        )
        self.end_offsets = end_offsets
        self.on_failure = on_failure
        self.clock = clock
        self.interval_seconds = interval_seconds
        #: Why the worker was stopped, once it was.
        self.failure: str | None = None
        self._stopping = threading.Event()

    def run(self) -> None:
        # The log level of aiokafka is shared with Faust's clients, so this thread's records are
        # filtered out instead: a probe that fails is reported by the verdict, not per attempt.
        loggers = [logging.getLogger(name) for name in _CLIENT_LOGGERS]
        for logger in loggers:
            logger.addFilter(_not_from_this_thread)
        try:
            asyncio.run(self._watch())
        finally:
            for logger in loggers:
                logger.removeFilter(_not_from_this_thread)

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """Ask the thread to end and give it a moment to close its client."""
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_seconds)

    async def _watch(self) -> None:
        probe = MetadataProbe(self.settings, self.topics)
        try:
            while not self._stopping.is_set():
                await asyncio.sleep(self.interval_seconds)
                if self._stopping.is_set():
                    return
                verdict = await self._check(probe)
                if verdict is not None:
                    self.failure, grace_seconds = verdict
                    self.on_failure(self.failure, grace_seconds)
                    return
        finally:
            await probe.close()

    async def _check(self, probe: MetadataProbe) -> tuple[str, float] | None:
        """``None`` while all is well, else why to stop and how long the stop may take."""
        health = self.health
        timeout_seconds = min(PROBE_TIMEOUT_SECONDS, max(0.5, self.settings.broker_wait_seconds))
        try:
            snapshot = await probe.snapshot(timeout_seconds)
        except Exception as exc:
            reason = health.unanswered(self.clock(), exc)
            return None if reason is None else (reason, UNANSWERED_STOP_GRACE_SECONDS)
        reason = health.answered(self.clock(), snapshot)
        if reason is None:
            try:
                ends = self.end_offsets()
            except Exception as exc:  # the consumer is starting or stopping: nothing to compare
                log.debug("no end offsets from the consumer: %r", exc)
                return None
            reason = health.end_offsets(self.clock(), ends)
        return None if reason is None else (reason, STOP_GRACE_SECONDS)
