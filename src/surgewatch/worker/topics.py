"""Topic set-up: creates the topics a worker needs and reads how many partitions each has."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from surgewatch.broker import quiet_client_logs
from surgewatch.config import Settings


class BrokerUnreachable(RuntimeError):
    """No broker answered at the configured address."""


def worker_topics(settings: Settings) -> list[str]:
    """Every topic a worker reads or writes."""
    return [
        settings.posts_topic,
        settings.signups_topic,
        settings.partials_topic,
        settings.dlq_topic,
        settings.window_counts_topic,
        settings.surges_topic,
        settings.summaries_topic,
    ]


def partitions_of(settings: Settings, name: str) -> int:
    """How many partitions a new topic gets: one for the summaries (one reader merges them all)."""
    return 1 if name == settings.summaries_topic else settings.partitions


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> dict[str, int]:
    """Create missing topics with ``settings.partitions`` partitions; return each one's count."""
    wanted = list(names) if names is not None else worker_topics(settings)
    security = settings.kafka_security_kwargs()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000, **security
    )
    try:
        with quiet_client_logs():
            await admin.start()
    except KafkaConnectionError as exc:
        raise BrokerUnreachable(
            f"no Kafka broker at {settings.broker}: start one (`surgewatch broker`) "
            "or set SURGEWATCH_BROKER"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions_of(settings, name), 1) for name in missing]
                )
    finally:
        await admin.close()
    client = AIOKafkaClient(bootstrap_servers=settings.bootstrap_servers, **security)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        return {
            name: len(cluster.partitions_for_topic(name) or ()) or partitions_of(settings, name)
            for name in wanted
        }
    finally:
        await client.close()
